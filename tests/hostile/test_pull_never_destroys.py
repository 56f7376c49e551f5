"""A pull never destroys work (SECURITY.md case 29, issue 16 item 2).

* a file the user changed is never replaced without ``--overwrite`` (exit 2, named);
* a file already identical is kept as it is (same inode, same mtime) and not fetched;
* a failed pull into a new directory leaves no directory behind;
* a ``kill -9`` mid-transfer leaves a staging directory that the next pull (and
  ``cache prune``) removes, while a live pull's staging is never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from modelreg_cli.main import app
from typer.testing import CliRunner

from modelreg import Client, cache
from modelreg.errors import IntegrityError
from modelreg.model.unpack._staging import PREFIX, Owner, is_stale, sweep
from tests.hostile.crafted import CraftedRegistry, Reply, Seen, sha256

WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
FILEPATH = "org.cncf.model.filepath"
TITLE = "org.opencontainers.image.title"
runner = CliRunner()


def _layer(name: str, data: bytes) -> tuple[str, bytes, dict[str, str]]:
    return (WEIGHT, data, {FILEPATH: name, TITLE: name})


def _model(registry: CraftedRegistry, files: dict[str, bytes]) -> str:
    registry.model("m", "v1", [_layer(n, d) for n, d in files.items()])
    return f"{registry.host}/m:v1"


def _staging(out: Path) -> list[str]:
    return [n for n in os.listdir(out) if n.startswith(PREFIX)] if out.exists() else []


def test_a_changed_file_refuses_the_pull_and_stays(registry, tmp_path):
    ref = _model(registry, {"config.json": b'{"a": 1}', "w.bin": b"weights"})
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_bytes(b'{"a": 2}  my edit')
    result = runner.invoke(app, ["pull", ref, "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "config.json" in result.output and "--overwrite" in result.output
    assert (out / "config.json").read_bytes() == b'{"a": 2}  my edit'
    assert sorted(os.listdir(out)) == ["config.json"]  # nothing else written
    assert registry.count("GET", r"/v2/m/blobs/.*") <= 1  # only the config: no layer fetched


def test_overwrite_replaces_a_changed_file(registry, tmp_path):
    ref = _model(registry, {"config.json": b'{"a": 1}'})
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_bytes(b"mine")
    result = runner.invoke(app, ["pull", ref, "-o", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (out / "config.json").read_bytes() == b'{"a": 1}'


def test_identical_files_are_kept_and_not_fetched(registry, tmp_path):
    data = os.urandom(200_000)
    ref = _model(registry, {"w.bin": data, "c.json": b"{}"})
    out = tmp_path / "out"
    (out).mkdir()
    (out / "notes.txt").write_text("my notes")  # unrelated: left alone
    with Client() as client:
        client.pull(ref, out, cache=False)
    before = {n: os.stat(out / n) for n in ("w.bin", "c.json")}
    time.sleep(0.01)
    fetches = registry.count("GET", f"/v2/m/blobs/{sha256(data)}")
    with Client() as client:
        again = client.pull(ref, out, cache=False)
    for name, st in before.items():
        now = os.stat(out / name)
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), name
    assert registry.count("GET", f"/v2/m/blobs/{sha256(data)}") == fetches
    assert again.bytes_fetched == 0 and again.bytes_from_cache == len(data) + 2
    assert (out / "notes.txt").read_text() == "my notes"
    assert sorted(f["path"] for f in again.files) == ["c.json", "w.bin"]


def test_a_failed_pull_into_a_new_directory_leaves_no_directory(registry, tmp_path):
    good = b"good"
    registry.model("m", "v1", [_layer("a.bin", good), _layer("b.bin", b"original")])
    registry.blob("m", b"tampered", digest=sha256(b"original"))
    out = tmp_path / "new" / "deeper"
    with Client() as client, pytest.raises(IntegrityError):
        client.pull(f"{registry.host}/m:v1", out, cache=False)
    assert not (tmp_path / "new").exists()


def test_a_failed_pull_into_an_existing_directory_leaves_it_as_it_was(registry, tmp_path):
    registry.model("m", "v1", [_layer("a.bin", b"a"), _layer("b.bin", b"original")])
    registry.blob("m", b"tampered", digest=sha256(b"original"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with Client() as client, pytest.raises(IntegrityError):
        client.pull(f"{registry.host}/m:v1", out, cache=False)
    assert sorted(os.listdir(out)) == ["keep.txt"]


def _slow_blob(registry: CraftedRegistry, data: bytes, slow: dict[str, bool]) -> str:
    ref = _model(registry, {"big.bin": data})
    digest = sha256(data)
    # 96 chunks, 0.1 s apart: about 10 s; the first 4 MiB block lands after about 3 s
    step = 128 * 1024

    def serve(seen: Seen) -> Reply:
        headers = {"Content-Type": "application/octet-stream"}
        if not slow["on"]:
            return Reply(200, headers, data)
        chunks = [data[i : i + step] for i in range(0, len(data), step)]
        return Reply(200, headers, chunks, delay=0.1)

    registry.route("GET", f"/v2/m/blobs/{digest}", serve)
    return ref


def _wait_for_partial(out: Path, proc: subprocess.Popen[bytes], deadline: float) -> Path:
    while time.monotonic() < deadline:
        for name in _staging(out):
            staged = out / name / "big.bin"
            if staged.exists() and staged.stat().st_blocks > 0:
                return out / name
        assert proc.poll() is None, "the pull ended before it could be killed"
        time.sleep(0.02)
    raise AssertionError("the pull never started writing")


def _kill_9_mid_pull(ref: str, out: Path) -> Path:
    """Runs ``modelreg pull`` in its own process and SIGKILLs it once it has written
    into its staging directory, which it returns (left behind, as a crash leaves it)."""
    modelreg = Path(sys.executable).parent / "modelreg"
    proc = subprocess.Popen(
        [str(modelreg), "pull", ref, "-o", str(out), "--no-cache"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        left = _wait_for_partial(out, proc, time.monotonic() + 60)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    return left


@pytest.mark.timeout(120)
def test_kill_9_mid_pull_then_the_next_pull_cleans_up(registry, tmp_path):
    data = os.urandom(12 * 1024 * 1024)
    slow = {"on": True}
    ref = _slow_blob(registry, data, slow)
    out = tmp_path / "out"
    left = _kill_9_mid_pull(ref, out)
    assert left.exists() and is_stale(left)
    slow["on"] = False
    with Client() as client:
        client.pull(ref, out, cache=False)
    assert (out / "big.bin").read_bytes() == data
    assert _staging(out) == []
    assert cache.prune_staging(dry_run=True).dirs == ()  # its record went with it


@pytest.mark.timeout(120)
def test_cache_prune_removes_a_killed_pulls_staging(registry, tmp_path):
    data = os.urandom(12 * 1024 * 1024)
    ref = _slow_blob(registry, data, {"on": True})
    out = tmp_path / "out"
    left = _kill_9_mid_pull(ref, out)
    dry = cache.prune_staging(dry_run=True)
    assert dry.dirs == (str(left),) and dry.bytes > 0 and left.exists()
    pruned = cache.prune(tmp_path / "home" / "store")
    assert pruned.temp_files >= 1 and not left.exists()


def test_a_live_pulls_staging_is_never_swept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mine = out / f"{PREFIX}{Owner.current().token}-abc123"
    mine.mkdir()
    (mine / "part").write_bytes(b"x")
    os.utime(mine, (0, 0))  # old does not mean dead: the owner runs
    assert not is_stale(mine)
    assert sweep(out) == [] and mine.exists()
    # a pid that is gone: stale whatever its age
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    theirs = out / f"{PREFIX}{Owner.current().host}-{dead.pid}-1-xyz"
    theirs.mkdir()
    assert sweep(out) == [theirs] and not theirs.exists()
