"""Tensor-aligned parts: boundaries, one-pass hashing, the digest cache, reassembly."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from modelreg.content import LayoutStore, MemoryTarget
from modelreg.errors import FormatError, IntegrityError, InvalidInputError
from modelreg.model import annotations as ann
from modelreg.model import split
from modelreg.model.digests import DigestCache
from modelreg.model.formats import BytesSource, parse_safetensors
from modelreg.model.pack import pack_directory
from modelreg.model.unpack import unpack
from modelreg.oci import Descriptor, Manifest
from modelreg.oci.manifest import empty_config
from tests.schemas import validate_manifest, validate_model_config

KIB = 1024


def tensors(changed: frozenset[int] = frozenset(), grow: int | None = None) -> dict:
    """40 float32 tensors of 4-32 KiB with Llama-like names; ``changed`` get other values."""
    out = {}
    for i in range(40):
        rows = 1 + (i % 8)
        if grow is not None and i == grow:
            rows += 3
        rng = np.random.default_rng(1000 + i + (7777 if i in changed else 0))
        out[f"model.layers.{i // 4}.w{i % 4}"] = rng.standard_normal((rows, 1024)).astype("f4")
    return out


def write_model(root: Path, **kwargs) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    save_file(tensors(**kwargs), str(root / "model.safetensors"), metadata={"format": "pt"})
    (root / "config.json").write_text('{"model_type": "llama"}')
    return root


def spans_of(path: Path, target: int) -> list[split.Span]:
    data = path.read_bytes()
    info = parse_safetensors(BytesSource(data))
    spans = split.plan_spans(info, len(data), target)
    assert spans is not None
    return spans


def test_spans_tile_the_file_and_hold_whole_tensors(tmp_path):
    root = write_model(tmp_path / "m")
    path = root / "model.safetensors"
    data = path.read_bytes()
    info = parse_safetensors(BytesSource(data))
    spans = split.plan_spans(info, len(data), 64 * KIB)
    assert spans is not None and len(spans) > 3
    assert spans[0] == split.Span(0, info.header_size)  # the header part
    assert spans[-1].end == len(data)
    assert all(a.end == b.offset for a, b in itertools.pairwise(spans))
    starts = {t.offset for t in info.tensors}
    assert all(s.offset in starts for s in spans[1:])  # never inside a tensor
    assert max(s.length for s in spans[1:]) <= 2 * 64 * KIB
    # same names and sizes -> same boundaries, whatever the values
    other = write_model(tmp_path / "other", changed=frozenset({3, 17}))
    assert spans_of(other / "model.safetensors", 64 * KIB) == spans


def test_a_tensor_that_grows_moves_only_nearby_boundaries(tmp_path):
    a = spans_of(write_model(tmp_path / "a") / "model.safetensors", 48 * KIB)
    b = spans_of(write_model(tmp_path / "b", grow=20) / "model.safetensors", 48 * KIB)
    lengths_a = [s.length for s in a[1:]]
    lengths_b = [s.length for s in b[1:]]
    differing = sum(1 for x, y in zip(lengths_a, lengths_b, strict=False) if x != y)
    assert len(lengths_a) == len(lengths_b) and differing <= 2


def test_big_tensors_stand_alone_and_small_files_stay_whole(tmp_path):
    root = write_model(tmp_path / "m")
    path = root / "model.safetensors"
    data = path.read_bytes()
    info = parse_safetensors(BytesSource(data))
    spans = split.plan_spans(info, len(data), 4 * KIB)  # every tensor >= 4 KiB
    assert spans is not None and len(spans) == 1 + len(info.tensors)
    assert split.plan_spans(info, len(data), len(data)) is None  # not bigger than a part


def test_hash_spans_one_pass(tmp_path):
    path = tmp_path / "f"
    payload = os.urandom(3 * 1024 * 1024 + 5)
    path.write_bytes(payload)
    spans = [
        split.Span(0, 10),
        split.Span(10, 2 * 1024 * 1024),
        split.Span(2 * 1024 * 1024 + 10, len(payload) - 2 * 1024 * 1024 - 10),
    ]
    whole, parts, read = split.hash_spans(path, spans)
    assert read == len(payload)
    assert whole.hex == hashlib.sha256(payload).hexdigest()
    for span, digest in zip(spans, parts, strict=True):
        assert digest.hex == hashlib.sha256(payload[span.offset : span.end]).hexdigest()
    with pytest.raises(InvalidInputError, match=r"changed size|grew"):
        split.hash_spans(path, spans[:2])


@pytest.mark.parametrize(
    ("text", "value"),
    [("64MiB", 64 << 20), ("256m", 256 << 20), ("1GB", 10**9), ("8192", 8192), ("4 KiB", 4096)],
)
def test_parse_size(text, value):
    assert split.parse_size(text) == value


@pytest.mark.parametrize("text", ["", "abc", "-5MiB", "12 parsecs", "1KiB"])
def test_parse_size_refuses(text):
    with pytest.raises(InvalidInputError):
        split.parse_size(text)


def test_split_pack_is_valid_modelpack_and_cached(tmp_path, monkeypatch):
    root = write_model(tmp_path / "m")
    calls = []
    real = split.hash_spans
    monkeypatch.setattr(split, "hash_spans", lambda *a: calls.append(a) or real(*a))
    with DigestCache(tmp_path / "d.sqlite") as cache:
        packed = pack_directory(root, split=True, part_size="64KiB", digest_cache=cache)
        again = pack_directory(root, split=True, part_size="64KiB", digest_cache=cache)
        assert len(calls) == 1  # the re-push hashed nothing
        assert again.manifest.raw == packed.manifest.raw
        # the whole-file digest was recorded too: an unsplit pack does not hash again
        import modelreg.model.digests as digests

        hashed = []
        monkeypatch.setattr(digests, "hash_file", lambda p, a="sha256": hashed.append(p))
        whole = pack_directory(root, digest_cache=cache)
        assert not [p for p in hashed if str(p).endswith(".safetensors")]
    validate_manifest(packed.manifest.raw)
    validate_model_config(packed.config)
    parts = [layer for layer in packed.manifest.layers if layer.media_type == ann.PART_MEDIA_TYPE]
    assert len(parts) > 3
    weights = next(f for f in whole.files if f.path == "model.safetensors")
    for i, part in enumerate(parts):
        a = part.annotations
        assert a[ann.ANN_PART_PATH] == "model.safetensors"
        assert a[ann.ANN_PART_INDEX] == str(i) and a[ann.ANN_PART_COUNT] == str(len(parts))
        assert a[ann.ANN_FILE_DIGEST] == str(weights.descriptor.digest)
        assert "org.opencontainers.image.title" not in a  # nobody writes a part as the file
        assert "org.cncf.model.filepath" not in a
    config = json.loads(packed.config)
    assert config["modelfs"]["diffIds"] == [str(x.digest) for x in packed.manifest.layers]


def _source(packed):
    src = MemoryTarget()
    target = packed.as_target()
    for layer in (packed.manifest.config, *packed.manifest.layers):
        with target.fetch(layer) as r:
            data = r.read()
        src._blobs[layer.digest] = data
    return src


def test_split_round_trip_byte_identical_and_cached(tmp_path):
    root = write_model(tmp_path / "m")
    packed = pack_directory(root, split=True, part_size="32KiB")
    src = _source(packed)
    cache = LayoutStore(tmp_path / "cache", fsync=False)
    result = unpack(src, packed.manifest, tmp_path / "out", cache=cache, fsync=False)
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (
        root / "model.safetensors"
    ).read_bytes()
    entry = next(f for f in result.files if f.path == "model.safetensors")
    assert (
        str(entry.descriptor.digest) == packed.manifest.layers[-1].annotations[ann.ANN_FILE_DIGEST]
    )
    # v2 with two tensors changed, v1's parts in the cache: only changed parts travel
    root2 = write_model(tmp_path / "m2", changed=frozenset({5, 30}))
    packed2 = pack_directory(root2, split=True, part_size="32KiB")
    old = {layer.digest for layer in packed.manifest.layers}
    new = [layer for layer in packed2.manifest.layers if layer.digest not in old]
    assert 1 <= len(new) <= 4
    again = unpack(_source(packed2), packed2.manifest, tmp_path / "out2", cache=cache, fsync=False)
    assert again.bytes_fetched == sum(layer.size for layer in new)
    assert (tmp_path / "out2" / "model.safetensors").read_bytes() == (
        root2 / "model.safetensors"
    ).read_bytes()


def test_tampered_part_fails_and_writes_nothing(tmp_path):
    root = write_model(tmp_path / "m")
    packed = pack_directory(root, split=True, part_size="32KiB")
    src = _source(packed)
    victim = [layer for layer in packed.manifest.layers if layer.media_type == ann.PART_MEDIA_TYPE][
        3
    ]
    data = bytearray(src._blobs[victim.digest])
    data[10] ^= 0xFF
    src._blobs[victim.digest] = bytes(data)
    out = tmp_path / "out"
    cache = LayoutStore(tmp_path / "cache", fsync=False)
    with pytest.raises(IntegrityError, match=r"part 4 of \d+ of 'model.safetensors'"):
        unpack(src, packed.manifest, out, cache=cache, fsync=False)
    assert not out.exists() or os.listdir(out) == []
    assert not cache.has_blob(victim.digest)


def _parts_manifest(parts: list[tuple[bytes, int, int]], whole: bytes, count: int | None = None):
    src = MemoryTarget()
    layers = []
    for data, index, offset in parts:
        a = {
            ann.ANN_PART_PATH: "w.safetensors",
            ann.ANN_PART_INDEX: str(index),
            ann.ANN_PART_COUNT: str(count if count is not None else len(parts)),
            ann.ANN_PART_OFFSET: str(offset),
            ann.ANN_FILE_DIGEST: "sha256:" + hashlib.sha256(whole).hexdigest(),
            ann.ANN_FILE_SIZE: str(len(whole)),
        }
        d = Descriptor.for_bytes(ann.PART_MEDIA_TYPE, data, a)
        src._blobs[d.digest] = data
        layers.append(d)
    return src, Manifest(config=empty_config(), layers=tuple(layers))


def test_malformed_parts_refused(tmp_path):
    whole = b"A" * 10 + b"B" * 10
    ok_parts = [(whole[:10], 0, 0), (whole[10:], 1, 10)]
    src, m = _parts_manifest(ok_parts, whole)
    unpack(src, m, tmp_path / "ok", fsync=False)
    assert (tmp_path / "ok" / "w.safetensors").read_bytes() == whole
    cases = {
        "gap": [(whole[:10], 0, 0), (whole[10:], 1, 11)],
        "overlap": [(whole[:10], 0, 0), (whole[10:], 1, 9)],
        "duplicate index": [(whole[:10], 0, 0), (whole[10:], 0, 10)],
        "missing part": [(whole[:10], 0, 0)],
    }
    for name, parts in cases.items():
        src, m = _parts_manifest(parts, whole, count=2)
        with pytest.raises(FormatError):
            unpack(src, m, tmp_path / name.replace(" ", "-"), fsync=False)
    # parts that verify but do not make the declared whole file
    src, m = _parts_manifest([(b"X" * 10, 0, 0), (whole[10:], 1, 10)], whole)
    with pytest.raises(IntegrityError, match="reassembled"):
        unpack(src, m, tmp_path / "liar", fsync=False)
    assert not (tmp_path / "liar").exists() or os.listdir(tmp_path / "liar") == []


def test_gguf_files_split_too(tmp_path):
    root = tmp_path / "g"
    root.mkdir()
    gguf = Path(__file__).resolve().parents[3] / "testdata" / "models" / "tiny-gguf" / "model.gguf"
    (root / "model.gguf").write_bytes(gguf.read_bytes())
    packed = pack_directory(root, split=True, part_size="8KiB")
    parts = [layer for layer in packed.manifest.layers if layer.media_type == ann.PART_MEDIA_TYPE]
    assert len(parts) > 2
    src = _source(packed)
    unpack(src, packed.manifest, tmp_path / "out", fsync=False)
    assert (tmp_path / "out" / "model.gguf").read_bytes() == gguf.read_bytes()


def test_header_length_prefix_is_its_own_part(tmp_path):
    root = write_model(tmp_path / "m")
    packed = pack_directory(root, split=True, part_size="32KiB")
    header = packed.manifest.layers[
        -len([x for x in packed.manifest.layers if x.media_type == ann.PART_MEDIA_TYPE])
    ]
    data = packed.as_target().fetch_range(header, 0, header.size)
    (n,) = struct.unpack("<Q", data[:8])
    assert header.size == 8 + n


def test_corrupt_cached_part_detected_evicted_then_refetched(tmp_path):
    """A cached part is copied without being hashed (the whole-file digest covers it);
    when the whole file does not match, the parts copied that way are checked, the
    bad one is evicted and fetched again, and the pull succeeds."""
    root = write_model(tmp_path / "m")
    packed = pack_directory(root, split=True, part_size="32KiB")
    src = _source(packed)
    cache = LayoutStore(tmp_path / "cache", fsync=False)
    first = unpack(src, packed.manifest, tmp_path / "first", cache=cache, fsync=False)
    parts = [layer for layer in packed.manifest.layers if layer.media_type == ann.PART_MEDIA_TYPE]
    victim = cache.blob_path(parts[2].digest)
    data = bytearray(victim.read_bytes())
    data[0] ^= 0xFF
    victim.write_bytes(bytes(data))
    out = tmp_path / "second"
    again = unpack(src, packed.manifest, out, cache=cache, fsync=False)
    assert again.bytes_fetched == parts[2].size
    assert again.bytes_from_cache == first.bytes_fetched - parts[2].size
    assert (out / "model.safetensors").read_bytes() == (root / "model.safetensors").read_bytes()
    assert cache.blob_path(parts[2].digest).read_bytes() != bytes(data)  # cached again, intact


def test_a_wrong_artifact_is_not_repaired(tmp_path):
    """When every part verifies but the file does not hash to its declared digest,
    nothing is fetched again: the artifact is wrong, and nothing is kept."""
    root = write_model(tmp_path / "m")
    packed = pack_directory(root, split=True, part_size="32KiB")
    raw = json.loads(packed.manifest.raw)
    for layer in raw["layers"]:
        if ann.ANN_FILE_DIGEST in layer.get("annotations", {}):
            layer["annotations"][ann.ANN_FILE_DIGEST] = "sha256:" + "0" * 64
    manifest = Manifest.parse(json.dumps(raw).encode())
    src = _source(packed)
    out = tmp_path / "out"
    with pytest.raises(IntegrityError, match="its parts declare sha256:0000"):
        unpack(src, manifest, out, cache=LayoutStore(tmp_path / "c", fsync=False), fsync=False)
    assert not out.exists() or os.listdir(out) == []


def test_previous_version_speeds_up_hashing_without_changing_results(tmp_path, monkeypatch):
    v1 = write_model(tmp_path / "v1")
    v2 = write_model(tmp_path / "v2", changed=frozenset({7, 33}))
    expected = pack_directory(v2, split=True, part_size="32KiB")  # no cache: plain hashing
    seen = []
    real = split.hash_spans
    monkeypatch.setattr(split, "hash_spans", lambda *a: seen.append(a) or real(*a))
    with DigestCache(tmp_path / "d.sqlite") as cache:
        pack_directory(v1, split=True, part_size="32KiB", digest_cache=cache)
        got = pack_directory(v2, split=True, part_size="32KiB", digest_cache=cache)
        assert got.manifest.raw == expected.manifest.raw
        ref_path, ref_digests = seen[-1][4]
        assert ref_path == str((v1 / "model.safetensors").resolve()) and ref_digests
        # a reference that changed since it was hashed is not used
        (v1 / "model.safetensors").write_bytes(b"changed")
        os.utime(v2 / "model.safetensors", ns=(1, 1))  # v2 looks new: hashed again
        again = pack_directory(v2, split=True, part_size="32KiB", digest_cache=cache)
        assert seen[-1][4] is None
        assert again.manifest.raw == expected.manifest.raw


def test_hash_spans_with_reference_mismatch_inside_a_span(tmp_path, monkeypatch):
    monkeypatch.setattr(split, "_BLOCK", 4096)
    old = os.urandom(5 * 4096 + 100)
    new = bytearray(old)
    new[3 * 4096 + 7] ^= 1  # in the third block of the second span
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(bytes(new))
    spans = [
        split.Span(0, 1000),
        split.Span(1000, 4 * 4096),
        split.Span(1000 + 4 * 4096, len(old) - 1000 - 4 * 4096),
    ]
    _, ref_digests, _ = split.hash_spans(tmp_path / "old", spans)
    whole, parts, _ = split.hash_spans(
        tmp_path / "new", spans, "sha256", None, (str(tmp_path / "old"), ref_digests)
    )
    plain_whole, plain_parts, _ = split.hash_spans(tmp_path / "new", spans)
    assert (whole, parts) == (plain_whole, plain_parts)
    assert parts[0] == ref_digests[0] and parts[2] == ref_digests[2]
    assert parts[1] != ref_digests[1]


def test_remembered_part_edited_in_place_is_repaired_from_the_source(tmp_path):
    """Reference mode: parts of an earlier pull's file are copied in the kernel, not
    hashed. A part edited in place with its mtime restored (identity unchanged) is
    caught by the whole-file digest, forgotten and fetched again in the same pull."""
    from modelreg.content.copies import Copies

    root = write_model(tmp_path / "m")
    packed = pack_directory(root, split=True, part_size="32KiB")
    parts = [layer for layer in packed.manifest.layers if layer.media_type == ann.PART_MEDIA_TYPE]
    src = _source(packed)
    cache = LayoutStore(tmp_path / "cache", fsync=False)
    with Copies(tmp_path / "copies.sqlite") as copies:
        first = tmp_path / "first"
        unpack(
            src,
            packed.manifest,
            first,
            cache=cache,
            fsync=False,
            cache_mode="reference",
            copies=copies,
        )
        assert not any(cache.has_blob(p.digest) for p in parts)  # remembered, not copied
        pulled = first / "model.safetensors"
        st = pulled.stat()
        offset = int(parts[3].annotations[ann.ANN_PART_OFFSET])
        with open(pulled, "r+b") as f:
            f.seek(offset + 5)
            byte = f.read(1)
            f.seek(offset + 5)
            f.write(bytes([byte[0] ^ 0xFF]))
        os.utime(pulled, ns=(st.st_atime_ns, st.st_mtime_ns))
        again = unpack(
            src,
            packed.manifest,
            tmp_path / "second",
            cache=cache,
            fsync=False,
            cache_mode="reference",
            copies=copies,
        )
        assert again.bytes_fetched == parts[3].size
        assert (tmp_path / "second" / "model.safetensors").read_bytes() == (
            root / "model.safetensors"
        ).read_bytes()
        # the edited range is forgotten; the new pull's file is remembered instead
        assert all(
            c.path != str(pulled.resolve())
            for c in copies.candidates(str(parts[3].digest), parts[3].size)
        )


def test_split_pull_with_fsync_flushes_along_the_way(tmp_path, monkeypatch):
    """With fsync, the staged file is flushed every SYNC_EVERY bytes as parts land
    (requests to the flushing thread), not only by the final fsync."""
    from modelreg.model.unpack import _blockio as blockio

    root = write_model(tmp_path / "m")
    packed = pack_directory(root, split=True, part_size="32KiB")
    monkeypatch.setattr(blockio, "SYNC_EVERY", 64 * 1024)
    kicks = []
    real = blockio.Syncer.kick
    monkeypatch.setattr(blockio.Syncer, "kick", lambda self: (kicks.append(1), real(self)))
    out = tmp_path / "out"
    unpack(_source(packed), packed.manifest, out, fsync=True)
    assert (out / "model.safetensors").read_bytes() == (root / "model.safetensors").read_bytes()
    size = (root / "model.safetensors").stat().st_size
    assert len(kicks) >= size // (64 * 1024) // 2
    kicks.clear()
    unpack(_source(packed), packed.manifest, tmp_path / "nosync", fsync=False)
    assert kicks == []
