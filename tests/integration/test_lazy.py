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
        chunks = Path(client.store.root) / CHUNK_STORE_DIR  # <algorithm>/<2 hex>/<hex>
        assert not chunks.exists() or not any(chunks.glob("*/*/*"))
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


# ------------------------------------------------------------ chunk index by default (issue 17)


def write_chunky_model(root: Path) -> Path:
    """Tensors of several 4 MiB chunks (the default chunk size) and a small config."""
    from safetensors.numpy import save_file

    root.mkdir(parents=True)
    rng = np.random.default_rng(17)
    tensors = {
        f"layers.{i}.weight": rng.integers(0, 255, (12 * 1024 * 1024,), dtype=np.uint8)
        for i in range(3)
    }
    save_file(tensors, str(root / "model.safetensors"))
    (root / "config.json").write_text('{"architectures": ["X"]}')
    return root


def test_default_push_then_open_reads_a_tensor_with_ranged_fetches_only(registry_plain, tmp_path):
    root = write_chunky_model(tmp_path / "chunky")
    repo = f"lazy/{uuid.uuid4().hex[:10]}"
    with client_for(tmp_path, "push-store") as client:
        client.push(root, f"{registry_plain.host}/{repo}:v1")  # no flags at all
    with (
        LazyProxy(registry_plain.port, "pass") as proxy,
        client_for(tmp_path) as client,
        open_model(client, f"{proxy.host}/{repo}:v1") as h,
    ):
        assert h.index is not None and not h.notes
        ref = h.tensor_ref("layers.1.weight")
        layer = h.model_file("model.safetensors").segments[0].desc
        proxy.reset()
        data = h.tensor_bytes("layers.1.weight")
        gets = [e for e in proxy.blob_requests() if str(layer.digest) in e.path]
    assert data == (root / "model.safetensors").read_bytes()[ref.offset : ref.offset + ref.nbytes]
    assert gets and all(e.range is not None and e.status == 206 for e in gets)
    fetched = sum(e.body_bytes for e in gets)
    assert fetched <= 1.1 * ref.nbytes + 1024 * 1024


def test_index_command_adds_a_referrer_that_open_then_uses(registry_plain, tmp_path):
    import json as json_module

    from modelreg_cli.main import app
    from typer.testing import CliRunner

    from modelreg.lazy.chunkindex import ANN_CHUNK_INDEX, CHUNK_INDEX_ARTIFACT_TYPE

    root = write_chunky_model(tmp_path / "chunky")
    repo = f"lazy/{uuid.uuid4().hex[:10]}"
    ref = f"{registry_plain.host}/{repo}:v1"
    runner = CliRunner()
    pushed = runner.invoke(app, ["push", str(root), ref, "--no-chunk-index", "--json"])
    assert pushed.exit_code == 0, pushed.output
    with client_for(tmp_path) as client:
        _, target, desc = client.resolve(ref)
        assert target.referrers(desc, CHUNK_INDEX_ARTIFACT_TYPE) == []
        with open_model(client, ref) as h:
            assert h.index is None and any("whole" in n for n in h.notes)
    first = runner.invoke(app, ["index", ref, "--json"])
    assert first.exit_code == 0, first.output
    doc = json_module.loads(first.stdout)
    assert doc["created"] and doc["source"] == "built" and doc["digest"] == str(desc.digest)
    again = runner.invoke(app, ["index", ref, "--json"])
    assert json_module.loads(again.stdout)["source"] == "referrer"  # idempotent
    with client_for(tmp_path, "store-2") as client:
        _, target, desc2 = client.resolve(ref)
        assert desc2.digest == desc.digest  # the manifest did not change
        listed = target.referrers(desc, CHUNK_INDEX_ARTIFACT_TYPE)
        assert [str(d.digest) for d in listed] == [doc["referrer"]]
        with open_model(client, ref, chunk_index_referrers=True) as h:
            assert h.index is not None and ANN_CHUNK_INDEX not in h.manifest.annotations
            assert any("referrer" in n for n in h.notes)
            before = received(client, registry_plain.host)
            t = h.tensor_ref("layers.2.weight")
            data = h.tensor_bytes("layers.2.weight")
            fetched = received(client, registry_plain.host) - before
    assert data == (root / "model.safetensors").read_bytes()[t.offset : t.offset + t.nbytes]
    assert fetched <= 1.1 * t.nbytes + 1024 * 1024
