"""open_model over memory and layout targets: what is fetched, verified and cached."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from pathlib import Path

import blake3
import numpy as np
import pytest
from safetensors import safe_open

from modelreg.content.layout import LayoutStore
from modelreg.content.memory import MemoryTarget
from modelreg.copy import copy_graph
from modelreg.errors import (
    FormatError,
    IntegrityError,
    NotFoundError,
    UnsupportedError,
    VerificationError,
)
from modelreg.lazy import chunk_index_annotations, open_model, push_chunk_index
from modelreg.lazy import chunkindex as ci
from modelreg.lazy import handle as handle_mod
from modelreg.lazy.handle import CHUNK_STORE_DIR
from modelreg.model import annotations as mann
from modelreg.model.pack import pack_directory
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import Manifest
from tests.unit.lazy.helpers import CHUNK, CountingTarget, publish, tensors_for_test

ROOT = Path(__file__).resolve().parents[3]


def chunk_bytes_for(fc: ci.FileChunks, offset: int, length: int) -> int:
    return sum(fc.bounds(i)[1] - fc.bounds(i)[0] for i in fc.span(offset, length))


def flip_data_bytes(desc: Descriptor, offset: int, data: bytes) -> bytes:
    """A tamper: one bit flipped in the middle of every range but the chunk index's."""
    if desc.media_type == ci.CHUNK_INDEX_MEDIA_TYPE:
        return data
    mutable = bytearray(data)
    mutable[len(mutable) // 2] ^= 0x01
    return bytes(mutable)


def test_files_and_byte_identical_reads(memory_model, model_dir, tmp_path):
    target, _ = memory_model
    with open_model(target, "v1", cache=tmp_path / "cache") as h:
        paths = {f.path for f in h.files}
        assert paths == {"config.json", "tokenizer.json", "sub/run.sh", "model.safetensors"}
        assert all(f.indexed for f in h.files)
        run = next(f for f in h.files if f.path == "sub/run.sh")
        assert run.mode == 0o755
        for f in h.files:
            original = (model_dir / f.path).read_bytes()
            assert f.size == len(original)
            assert f.digest.hex == hashlib.sha256(original).hexdigest()
            assert h.read(f.path) == original
            with h.open(f.path) as fh:
                assert fh.read() == original


def test_file_object_semantics(memory_model, model_dir, tmp_path):
    target, _ = memory_model
    original = (model_dir / "model.safetensors").read_bytes()
    with open_model(target, "v1", cache=tmp_path / "cache") as h:
        with h.open("config.json") as fh:
            assert json.load(fh) == {"architectures": ["TestModel"]}
        raw = h.open("model.safetensors", buffering=0)
        assert raw.readable() and raw.seekable() and not raw.writable()
        assert raw.seek(100) == 100 and raw.tell() == 100
        assert raw.read(10) == original[100:110]
        buf = bytearray(1000)
        assert raw.readinto(buf) == 1000 and bytes(buf) == original[110:1110]
        raw.seek(-5, io.SEEK_END)
        assert raw.read() == original[-5:]
        assert raw.read(10) == b""
        raw.seek(3)
        assert raw.readall() == original[3:]
        with pytest.raises(OSError):
            raw.fileno()
        with pytest.raises(OSError):
            raw.seek(-1)
        raw.close()
        with pytest.raises(ValueError):
            raw.read(1)
        with pytest.raises(NotFoundError):
            h.open("nope.txt")


def test_listing_tensors_fetches_only_the_index_and_the_header(memory_model, tmp_path):
    target, _ = memory_model
    with open_model(target, "v1", cache=tmp_path / "cache") as h:
        target.reset()
        tensors = h.tensors()
        names = [t.name for t in tensors]
        assert sorted(names) == sorted(tensors_for_test())
        fc = h.index.files["model.safetensors"]
        # exactly the head chunk (the safetensors header), nothing of the weights
        assert target.bytes == fc.head
        assert len(target.range_calls) == 1 and target.range_calls[0][1:] == (0, fc.head)
        t = h.tensor_ref("a.weight")
        assert (t.dtype, t.shape, t.nbytes) == ("F32", (256, 256), 256 * 256 * 4)


def test_reading_one_tensor_fetches_only_its_chunks(memory_model, model_dir, tmp_path):
    target, _ = memory_model
    expected = tensors_for_test()
    with open_model(target, "v1", cache=tmp_path / "cache") as h:
        h.tensors()
        fc = h.index.files["model.safetensors"]
        for name in ("d.weight", "b.weight", "c.bias"):
            target.reset()
            ref = h.tensor_ref(name)
            arr = h.tensor(name)
            assert arr.dtype == expected[name].dtype and np.array_equal(arr, expected[name])
            arr[...] = 0  # writable, owns its memory
            needed = chunk_bytes_for(fc, ref.offset, ref.nbytes)
            # chunks already held (shared with a previous tensor) are not fetched again
            assert target.bytes <= needed <= ref.nbytes + 2 * CHUNK


def test_adjacent_chunks_are_coalesced_and_split_at_max_request(memory_model, tmp_path):
    target, _ = memory_model
    with open_model(target, "v1", cache=tmp_path / "c1", concurrency=4) as h:
        ref = h.tensor_ref("d.weight")
        target.reset()
        h.tensor("d.weight")
        # 600 KiB at 64 KiB chunks: one run -> one request (max_request 16 MiB)
        assert len(target.range_calls) == 1
    with open_model(target, "v1", cache=tmp_path / "c2", max_request=2 * CHUNK) as h:
        h.tensors()
        target.reset()
        h.tensor("d.weight")
        fc = h.index.files["model.safetensors"]
        n_chunks = len(fc.span(ref.offset, ref.nbytes))
        assert len(target.range_calls) == -(-n_chunks // 2)
        assert all(length <= 2 * CHUNK for _, _, length in target.range_calls)


def test_second_open_reads_from_the_local_cache(memory_model, model_dir, tmp_path):
    target, _ = memory_model
    cache = tmp_path / "cache"
    with open_model(target, "v1", cache=cache) as h:
        first = h.tensor("a.weight")
    target.reset()
    with open_model(target, "v1", cache=cache) as h:
        again = h.tensor("a.weight")
        assert h.stats["remoteBytes"] == 0 and h.stats["chunksFromDisk"] > 0
    assert np.array_equal(first, again)
    assert target.bytes == 0 and target.range_calls == []


def test_corrupt_cached_chunk_is_refetched_never_served(memory_model, tmp_path):
    target, _ = memory_model
    cache = tmp_path / "cache"
    with open_model(target, "v1", cache=cache) as h:
        good = h.read("model.safetensors")
    chunks = sorted((cache / CHUNK_STORE_DIR / "blake3").glob("*/*"))
    assert chunks
    for path in chunks:
        data = bytearray(path.read_bytes())
        data[0] ^= 0xFF
        path.write_bytes(bytes(data))
    target.reset()
    with open_model(target, "v1", cache=cache) as h:
        assert h.read("model.safetensors") == good
    assert target.bytes > 0


def test_tampered_range_response_fails_and_nothing_is_cached(memory_model, tmp_path):
    target, _ = memory_model

    target.tamper = flip_data_bytes
    cache = tmp_path / "cache"
    with open_model(target, "v1", cache=cache) as h:
        with pytest.raises(IntegrityError, match="chunk index says"):
            h.tensors()
        with pytest.raises(IntegrityError):
            h.read("model.safetensors", 1000, 300_000)
        with pytest.raises(IntegrityError):
            h.open("config.json").read()
        assert h.stats["integrityFailures"] >= 3
    store = cache / CHUNK_STORE_DIR / "blake3"
    assert not store.exists() or not any(store.glob("*/*"))
    target.tamper = None
    with open_model(target, "v1", cache=cache) as h:  # clean source: works, then caches
        assert h.read("config.json") == b'{"architectures": ["TestModel"]}'


def test_tampered_manifest_annotation_pointing_elsewhere_is_refused(model_dir, tmp_path):
    inner = MemoryTarget()
    publish(inner, model_dir)
    # an index for other content, listed under the same path: the digests disagree
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"x" * 1000)
    annotations, blob, desc = chunk_index_annotations(
        [("model.safetensors", other / "model.safetensors")], chunk_size=CHUNK, cache_dir=None
    )
    packed = pack_directory(model_dir, annotations=annotations)
    copy_graph(packed.as_target(), packed.descriptor, inner, tag="evil")
    push_chunk_index(inner, packed.descriptor, blob, desc)
    with pytest.raises(FormatError, match="inconsistent"):
        open_model(inner, "evil", cache=tmp_path / "cache")


def test_verify_runs_before_anything_is_read(memory_model, tmp_path):
    target, desc = memory_model
    seen = []

    def refuse(t, d):
        seen.append((t, d.digest, list(target.fetch_calls), list(target.range_calls)))
        raise VerificationError("no valid signature")

    target.reset()
    with pytest.raises(VerificationError):
        open_model(target, "v1", cache=tmp_path / "cache", verify=refuse)
    assert seen == [(target, desc.digest, [], [])]
    ok = []
    with open_model(target, "v1", cache=tmp_path / "cache", verify=lambda t, d: ok.append(d)):
        pass
    assert ok[0].digest == desc.digest


def test_artifact_without_index_reads_whole_blobs_verified(model_dir, tmp_path):
    inner = MemoryTarget()
    publish(inner, model_dir, index=False)
    target = CountingTarget(inner)
    original = (model_dir / "model.safetensors").read_bytes()
    cache = LayoutStore(tmp_path / "cache")
    with open_model(target, "v1", cache=cache) as h:
        assert not any(f.indexed for f in h.files)
        assert any("no chunk index" in n for n in h.notes)
        assert h.read("model.safetensors", 10, 20) == original[10:30]
        assert target.range_calls == []
        assert target.bytes == len(original) and h.stats["wholeBlobs"] == 1
        arr = h.tensor("d.weight")
        assert np.array_equal(arr, tensors_for_test()["d.weight"])
        assert h.stats["wholeBlobs"] == 1  # fetched once
    # tampered whole blob: refused, nothing stored under the digest
    inner2 = MemoryTarget()
    publish(inner2, model_dir, index=False)
    bad = CountingTarget(inner2)
    bad.tamper_whole = lambda desc, data: data[:-1] + bytes([data[-1] ^ 1])
    store2 = LayoutStore(tmp_path / "cache2")
    with open_model(bad, "v1", cache=store2) as h:
        with pytest.raises(IntegrityError):
            h.read("model.safetensors", 0, 10)
        layer = h.model_file("model.safetensors").segments[0].desc
        assert not store2.has_blob(layer.digest)


def test_registry_ignoring_range_falls_back_to_whole_blobs_remembered_per_client(
    model_dir, tmp_path
):
    inner = MemoryTarget()
    publish(inner, model_dir)
    target = CountingTarget(inner, host="norange.example:5000")
    target.ignore_range = True
    original = (model_dir / "model.safetensors").read_bytes()
    with open_model(target, "v1", cache=tmp_path / "cache") as h:
        # the small index is fetched whole (no range); headers then cost one ranged read
        assert h.read("model.safetensors", 0, 100) == original[:100]
        assert len(target.range_calls) == 1 and target.client.supports_range is False
        target.reset()
        assert h.read("model.safetensors") == original
        assert target.range_calls == [] and h.stats["wholeBlobs"] == 1
    # another target reached through the same client: remembered, no range attempt at all
    other = CountingTarget(inner, client=target.client)
    with open_model(other, "v1", cache=tmp_path / "cache-b") as h:
        assert np.array_equal(h.tensor("a.weight"), tensors_for_test()["a.weight"])
        assert other.range_calls == []
    # a new client for the same host knows nothing (no process-wide memory): it tries once
    fresh = CountingTarget(inner, host="norange.example:5000")
    fresh.ignore_range = True
    with open_model(fresh, "v1", cache=tmp_path / "cache-c") as h:
        h.read("model.safetensors", 0, 100)
        assert len(fresh.range_calls) == 1 and fresh.supports_range is False


def test_page_mode_index_fetches_toc_and_pages(model_dir, tmp_path, monkeypatch):
    inner = MemoryTarget()
    publish(inner, model_dir)
    target = CountingTarget(inner)
    monkeypatch.setattr(handle_mod, "WHOLE_FETCH_MAX", 0)
    with open_model(target, "v1", cache=tmp_path / "cache") as h:
        idx = h.index_descriptor
        assert idx is not None
        toc_size = int(idx.annotations[ci.ANN_TOC_SIZE])
        assert target.range_calls[0] == (str(idx.digest), 0, toc_size)
        assert h.index.files["model.safetensors"].digests is None  # pages on demand
        target.reset()
        assert np.array_equal(h.tensor("c.bias"), tensors_for_test()["c.bias"])
        page_calls = [c for c in target.range_calls if c[0] == str(idx.digest)]
        assert len(page_calls) == 1
    # tampered TOC: refused
    target.tamper = lambda desc, off, data: data[:-1] + b"\x00"
    with pytest.raises(IntegrityError, match="table of contents"):
        open_model(target, "v1", cache=tmp_path / "cache-2")


def test_missing_index_blob_falls_back_with_a_warning(model_dir, tmp_path):
    inner = MemoryTarget()
    packed_desc = publish(inner, model_dir)
    manifest = Manifest.parse(inner.fetch_range(packed_desc, 0, packed_desc.size))
    idx = ci.ANN_CHUNK_INDEX
    index_desc = Descriptor.from_dict(json.loads(manifest.annotations[idx]))
    del inner._blobs[index_desc.digest]
    warnings: list[str] = []
    with open_model(inner, "v1", cache=tmp_path / "cache", on_warning=warnings.append) as h:
        assert h.index is None and not any(f.indexed for f in h.files)
        assert h.read("config.json") == b'{"architectures": ["TestModel"]}'
    assert warnings and "not in" in warnings[0]


def test_local_store_source_needs_no_copy(model_dir, tmp_path):
    store = LayoutStore(tmp_path / "store")
    publish(store.target("team/m"), model_dir)
    with open_model(store.target("team/m"), "v1", cache=store) as h:
        assert h.read("model.safetensors") == (model_dir / "model.safetensors").read_bytes()
        assert h.stats["remoteBytes"] == 0
    assert not (store.root / CHUNK_STORE_DIR / "sha256").exists()


def test_concurrent_readers_share_inflight_fetches(memory_model, tmp_path):
    target, _ = memory_model
    with open_model(target, "v1", cache=tmp_path / "cache", concurrency=4) as h:
        h.tensors()
        target.reset()
        results = []
        barrier = threading.Barrier(8)

        def reader() -> None:
            barrier.wait()
            results.append(h.tensor_bytes("d.weight"))

        threads = [threading.Thread(target=reader) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(results)) == 1
        ref = h.tensor_ref("d.weight")
        fc = h.index.files["model.safetensors"]
        assert target.bytes <= chunk_bytes_for(fc, ref.offset, ref.nbytes)


def test_sequential_reads_trigger_readahead(tmp_path):
    root = tmp_path / "seq"
    root.mkdir()
    data = np.random.default_rng(3).integers(0, 255, 12 * 1024 * 1024, dtype=np.uint8).tobytes()
    (root / "blob.bin").write_bytes(data)
    inner = MemoryTarget()
    publish(inner, root)
    target = CountingTarget(inner)
    with open_model(target, "v1", cache=tmp_path / "cache", readahead=4 * 1024 * 1024) as h:
        target.reset()
        fh = h.open("blob.bin", buffering=0)
        got = bytearray()
        for _ in range(80):  # 80 x 64 KiB = 5 MiB read: past the 4 MiB trigger
            got += fh.read(64 * 1024)
        deadline = time.monotonic() + 5
        while h._engine._inflight and time.monotonic() < deadline:
            time.sleep(0.01)
        fetched_ahead = target.bytes
        assert fetched_ahead > len(got)  # chunks beyond what was read were fetched
        got += fh.read()
        assert bytes(got) == data
    # no readahead: only what is read travels
    target2 = CountingTarget(inner)
    with open_model(target2, "v1", cache=tmp_path / "cache2", readahead=0) as h:
        target2.reset()  # the index was fetched whole on open
        fh = h.open("blob.bin", buffering=0)
        for _ in range(80):
            fh.read(64 * 1024)
        assert target2.bytes == 80 * 64 * 1024


def test_split_parts_map_to_one_file(tmp_path):
    rng = np.random.default_rng(7)
    whole = rng.integers(0, 255, 300 * 1024, dtype=np.uint8).tobytes()
    cuts = [0, 1000, 150_000, len(whole)]
    target = MemoryTarget()
    file_digest = Digest.from_bytes(whole)
    layers = []
    for k in range(3):
        part = whole[cuts[k] : cuts[k + 1]]
        desc = Descriptor(
            mann.PART_MEDIA_TYPE,
            Digest.from_bytes(part),
            len(part),
            annotations={
                mann.ANN_PART_PATH: "w/model.safetensors",
                mann.ANN_PART_INDEX: str(k),
                mann.ANN_PART_COUNT: "3",
                mann.ANN_PART_OFFSET: str(cuts[k]),
                mann.ANN_FILE_DIGEST: str(file_digest),
                mann.ANN_FILE_SIZE: str(len(whole)),
            },
        )
        target.push(desc, lambda off, p=part: io.BytesIO(p[off:]))
        layers.append(desc)
    src = tmp_path / "w.bin"
    src.write_bytes(whole)
    annotations, blob, idx_desc = __import__(
        "modelreg.lazy", fromlist=["x"]
    ).chunk_index_annotations([("w/model.safetensors", src)], chunk_size=CHUNK, cache_dir=None)
    config = Descriptor.for_bytes(mt.OCI_EMPTY, mt.EMPTY_JSON)
    target.push(config, lambda off: io.BytesIO(mt.EMPTY_JSON[off:]))
    manifest = Manifest(
        config=config,
        layers=tuple(reversed(layers)),  # order in the manifest does not matter
        artifact_type=mt.MODEL_ARTIFACT,
        annotations=annotations,
    )
    target.push_manifest(manifest.descriptor(), manifest.raw, "v1")
    push_chunk_index(target, manifest.descriptor(), blob, idx_desc)
    counting = CountingTarget(target)
    with open_model(counting, "v1", cache=tmp_path / "cache") as h:
        (info,) = h.files
        assert (info.path, info.size, info.parts, info.digest) == (
            "w/model.safetensors",
            len(whole),
            3,
            file_digest,
        )
        # a range crossing the part boundary at 150000
        assert h.read("w/model.safetensors", 149_000, 3000) == whole[149_000:152_000]
        assert {c[0] for c in counting.range_calls} == {
            str(layers[1].digest),
            str(layers[2].digest),
        }
        assert h.read("w/model.safetensors") == whole
    # without the index: each part verified whole, only the parts needed are fetched
    plain = Manifest(config=config, layers=tuple(layers), artifact_type=mt.MODEL_ARTIFACT)
    target.push_manifest(plain.descriptor(), plain.raw, "plain")
    counting2 = CountingTarget(target)
    with open_model(counting2, "plain", cache=tmp_path / "cache2") as h:
        assert h.read("w/model.safetensors", 10, 20) == whole[10:30]
        assert counting2.fetch_calls[-1] == str(layers[0].digest)
        assert h.stats["wholeBlobs"] == 1


def test_split_parts_that_do_not_tile_are_refused(tmp_path):
    target = MemoryTarget()
    config = Descriptor.for_bytes(mt.OCI_EMPTY, mt.EMPTY_JSON)
    target.push(config, lambda off: io.BytesIO(mt.EMPTY_JSON[off:]))
    parts = []
    for off, data in ((0, b"a" * 10), (12, b"b" * 10)):
        parts.append(
            Descriptor(
                mann.PART_MEDIA_TYPE,
                Digest.from_bytes(data),
                len(data),
                annotations={
                    mann.ANN_PART_PATH: "x.bin",
                    mann.ANN_PART_INDEX: str(off // 12),
                    mann.ANN_PART_COUNT: "2",
                    mann.ANN_PART_OFFSET: str(off),
                    mann.ANN_FILE_DIGEST: str(Digest.from_bytes(b"z")),
                    mann.ANN_FILE_SIZE: "22",
                },
            )
        )
    manifest = Manifest(config=config, layers=tuple(parts), artifact_type=mt.MODEL_ARTIFACT)
    target.push_manifest(manifest.descriptor(), manifest.raw, "bad")
    # refused with pull's own message: the handle reads the plan pull writes by
    with pytest.raises(FormatError, match="starts at 12, expected 10"):
        open_model(target, "bad", cache=tmp_path / "cache")


def test_gguf_tensors_and_quantized_types(tmp_path):
    gguf_dir = ROOT / "testdata" / "models" / "tiny-gguf"
    inner = MemoryTarget()
    publish(inner, gguf_dir)
    import gguf

    reader = gguf.GGUFReader(str(gguf_dir / "model.gguf"))
    with open_model(inner, "v1", cache=tmp_path / "cache") as h:
        refs = {t.name: t for t in h.tensors()}
        assert set(refs) == {t.name for t in reader.tensors}
        for t in reader.tensors:
            ref = refs[t.name]
            if ref.dtype == "F32":
                assert np.array_equal(h.tensor(t.name), np.asarray(t.data))
            else:
                with pytest.raises(UnsupportedError, match="raw=True"):
                    h.tensor(t.name)
                raw = h.tensor(t.name, raw=True)
                assert raw.shape == t.data.shape and np.array_equal(raw, t.data)


def test_safetensors_bf16_and_streaming_iteration(tmp_path):
    llm = ROOT / "testdata" / "models" / "tiny-llm"
    inner = MemoryTarget()
    publish(inner, llm)
    with open_model(inner, "v1", cache=tmp_path / "cache") as h:
        seen = []
        for ref, arr in h.iter_tensors():
            with safe_open(str(llm / ref.file), framework="numpy") as f:
                if ref.dtype == "BF16":
                    assert arr.dtype.name == "bfloat16"
                    original = (llm / ref.file).read_bytes()[ref.offset : ref.offset + ref.nbytes]
                    assert arr.tobytes() == original
                else:
                    assert np.array_equal(arr, f.get_tensor(ref.name))
            seen.append((ref.file, ref.offset))
        assert seen == sorted(seen)  # file order
        assert len(seen) == len(h.tensors())
        with pytest.raises(FormatError):
            h.tensors("config.json")
        with pytest.raises(NotFoundError):
            h.tensor("no.such.tensor")


@pytest.mark.parametrize("algorithm", ["blake3", "sha256"])
def test_open_reads_and_verifies_both_chunk_digest_algorithms(model_dir, tmp_path, algorithm):
    """New pushes write BLAKE3 chunk digests; models pushed before carry SHA-256 ones
    ("sha256" publishes the index as modelreg wrote it then): both are read, every
    chunk verified with its index's algorithm, and cached under that algorithm."""
    inner = MemoryTarget()
    publish(inner, model_dir, algorithm=algorithm)
    target = CountingTarget(inner)
    cache = tmp_path / "cache"
    original = (model_dir / "model.safetensors").read_bytes()
    with open_model(target, "v1", cache=cache) as h:
        index = h.index
        assert index is not None and index.algorithm == algorithm
        assert h.read("model.safetensors") == original
        assert h.read("model.safetensors", 70_000, 200_000) == original[70_000:270_000]
    stored = sorted((cache / CHUNK_STORE_DIR / algorithm).glob("*/*"))
    assert stored
    other = "sha256" if algorithm == "blake3" else "blake3"
    assert not list((cache / CHUNK_STORE_DIR / other).glob("*/*"))
    reference = {"blake3": lambda b: blake3.blake3(b).digest(), "sha256": _sha256}[algorithm]
    for path in stored:
        assert reference(path.read_bytes()).hex() == path.name

    target.tamper = flip_data_bytes
    with open_model(target, "v1", cache=tmp_path / "cache2") as h:
        with pytest.raises(IntegrityError, match=f"hash to {algorithm}:.*says {algorithm}:"):
            h.read("model.safetensors", 1000, 300_000)
        assert h.stats["integrityFailures"] >= 1


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
