"""The one atomic-write helper: modes, fsync, exclusivity and cleanup."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from modelreg._fs import AtomicFile, atomic_write


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "index.json"
    target.write_bytes(b"old")
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert _leftovers(tmp_path) == []


def test_exact_mode_ignores_the_umask_and_replaces_a_looser_file(tmp_path: Path) -> None:
    target = tmp_path / "key"
    target.write_bytes(b"old")
    target.chmod(0o644)
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "cert", b"c", mode=0o644)
    finally:
        os.umask(old)
    atomic_write(target, b"secret", mode=0o600)
    assert _mode(tmp_path / "cert") == 0o644
    assert _mode(target) == 0o600


def test_no_mode_is_what_open_would_give(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "marker", b"{}")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "marker") == 0o640


def test_a_secret_is_never_readable_by_others_while_written(tmp_path: Path) -> None:
    with AtomicFile(tmp_path / "key", mode=0o600) as f:
        assert _mode(f.tmp_path) == 0o600
        f.write(b"secret")


def test_failure_inside_the_block_keeps_the_old_file_and_removes_the_temporary(
    tmp_path: Path,
) -> None:
    target = tmp_path / "config.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), AtomicFile(target) as f:
        f.write(b"half")
        raise RuntimeError("stopped")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_failed_rename_removes_the_temporary(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "child").write_bytes(b"")
    with pytest.raises(OSError):
        atomic_write(tmp_path / "taken", b"data")
    assert _leftovers(tmp_path) == []


def test_without_overwrite_an_existing_file_is_refused_and_kept(tmp_path: Path) -> None:
    target = tmp_path / "key"
    target.write_bytes(b"first")
    with pytest.raises(FileExistsError):
        atomic_write(target, b"second", overwrite=False)
    assert target.read_bytes() == b"first"
    assert _leftovers(tmp_path) == []
    atomic_write(tmp_path / "new", b"x", overwrite=False)
    assert (tmp_path / "new").read_bytes() == b"x"
    assert _leftovers(tmp_path) == []


def test_temporaries_go_to_tmp_dir_and_are_named_after_the_file(tmp_path: Path) -> None:
    ingest = tmp_path / "ingest"
    ingest.mkdir()
    f = AtomicFile(tmp_path / "blob", tmp_dir=ingest)
    assert f.tmp_path.parent == ingest
    assert f.tmp_path.name.startswith(".blob.")
    f.write(b"data")
    f.commit()
    assert (tmp_path / "blob").read_bytes() == b"data"
    assert list(ingest.iterdir()) == []


def test_discard_drops_the_data_and_commit_after_it_is_refused(tmp_path: Path) -> None:
    f = AtomicFile(tmp_path / "blob")
    f.write(b"data")
    f.discard()
    f.discard()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="already"):
        f.commit()


def test_a_symlink_at_the_destination_is_replaced_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"untouched")
    link = tmp_path / "config.json"
    link.symlink_to(outside)
    atomic_write(link, b"new", mode=0o600)
    assert outside.read_bytes() == b"untouched"
    assert not link.is_symlink() and link.read_bytes() == b"new"


@pytest.mark.parametrize("fsync", [True, False])
def test_fsync_and_sync_dir_are_as_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool
) -> None:
    synced: list[bool] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write(tmp_path / "a", b"x", fsync=fsync, sync_dir=True)
    assert synced == ([False, True] if fsync else [True])
