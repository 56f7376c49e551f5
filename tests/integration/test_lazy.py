"""Issue 6 end to end: lazy, verified reads from a real Distribution registry.

Byte counts come from the registry client's counters (``client.stats``: blob bytes
received) and, behind the fault proxies, from the proxy's log.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from modelreg.client import Client, RemoteOptions
from modelreg.errors import IntegrityError
from modelreg.lazy import open_model, pull_into
from modelreg.lazy.chunkindex import FileChunks
from modelreg.lazy.handle import CHUNK_STORE_DIR
from modelreg.lazy.into import COMPLETE_MARKER
from tests.integration.lazy_proxy import LazyProxy
from tests.isolation import isolate
from tests.unit.lazy.helpers import CHUNK, publish, tensors_for_test, write_model


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    isolate(tmp_path, monkeypatch, fsync=True)


def client_for(tmp_path: Path, name: str = "store") -> Client:
    return Client(RemoteOptions(plain_http=True, store=str(tmp_path / name), fsync=False))


@pytest.fixture
def model_dir(tmp_path) -> Path:
    return write_model(tmp_path / "model")


def push_model(host: str, root: Path, tmp_path: Path, *, index: bool = True) -> str:
    repo = f"lazy/{uuid.uuid4().hex[:10]}"
    with client_for(tmp_path, "push-store") as client:
        publish(client.target(f"{host}/{repo}"), root, chunk_size=CHUNK, index=index)
    return f"{host}/{repo}"


def chunk_bytes(fc: FileChunks, offset: int, length: int) -> int:
    return sum(fc.bounds(i)[1] - fc.bounds(i)[0] for i in fc.span(offset, length))


def received(client: Client, host: str) -> int:
    return int(client.registry(host).stats.bytes_received)


def test_listing_and_reading_one_tensor_fetch_only_what_is_needed(
    registry_plain, model_dir, tmp_path
):
    repo = push_model(registry_plain.host, model_dir, tmp_path)
    host = registry_plain.host
    with client_for(tmp_path) as client, open_model(client, f"{repo}:v1") as h:
        assert h.index_descriptor is not None
        after_open = received(client, host)
        # the manifest, then the small index fetched whole
        assert after_open == h.descriptor.size + h.index_descriptor.size
        tensors = h.tensors()
        assert sorted(t.name for t in tensors) == sorted(tensors_for_test())
        fc = h.index.files["model.safetensors"]
        listing = received(client, host) - after_open
        assert listing == fc.head  # the safetensors header and nothing else
        assert listing + after_open - h.descriptor.size <= 1024 * 1024
        before = received(client, host)
        ref = h.tensor_ref("a.weight")
        arr = h.tensor("a.weight")
        assert np.array_equal(arr, tensors_for_test()["a.weight"])
        fetched = received(client, host) - before
        assert fetched == chunk_bytes(fc, ref.offset, ref.nbytes)
        assert fetched <= ref.nbytes + 2 * CHUNK
        assert fetched < 0.5 * fc.size


def test_files_read_lazily_are_byte_identical_and_cached(registry_plain, model_dir, tmp_path):
    repo = push_model(registry_plain.host, model_dir, tmp_path)
    with client_for(tmp_path) as client, open_model(client, f"{repo}:v1") as h:
        for f in h.files:
            with h.open(f.path) as fh:
                assert fh.read() == (model_dir / f.path).read_bytes(), f.path
    # a second open (new client, same cache) reads from disk: no blob bytes travel
    with client_for(tmp_path) as client, open_model(client, f"{repo}:v1") as h:
        for f in h.files:
            assert h.read(f.path) == (model_dir / f.path).read_bytes()
        assert received(client, registry_plain.host) == h.descriptor.size  # manifest only
        assert h.stats["remoteBytes"] == 0


def test_flipped_range_response_fails_with_digest_error_and_caches_nothing(
    registry_plain, model_dir, tmp_path
):
    repo = push_model(registry_plain.host, model_dir, tmp_path)
    path = repo.split("/", 1)[1]
    with LazyProxy(registry_plain.port, "flip") as proxy, client_for(tmp_path) as client:
        with open_model(client, f"{proxy.host}/{path}:v1") as h:
            with pytest.raises(IntegrityError, match="chunk index says"):
                h.tensors()
            with pytest.raises(IntegrityError):
                h.read("model.safetensors", 500_000, 100)
            with pytest.raises(IntegrityError):
                fh = h.open("model.safetensors")
                fh.seek(-10, 2)
                fh.read()
        assert proxy.flips >= 3
        chunks = Path(client.store.root) / CHUNK_STORE_DIR / "sha256"
        assert not chunks.exists() or not any(chunks.glob("*/*"))
        layers = [f.digest for f in h.files]
        assert not any(client.store.has_blob(d) for d in layers)
        # the same cache through an honest connection: works
        with open_model(client, f"{repo}:v1") as clean:
            assert clean.read("tokenizer.json") == (model_dir / "tokenizer.json").read_bytes()
    # whole-body (200) responses are checked too: here the index itself is tampered
    with (
        LazyProxy(registry_plain.port, "flip", flip_whole=True) as proxy,
        client_for(tmp_path, "store-2") as client,
        pytest.raises(IntegrityError),
    ):
        open_model(client, f"{proxy.host}/{path}:v1")


def test_registry_ignoring_range_still_works_and_is_remembered(registry_plain, model_dir, tmp_path):
    repo = push_model(registry_plain.host, model_dir, tmp_path)
    path = repo.split("/", 1)[1]
    original = (model_dir / "model.safetensors").read_bytes()
    with LazyProxy(registry_plain.port, "strip-range") as proxy:
        ref = f"{proxy.host}/{path}:v1"
        with client_for(tmp_path) as client, open_model(client, ref) as h:
            layer = h.model_file("model.safetensors").segments[0].desc
            arr = h.tensor("a.weight")
            assert np.array_equal(arr, tensors_for_test()["a.weight"])
            assert client.registry(proxy.host).supports_range is False
            assert h.read("model.safetensors") == original
            assert h.stats["wholeBlobs"] == 1
            gets = [e for e in proxy.blob_requests() if str(layer.digest) in e.path]
            # one attempt with Range (answered 200, read through), then one whole fetch
            assert len(gets) == 2 and all(e.status == 200 for e in gets)
            proxy.reset()
            # remembered by the client: another open through it goes straight to whole blobs
            with open_model(client, ref, cache=tmp_path / "store-b") as again:
                assert again.read("config.json") == (model_dir / "config.json").read_bytes()
                assert again.tensor_bytes("c.bias") == tensors_for_test()["c.bias"].tobytes()
                assert all(e.range is None for e in proxy.blob_requests())


def test_artifact_without_index_opens_lazily_verified_per_blob(registry_plain, model_dir, tmp_path):
    repo = push_model(registry_plain.host, model_dir, tmp_path, index=False)
    with client_for(tmp_path) as client, open_model(client, f"{repo}:v1") as h:
        assert h.index is None and not any(f.indexed for f in h.files)
        assert h.read("config.json") == (model_dir / "config.json").read_bytes()
        before = received(client, registry_plain.host)
        assert np.array_equal(h.tensor("b.weight"), tensors_for_test()["b.weight"])
        weights = (model_dir / "model.safetensors").stat().st_size
        assert received(client, registry_plain.host) - before == weights


def test_pull_into_from_the_registry_resumes(registry_plain, model_dir, tmp_path):
    repo = push_model(registry_plain.host, model_dir, tmp_path)
    out = tmp_path / "into"
    with client_for(tmp_path) as client:
        result = pull_into(client, f"{repo}:v1", out, fsync=False)
    for f in result.files:
        assert (out / f["path"]).read_bytes() == (model_dir / f["path"]).read_bytes()
    assert (out / COMPLETE_MARKER).exists()
    (out / "model.safetensors").write_bytes(b"")  # damaged in place
    with client_for(tmp_path, "other-store") as client:
        again = pull_into(client, f"{repo}:v1", out, fsync=False)
        weights = (model_dir / "model.safetensors").stat().st_size
        assert again.bytes_fetched == weights
        assert received(client, registry_plain.host) <= weights + 64 * 1024
    assert (out / "model.safetensors").read_bytes() == (
        model_dir / "model.safetensors"
    ).read_bytes()
