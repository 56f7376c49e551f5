"""Remembered copies (``modelreg.content.copies``), cache modes of ``unpack`` and the
overlapping block writer. The main paths run against a real registry in
tests/integration/test_pull_cache_modes.py."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import BinaryIO

import pytest

from modelreg.content import LayoutStore, MemoryTarget
from modelreg.content.base import CHUNK, VerifyingReader
from modelreg.content.copies import Copies, Copy
from modelreg.errors import IntegrityError, InvalidInputError
from modelreg.model.unpack import _blockio as blockio
from modelreg.model.unpack import parse_cache_mode, unpack
from modelreg.oci import Descriptor, Manifest
from tests.unit.model.test_unpack import source_with

# ---------------------------------------------------------------- the database


def test_record_and_find_a_range(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"header" + b"PART" * 10 + b"tail")
    part = Descriptor.for_bytes("application/octet-stream", b"PART" * 10)
    with Copies(tmp_path / "copies.sqlite") as copies:
        copies.record([Copy.of_file(str(part.digest), f, 6, 40)])
        found = list(copies.usable(str(part.digest), 40))
        assert [c.path for c, _ in found] == [str(f.resolve())]
        with VerifyingReader(found[0][1], part) as reader:
            assert reader.read() == b"PART" * 10  # the range, then EOF
            assert reader.verified
        assert copies.candidates(str(part.digest), 41) == []  # another length: another blob


def test_two_handles_share_the_database(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * 100)
    db = tmp_path / "copies.sqlite"
    with Copies(db) as a, Copies(db) as b:
        a.record([Copy.of_file("sha256:" + "a" * 64, f, 0, 100)])
        assert [c.path for c in b.candidates("sha256:" + "a" * 64, 100)] == [str(f.resolve())]
        b.forget(b.candidates("sha256:" + "a" * 64, 100)[0])
        assert a.candidates("sha256:" + "a" * 64, 100) == []


@pytest.mark.parametrize("change", ["size", "mtime", "replaced", "deleted", "fifo"])
def test_a_changed_or_missing_file_is_forgotten(tmp_path, change):
    f = tmp_path / "w.bin"
    f.write_bytes(b"y" * 64)
    digest = "sha256:" + "b" * 64
    with Copies(tmp_path / "copies.sqlite") as copies:
        copies.record([Copy.of_file(digest, f, 0, 64), Copy.of_file(digest + "x", f, 0, 8)])
        st = f.stat()
        if change == "size":
            with open(f, "ab") as a:
                a.write(b"z")
            os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
        elif change == "mtime":
            os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
        elif change == "replaced":  # the old inode kept alive, so the new file gets another
            os.link(f, tmp_path / "old.bin")
            f.unlink()
            f.write_bytes(b"y" * 64)
            os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
        elif change == "deleted":
            f.unlink()
        else:
            f.unlink()
            os.mkfifo(f)  # opening it for reading must not wait for a writer
        assert list(copies.usable(digest, 64)) == []
        # every entry of that file is gone, not only the one asked for
        assert copies.candidates(digest, 64) == []
        assert copies.candidates(digest + "x", 8) == []


def test_recording_a_file_again_drops_its_stale_entries(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"1" * 10)
    with Copies(tmp_path / "copies.sqlite") as copies:
        copies.record([Copy.of_file("sha256:" + "1" * 64, f, 0, 10)])
        os.link(f, tmp_path / "old.bin")
        f.unlink()
        f.write_bytes(b"2" * 10)  # pulled again in the same place: another inode
        copies.record([Copy.of_file("sha256:" + "2" * 64, f, 0, 10)])
        assert copies.candidates("sha256:" + "1" * 64, 10) == []
        assert len(copies.candidates("sha256:" + "2" * 64, 10)) == 1


def test_an_unusable_database_only_disables_the_memory(tmp_path):
    (tmp_path / "dir.sqlite").mkdir()
    f = tmp_path / "w.bin"
    f.write_bytes(b"1")
    with Copies(tmp_path / "dir.sqlite") as copies:
        copies.record([Copy.of_file("sha256:" + "1" * 64, f, 0, 1)])
        assert copies.candidates("sha256:" + "1" * 64, 1) == []


def test_parse_cache_mode():
    assert parse_cache_mode(" Reference ") == "reference"
    with pytest.raises(InvalidInputError, match="'twice' is not one of auto, copy, reference"):
        parse_cache_mode("twice")


# ------------------------------------------------------------ unpack with modes


def files_and_cache(tmp_path: Path) -> tuple[MemoryTarget, Manifest, LayoutStore, dict]:
    files = {"big.bin": os.urandom(2 * CHUNK + 17), "small.json": b'{"a": 1}'}
    src, m = source_with(files)
    return src, m, LayoutStore(tmp_path / "cache", fsync=False), files


def test_reference_then_reuse_counts_from_cache(tmp_path):
    src, m, cache, files = files_and_cache(tmp_path)
    with Copies(tmp_path / "copies.sqlite") as copies:
        first = unpack(src, m, tmp_path / "a", cache=cache, cache_mode="reference", copies=copies)
        assert first.bytes_fetched == sum(map(len, files.values()))
        assert not any(cache.has_blob(d.digest) for d in m.layers)
        del src._blobs[m.layers[0].digest]  # the source could not serve it any more
        second = unpack(src, m, tmp_path / "b", cache=cache, cache_mode="reference", copies=copies)
    assert second.bytes_fetched == 0 and second.bytes_from_cache == first.bytes_fetched
    assert (tmp_path / "b" / "big.bin").read_bytes() == files["big.bin"]


def _spoil_keeping_mtime(path: Path, offset: int) -> None:
    """Zeroes the byte at ``offset`` and puts the times back: a change the remembered
    file identity cannot see, only verification can."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\0")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_copy_that_fails_verification_is_refetched_and_nothing_half_written(tmp_path):
    src, m, cache, files = files_and_cache(tmp_path)
    with Copies(tmp_path / "copies.sqlite") as copies:
        unpack(src, m, tmp_path / "a", cache=cache, cache_mode="reference", copies=copies)
        # the second block: the first was already written when it fails
        _spoil_keeping_mtime(tmp_path / "a" / "big.bin", CHUNK + 5)
        events = []
        again = unpack(
            src,
            m,
            tmp_path / "b",
            cache=cache,
            cache_mode="copy",  # the copy is teed into the cache: nothing of it may stay
            copies=copies,
            progress=events.append,
        )
        assert copies.candidates(str(m.layers[0].digest), m.layers[0].size) == []
    assert again.bytes_fetched == len(files["big.bin"])
    assert (tmp_path / "b" / "big.bin").read_bytes() == files["big.bin"]
    assert cache.has_blob(m.layers[0].digest)
    assert cache.blob_path(m.layers[0].digest).read_bytes() == files["big.bin"]
    assert os.listdir(cache.root / "ingest") == []
    assert any(e.kind == "message" and "changed" in e.name for e in events)


def test_no_source_and_a_bad_copy_fails_without_output(tmp_path):
    src, m, cache, _ = files_and_cache(tmp_path)
    with Copies(tmp_path / "copies.sqlite") as copies:
        unpack(src, m, tmp_path / "a", cache=cache, cache_mode="reference", copies=copies)
        _spoil_keeping_mtime(tmp_path / "a" / "big.bin", 0)
        src._blobs[m.layers[0].digest] = b"x" * m.layers[0].size  # and the source is bad too
        with pytest.raises(IntegrityError):
            unpack(src, m, tmp_path / "b", cache=cache, cache_mode="reference", copies=copies)
    assert not (tmp_path / "b").exists() or os.listdir(tmp_path / "b") == []


def fake_clone(calls: list[str]):
    def clone(src: Path, dst: BinaryIO) -> bool:
        calls.append(str(src))
        with open(src, "rb") as s:
            shutil.copyfileobj(s, dst)
        dst.flush()
        return True

    return clone


def test_auto_mode_reflinks_into_the_cache_when_the_filesystem_can(tmp_path, monkeypatch):
    """auto with a filesystem that clones: the cache gets its own (cloned) copy and nothing
    is remembered. The test machine's filesystem (ext4) cannot clone, so the clone is a
    monkeypatched function that succeeds by copying, unless a real reflink works here."""
    src, m, cache, files = files_and_cache(tmp_path)
    (tmp_path / "probe").mkdir()
    calls: list[str] = []
    if not blockio.reflinks(tmp_path / "probe", cache):
        monkeypatch.setattr(blockio, "try_clone", fake_clone(calls))
    with Copies(tmp_path / "copies.sqlite") as copies:
        result = unpack(src, m, tmp_path / "out", cache=cache, cache_mode="auto", copies=copies)
        assert all(copies.candidates(str(d.digest), d.size) == [] for d in m.layers)
    assert result.bytes_fetched == sum(map(len, files.values()))
    for d in m.layers:
        assert cache.has_blob(d.digest)
    assert cache.blob_path(m.layers[0].digest).read_bytes() == files["big.bin"]
    assert (tmp_path / "out" / "big.bin").read_bytes() == files["big.bin"]
    if calls:  # the fake: the probe and one clone per blob, each from the staged file
        assert len(calls) == 1 + len(m.layers)
        assert all("/.modelreg-pull-" in c for c in calls)


def test_auto_mode_without_reflinks_remembers(tmp_path, monkeypatch):
    src, m, cache, _ = files_and_cache(tmp_path)
    monkeypatch.setattr(blockio, "try_clone", lambda src, dst: False)
    with Copies(tmp_path / "copies.sqlite") as copies:
        unpack(src, m, tmp_path / "out", cache=cache, cache_mode="auto", copies=copies)
        big = m.layers[0]
        assert [c.path for c in copies.candidates(str(big.digest), big.size)] == [
            str((tmp_path / "out" / "big.bin").resolve())
        ]
    assert not any(cache.has_blob(d.digest) for d in m.layers)


def test_copy_mode_with_reflinks_writes_once_then_clones(tmp_path, monkeypatch):
    src, m, cache, _ = files_and_cache(tmp_path)
    calls: list[str] = []
    monkeypatch.setattr(blockio, "try_clone", fake_clone(calls))
    unpack(src, m, tmp_path / "out", cache=cache, cache_mode="copy")
    assert len(calls) == 1 + len(m.layers)  # no tee: each blob cloned from its staged file
    assert all(cache.has_blob(d.digest) for d in m.layers)


def test_link_with_reference_is_refused(tmp_path):
    src, m, cache, _ = files_and_cache(tmp_path)
    with pytest.raises(InvalidInputError, match="--link"):
        unpack(src, m, tmp_path / "out", cache=cache, link=True, cache_mode="reference")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------- the overlapping writer


class Blocks:
    """A stream of ``count`` blocks of 4 MiB, each filled with its index."""

    def __init__(self, count: int, fail_at: int | None = None) -> None:
        self.left = count
        self.index = 0
        self.fail_at = fail_at

    def readinto(self, buf) -> int:
        if self.left == 0:
            return 0
        if self.index == self.fail_at:
            raise IntegrityError("bad block")
        view = memoryview(buf)
        view[:] = bytes([self.index]) * len(view)
        self.index += 1
        self.left -= 1
        return len(view)


def test_pump_writes_every_block_in_order_with_bounded_buffers(tmp_path, monkeypatch):
    kicks: list[int] = []
    real_kick = blockio.Syncer.kick
    monkeypatch.setattr(
        blockio.Syncer, "kick", lambda self: (kicks.append(self._fd), real_kick(self))
    )
    monkeypatch.setattr(blockio, "SYNC_EVERY", 2 * CHUNK)
    pool = blockio.BufferPool(2)
    target = tmp_path / "out"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)
    advanced: list[int] = []
    try:
        blockio.pump(Blocks(9), [blockio.fd_sink(fd)], pool, advanced.append, fd)
    finally:
        os.close(fd)
    data = target.read_bytes()
    assert len(data) == 9 * CHUNK and sum(advanced) == 9 * CHUNK
    assert all(data[i * CHUNK : (i + 1) * CHUNK] == bytes([i]) * CHUNK for i in range(9))
    assert pool._made <= 2
    # a flush of this file requested every 2 blocks on the way (not only at the end)
    assert len(kicks) == 4 and set(kicks) == {fd}


def test_pump_reports_write_and_read_errors_without_hanging(tmp_path):
    pool = blockio.BufferPool(2)
    written: list[int] = []

    def failing(view: memoryview) -> None:
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        written.append(len(view))

    done = threading.Event()

    def run() -> None:
        with pytest.raises(OSError, match="No space"):
            blockio.pump(Blocks(50), [failing], pool, lambda n: None, None)
        with pytest.raises(IntegrityError, match="bad block"):
            blockio.pump(Blocks(50, fail_at=3), [lambda v: None], pool, lambda n: None, None)
        done.set()

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=30)
    assert done.is_set()
    assert len(pool._free) == pool._made  # every buffer came back


def test_prune_forgets_changed_and_missing_files_only(tmp_path):
    kept, edited, gone = (tmp_path / n for n in ("kept.bin", "edited.bin", "gone.bin"))
    for f in (kept, edited, gone):
        f.write_bytes(b"z" * 64)
    digest = str(Descriptor.for_bytes("application/octet-stream", b"z" * 64).digest)
    with Copies(tmp_path / "copies.sqlite") as copies:
        copies.record([Copy.of_file(digest, f, 0, 64) for f in (kept, edited, gone)])
        os.utime(edited, ns=(1, 1))
        gone.unlink()
        assert copies.prune(dry_run=True) == 2
        assert len(copies.candidates(digest, 64)) == 3  # a dry run forgets nothing
        assert copies.prune() == 2
        assert [c.path for c in copies.candidates(digest, 64)] == [str(kept.resolve())]
        assert copies.prune() == 0


def test_syncer_flushes_when_asked_and_reports_errors(tmp_path, monkeypatch):
    flushed = threading.Event()
    monkeypatch.setattr(os, "fdatasync", lambda fd: flushed.set())
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        syncer = blockio.Syncer(fd)
        syncer.kick()
        assert flushed.wait(10)
        syncer.stop()
        assert syncer.error is None

        def broken(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fdatasync", broken)
        syncer = blockio.Syncer(fd)
        syncer.kick()
        syncer._thread.join(10)  # the thread ends on the error
        syncer.stop()
        assert isinstance(syncer.error, OSError)
    finally:
        os.close(fd)
