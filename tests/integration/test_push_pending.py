"""Push sends a big file while hashing it when its digest is not cached yet.

The threshold (``modelreg.client.PENDING_MIN``) is lowered so that a 6 MiB file
takes that path; every push runs against a real Distribution registry.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from modelreg import client as client_module
from modelreg.client import Client, PushResult, RemoteOptions
from modelreg.content.base import CHUNK
from modelreg.content.registry import uploads
from modelreg.errors import InvalidInputError, NotFoundError
from modelreg.events import Event
from modelreg.lazy.publish import index_descriptor_from_annotations
from modelreg.model import digests
from modelreg.oci import Descriptor, Digest
from modelreg.oci import mediatypes as mt

THRESHOLD = 1024 * 1024
BIG = "model.safetensors"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setattr(client_module, "PENDING_MIN", THRESHOLD)


class Runs:
    """Every PendingUpload run: started, and how each ended."""

    def __init__(self) -> None:
        self.started = 0
        self.ended: list[tuple[Digest, int, bool, bool]] = []
        self.failed: list[BaseException] = []


@pytest.fixture
def runs(monkeypatch) -> Runs:
    seen = Runs()
    real = uploads.PendingUpload.run

    def run(self: uploads.PendingUpload) -> int:
        seen.started += 1
        try:
            sent = real(self)
        except BaseException as exc:
            seen.failed.append(exc)
            raise
        seen.ended.append((self.desc.digest, sent, self.existed, self.mounted))
        return sent

    monkeypatch.setattr(uploads.PendingUpload, "run", run)
    return seen


class Lockstep:
    """Orders a push of BIG: the upload reads its first block, then the file is hashed and
    its digest reported (then ``then()`` runs), then the upload goes on."""

    def __init__(self, monkeypatch, big: Path) -> None:
        self.big = big.resolve()
        self.then = lambda: None
        self.first_block = threading.Event()
        self.reported = threading.Event()
        real_hash = digests.hash_file_with_chunks
        real_submit = client_module._EarlyUploads.submit

        def hash_file(path, geometry, algorithm="sha256"):
            if Path(path) == self.big:
                assert self.first_block.wait(60)
            return real_hash(path, geometry, algorithm)

        def submit(early, desc, path, offset):
            real_submit(early, desc, path, offset)
            if path.resolve() == self.big:
                self.then()
                self.reported.set()

        monkeypatch.setattr(digests, "hash_file_with_chunks", hash_file)
        monkeypatch.setattr(client_module._EarlyUploads, "submit", submit)

    def reset(self) -> None:
        self.first_block.clear()
        self.reported.clear()

    def progress(self, event) -> None:
        if event.kind == "advance" and event.name == BIG and not self.first_block.is_set():
            self.first_block.set()
            assert self.reported.wait(60)


def make_model(root: Path, big_files: tuple[str, ...] = (BIG,)) -> Path:
    """Safetensors files of 6 MiB (over the lowered threshold), and a small config."""
    root.mkdir(parents=True)
    for index, name in enumerate(big_files):
        rng = np.random.default_rng(index)
        tensors = {
            f"layer.{i}.weight": rng.standard_normal((512, 1024)).astype("f4") for i in (0, 1, 2)
        }
        save_file(tensors, str(root / name), metadata={"format": "pt"})
    (root / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    return root


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """The model of most tests here (one big file, :data:`BIG`), under tmp_path/m."""
    return make_model(tmp_path / "m")


def sent_by(client: Client, host: str) -> int:
    return int(client.registry(host).stats.bytes_sent)


def blob_bytes(client: Client, pushed: PushResult) -> int:
    """Sizes of the config, every layer of the pushed manifest, and of the chunk index
    and its referrer's empty config (the push sends them with the model's blobs)."""
    manifest = client.inspect(pushed.reference).manifest
    index = index_descriptor_from_annotations(manifest.annotations)
    extra = index.size + len(mt.EMPTY_JSON) if index is not None else 0
    return manifest.config.size + sum(layer.size for layer in manifest.layers) + extra


BLOBS = 3 + 2
"""Config, two files, the chunk index and the empty config of its referrer."""


def touch(path: Path) -> None:
    """New mtime, same content: the digest cache misses, the registry knows the blob."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _push_touched(
    client: Client, model: Path, ref: str, lockstep: Lockstep
) -> tuple[PushResult, int]:
    """Pushes ``model`` after touching its big file (so it is hashed while sent): the
    result and the bytes that went to ``ref``'s registry."""
    touch(model / BIG)
    host = ref.split("/", 1)[0]
    before = sent_by(client, host)
    pushed = client.push(model, ref, progress=lockstep.progress)
    return pushed, sent_by(client, host) - before


def test_cold_push_sends_while_hashing_like_a_warm_push(registry_factory, runs, tmp_path):
    cold_server, warm_server = registry_factory(), registry_factory()
    model = make_model(tmp_path / "m")
    size = (model / BIG).stat().st_size
    assert size >= 6 * 1024 * 1024
    events = []
    with Client(RemoteOptions()) as client:
        before = sent_by(client, cold_server.host)
        cold = client.push(model, f"{cold_server.host}/pend/model:v1", progress=events.append)
        cold_sent = sent_by(client, cold_server.host) - before
        assert runs.started == 1 and not runs.failed
        digest, sent, existed, mounted = runs.ended[0]
        assert sent == size and not existed and not mounted
        # the digest cache learned the digest while the file went out: no second pending run
        warm = client.push(model, f"{warm_server.host}/pend/model:v1")
        warm_sent = sent_by(client, warm_server.host)
        assert runs.started == 1
        total = blob_bytes(client, cold)
        layers = client.inspect(cold.reference).manifest.layers
    assert cold.digest == warm.digest
    big_layer = next(layer for layer in layers if layer.annotations[mt.ANN_TITLE] == BIG)
    assert big_layer.digest == digest and big_layer.size == size
    for result, on_wire in ((cold, cold_sent), (warm, warm_sent)):
        t = result.transfer
        assert t.bytes_sent == total == on_wire
        assert (t.blobs_sent, t.blobs_skipped, t.blobs_mounted) == (BLOBS, 0, 0)
        assert (t.bytes_skipped, t.bytes_mounted) == (0, 0)
    # progress: one bar for the big file, from start to done, no later "skipped" for it
    mine = [e for e in events if e.name == BIG]
    assert [e.kind for e in mine if e.kind != "advance"] == ["start", "done"]
    assert sum(e.n for e in mine if e.kind == "advance") == size
    assert not [e for e in events if e.kind == "skipped"]


def test_pending_push_stops_to_mount_from_another_repository_or_skip(
    registry_factory, runs, tmp_path, monkeypatch
):
    server = registry_factory()
    model = make_model(tmp_path / "m")
    size = (model / BIG).stat().st_size
    with Client(RemoteOptions()) as client:
        first = client.push(model, f"{server.host}/pend/one:v1")
        total = blob_bytes(client, first)
        assert first.transfer.bytes_sent == total and runs.started == 1

        # same content, new mtime: hashed again while sent, and known to the registry
        lockstep = Lockstep(monkeypatch, model / BIG)
        mounted, on_wire = _push_touched(client, model, f"{server.host}/pend/two:v1", lockstep)
        assert runs.started == 2
        _, sent, existed, was_mounted = runs.ended[1]
        assert was_mounted and not existed
        assert 0 < sent <= CHUNK < size  # stopped after the block sent before the digest
        t = mounted.transfer
        assert (t.blobs_mounted, t.bytes_mounted) == (BLOBS, total)
        assert (t.blobs_sent, t.blobs_skipped, t.bytes_skipped) == (0, 0, 0)
        assert t.bytes_sent == on_wire == sent

        lockstep.reset()
        again, on_wire = _push_touched(client, model, f"{server.host}/pend/one:v2", lockstep)
        assert runs.started == 3
        _, sent, existed, was_mounted = runs.ended[2]
        assert existed and not was_mounted
        assert 0 < sent <= CHUNK
        t = again.transfer
        assert (t.blobs_skipped, t.bytes_skipped) == (BLOBS, total)
        assert (t.blobs_sent, t.blobs_mounted, t.bytes_mounted) == (0, 0, 0)
        assert t.bytes_sent == on_wire == sent
        assert mounted.digest == again.digest == first.digest
        assert client.resolve(f"{server.host}/pend/two:v1")[2].digest == Digest.parse(first.digest)


def test_at_most_pending_max_uploads_at_once(registry_factory, runs, tmp_path, monkeypatch):
    server = registry_factory()
    names = ("a.safetensors", "b.safetensors", "c.safetensors")
    model = make_model(tmp_path / "m", names)
    monkeypatch.setattr(client_module, "PENDING_MAX", 1)
    hashed: list[str] = []
    all_hashed = threading.Event()
    real_hash = digests.hash_file_with_chunks

    def hash_file(path, geometry, algorithm="sha256"):
        result = real_hash(path, geometry, algorithm)
        hashed.append(str(path))
        if len(hashed) == len(names) + 1:
            all_hashed.set()
        return result

    real_run = uploads.PendingUpload.run

    def slow_run(self: uploads.PendingUpload) -> int:
        # hold the only slot until every file is hashed: the others must go the usual way
        assert all_hashed.wait(60)
        return real_run(self)

    monkeypatch.setattr(digests, "hash_file_with_chunks", hash_file)
    monkeypatch.setattr(uploads.PendingUpload, "run", slow_run)
    with Client(RemoteOptions()) as client:
        before = sent_by(client, server.host)
        pushed = client.push(model, f"{server.host}/pend/three:v1")
        on_wire = sent_by(client, server.host) - before
        total = blob_bytes(client, pushed)
    assert runs.started == 1 and not runs.failed
    t = pushed.transfer
    assert t.bytes_sent == on_wire == total
    assert (t.blobs_sent, t.blobs_skipped) == (len(names) + 2 + 2, 0)


def test_file_changed_after_hashing_is_refused_by_the_registry(
    registry_factory, runs, model, monkeypatch
):
    server = registry_factory()
    big = model / BIG
    size = big.stat().st_size
    old_digest = Digest.from_bytes(big.read_bytes())
    lockstep = Lockstep(monkeypatch, big)

    def rewrite_tail() -> None:  # hashed and reported, not sent yet
        with open(big, "r+b") as f:
            f.seek(size - 1024)
            f.write(os.urandom(1024))

    lockstep.then = rewrite_tail
    ref = f"{server.host}/pend/changed:v1"
    with Client(RemoteOptions()) as client:
        with pytest.raises(InvalidInputError) as caught:
            client.push(model, ref, progress=lockstep.progress)
        assert f"{BIG!r} changed while it was being sent" in caught.value.message
        assert "refused" in caught.value.message
        assert caught.value.hint
        assert runs.started == 1 and len(runs.failed) == 1
        target = client.target(ref)
        with pytest.raises(NotFoundError):
            target.resolve("v1")
        new_digest = Digest.from_bytes(big.read_bytes())
        for digest in (old_digest, new_digest):
            assert not target.exists(Descriptor(mt.model_layer("weight"), digest, size))


def test_file_changed_while_hashed_fails_before_anything_is_tagged(
    registry_factory, runs, model, monkeypatch
):
    server = registry_factory()
    big = model / BIG
    size = big.stat().st_size
    real_hash = digests.hash_file_with_chunks

    def hash_file(path, geometry, algorithm="sha256"):
        if Path(path) == big.resolve():
            with open(big, "r+b") as f:  # a writer is still busy with the file
                f.seek(size // 2)
                f.write(os.urandom(4096))
            st = big.stat()
            os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        return real_hash(path, geometry, algorithm)

    monkeypatch.setattr(digests, "hash_file_with_chunks", hash_file)
    ref = f"{server.host}/pend/changing:v1"
    with Client(RemoteOptions()) as client:
        with pytest.raises(InvalidInputError, match="changed while it was being hashed"):
            client.push(model, ref)
        assert runs.started == 1 and len(runs.failed) == 1
        with pytest.raises(NotFoundError):
            client.target(ref).resolve("v1")
        layer = Descriptor(mt.model_layer("weight"), Digest.from_bytes(big.read_bytes()), size)
        assert not client.target(ref).exists(layer)


def big_upload_start() -> tuple[threading.Event, Callable[[Event], None]]:
    """An event set once a push starts sending :data:`BIG`, and the progress callback
    that sets it."""
    started = threading.Event()

    def progress(event: Event) -> None:
        if event.kind == "start" and event.name == BIG:
            started.set()

    return started, progress


def test_hashing_failure_cancels_the_pending_upload(registry_factory, runs, model, monkeypatch):
    server = registry_factory()
    big = model / BIG
    real_hash = digests.hash_file_with_chunks
    started, progress = big_upload_start()

    def hash_file(path, geometry, algorithm="sha256"):
        if Path(path) == big.resolve():
            assert started.wait(60)  # the upload is under way
            raise OSError(5, "Input/output error")
        return real_hash(path, geometry, algorithm)

    monkeypatch.setattr(digests, "hash_file_with_chunks", hash_file)
    ref = f"{server.host}/pend/broken:v1"
    with Client(RemoteOptions()) as client:
        with pytest.raises(InvalidInputError, match=re.escape(f"cannot read {BIG!r}: Input/")):
            client.push(model, ref, progress=progress)
        assert runs.started == 1 and not runs.ended
        assert isinstance(runs.failed[0], InvalidInputError)
        assert "stopped before" in runs.failed[0].message
        with pytest.raises(NotFoundError):
            client.target(ref).resolve("v1")


def test_the_largest_file_goes_out_before_the_rest_is_inspected_and_a_failure_stops_it(
    registry_factory, runs, model, monkeypatch
):
    """The big file's upload starts before any other file is inspected (issue 18: a
    mixed model); a file that then fails inspection fails the push, and the upload
    under way is stopped, nothing tagged."""
    from modelreg.model import pack

    server = registry_factory()
    started, progress = big_upload_start()
    real_inspect = pack._inspect_local

    def inspect(rel, real):
        if rel == "config.json":
            assert started.wait(60)  # the big file is already going out
            raise InvalidInputError(f"cannot read {rel!r}: Input/output error")
        return real_inspect(rel, real)

    monkeypatch.setattr(pack, "_inspect_local", inspect)
    ref = f"{server.host}/pend/inspect:v1"
    with Client(RemoteOptions()) as client:
        with pytest.raises(InvalidInputError, match=re.escape("cannot read 'config.json'")):
            client.push(model, ref, progress=progress)
        assert started.is_set()
        assert runs.started == 1 and not runs.ended
        assert isinstance(runs.failed[0], InvalidInputError)
        with pytest.raises(NotFoundError):
            client.target(ref).resolve("v1")


def test_store_destination_hashes_first(runs, tmp_path):
    model = make_model(tmp_path / "m")
    with Client(RemoteOptions()) as client:
        pushed = client.push(model, "pend/local:v1")
    assert runs.started == 0
    assert pushed.transfer.blobs_sent == BLOBS


def test_oras_pulls_what_a_pending_push_stored(registry_plain, runs, tmp_path):
    model = make_model(tmp_path / "m")
    ref = f"{registry_plain.host}/interop/pending:v1"
    with Client(RemoteOptions()) as client:
        client.push(model, ref)
    assert runs.started == 1 and runs.ended and not runs.ended[0][2]
    out = tmp_path / "oras-out"
    script = (
        "import oras.client\n"
        f"c = oras.client.OrasClient(hostname={registry_plain.host!r}, insecure=True)\n"
        f"c.pull(target={ref!r}, outdir={str(out)!r})\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for name in (BIG, "config.json"):
        assert (out / name).read_bytes() == (model / name).read_bytes()
