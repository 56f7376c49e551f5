"""`modelreg mount` against a real registry, through a counting proxy, with a real kernel.

Skipped (with the reason) where FUSE cannot work: no /dev/fuse, no pyfuse3, or a
sandbox that refuses the mount.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from tests.integration.lazy_proxy import ProxyProcess, die_with_parent
from tests.integration.test_lazy import client_for, push_model
from tests.isolation import isolate
from tests.unit.lazy.helpers import CHUNK, tensors_for_test, write_model

ROOT = Path(__file__).resolve().parents[2]
CLI = (
    "import sys; from modelreg_cli.main import app; from modelreg_cli import lazy_cmds\n"
    "names = {c.name or c.callback.__name__ for c in app.registered_commands}\n"
    "if 'mount' not in names: lazy_cmds.register(app)\n"
    "app(sys.argv[1:])\n"
)


def _fuse_available() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine"
    try:
        import pyfuse3  # noqa: F401
    except ImportError:
        return "pyfuse3 is not installed (pip install pyfuse3; needs libfuse3-dev)"
    return None


@pytest.fixture(autouse=True)
def fuse_required() -> None:
    """FUSE is part of what the tests need: its absence fails, never skips."""
    missing = _fuse_available()
    if missing is not None:
        pytest.fail(f"{missing}; `bash .ci/install-deps` installs fuse3", pytrace=False)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    isolate(tmp_path, monkeypatch, fsync=True)


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
        **kwargs,
    )


class Mounted:
    def __init__(self, ref: str, mountpoint: Path, *extra: str) -> None:
        self.mountpoint = mountpoint
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CLI, "mount", ref, str(mountpoint), "--json", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            preexec_fn=die_with_parent,  # SIGTERM (clean unmount) if this test run dies
        )
        assert self.proc.stdout is not None
        try:
            line = self._ready_line(30.0)
        except BaseException:
            self.kill()
            raise
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.proc.wait(10)
            raise AssertionError(f"mount failed (exit {self.proc.returncode}): {err}")
        self.ready = json.loads(line)

    def _ready_line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"the mount did not come up within {timeout} s")
        return self.proc.stdout.readline()

    def wait(self, timeout: float = 20) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        """Always leave nothing behind: the mount detached, the process gone."""
        if self.proc.poll() is None:
            subprocess.run(
                ["fusermount3", "-u", "-z", str(self.mountpoint)], check=False, capture_output=True
            )
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def mounted_paths() -> set[str]:
    with open("/proc/self/mounts", encoding="utf-8") as f:
        return {line.split()[1] for line in f}


@pytest.fixture
def pushed(registry_plain, tmp_path):
    root = write_model(tmp_path / "model")
    return push_model(registry_plain.host, root, tmp_path), root


@pytest.fixture
def mounted(pushed, tmp_path):
    """The pushed model mounted on tmp_path/mnt: (the mount, the mountpoint, the model
    directory); the mount process is killed when the test ends, whatever happened."""
    repo, root = pushed
    mp = tmp_path / "mnt"
    mp.mkdir()
    m = Mounted(f"{repo}:v1", mp)
    try:
        yield m, mp, root
    finally:
        m.kill()


def test_mount_plain_open_and_umount(mounted):
    m, mp, root = mounted
    assert m.ready["event"] == "mounted"
    assert sorted(os.listdir(mp)) == [
        "config.json",
        "model.safetensors",
        "sub",
        "tokenizer.json",
    ]
    for rel in ("config.json", "tokenizer.json", "sub/run.sh", "model.safetensors"):
        with open(mp / rel, "rb") as f:
            assert f.read() == (root / rel).read_bytes(), rel
    assert os.stat(mp / "sub" / "run.sh").st_mode & 0o777 == 0o555
    with pytest.raises(OSError):
        open(mp / "config.json", "wb")  # noqa: SIM115
    digest = os.getxattr(mp / "config.json", "user.modelreg.digest").decode()
    assert digest.startswith("sha256:")
    done = cli("umount", str(mp))
    assert done.returncode == 0, done.stderr
    code, out, _ = m.wait()
    assert code == 0
    assert json.loads(out.strip().splitlines()[-1])["event"] == "unmounted"
    assert str(mp) not in mounted_paths()


def test_mount_under_safe_open_fetches_only_the_tensors_chunks(registry_plain, pushed, tmp_path):
    repo, _ = pushed
    path = repo.split("/", 1)[1]
    expected = tensors_for_test()
    # The proxy runs in its own process: safetensors reads the mmap holding the GIL, so
    # a proxy thread in this process could never answer the mount's requests.
    with ProxyProcess(registry_plain.port, "pass", tmp_path / "proxy.jsonl") as proxy:
        with client_for(tmp_path, "probe") as client:
            from modelreg.lazy import open_model

            with open_model(client, f"{repo}:v1") as h:
                fc = h.index.files["model.safetensors"]
                ref = h.tensor_ref("a.weight")
                layer = h.model_file("model.safetensors").segments[0].desc
        mp = tmp_path / "mnt"
        mp.mkdir()
        # no read-ahead, ours or the kernel's (whose mmap read-around would otherwise
        # touch up to 128 KiB around the tensor): exactly the pages touched are fetched
        m = Mounted(f"{proxy.host}/{path}:v1", mp, "--readahead", "0", "--kernel-readahead", "0")
        try:
            proxy.reset()
            with safe_open(str(mp / "model.safetensors"), framework="numpy") as f:
                assert sorted(f.keys()) == sorted(expected)
                got = f.get_tensor("a.weight")
            assert np.array_equal(got, expected["a.weight"])
            ranges = [e for e in proxy.blob_requests() if str(layer.digest) in e.path]
            fetched: set[int] = set()
            for e in ranges:
                assert e.range is not None and e.status == 206
                start, end = (int(x) for x in e.range.split("=")[1].split("-"))
                fetched.update(fc.span(start, end + 1 - start))
            head = set(fc.span(0, fc.head))
            tensor = set(fc.span(ref.offset, ref.nbytes))
            assert tensor <= fetched
            # only the header and the tensor's chunks
            assert fetched == head | tensor, (sorted(fetched), sorted(head | tensor))
            total = sum(e.body_bytes for e in ranges)
            assert total <= fc.head + ref.nbytes + 2 * CHUNK
        finally:
            m.kill()


def test_sigterm_unmounts_cleanly(mounted):
    m, mp, root = mounted
    assert (mp / "config.json").read_bytes() == (root / "config.json").read_bytes()
    m.proc.send_signal(signal.SIGTERM)
    code, _, err = m.wait()
    assert code == 0, err
    deadline = time.monotonic() + 5
    while str(mp) in mounted_paths() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert str(mp) not in mounted_paths()


def test_umount_of_something_else_is_refused(tmp_path):
    done = cli("umount", str(tmp_path))
    assert done.returncode == 3 and "not a modelreg mount" in done.stderr
