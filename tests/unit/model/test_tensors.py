"""Tensor listings read through range requests; diffs between versions; HF cache snapshots."""

from __future__ import annotations

import json
import os
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from modelreg.content import MemoryTarget, bytes_source
from modelreg.errors import InvalidInputError, UnsafeContentError
from modelreg.model.diff import diff_manifests
from modelreg.model.hf import detect_snapshot, require_snapshot
from modelreg.model.pack import pack_directory
from modelreg.model.tensors import BlobSource, describe_file, list_tensors
from modelreg.oci import Descriptor, Manifest
from modelreg.oci import mediatypes as mt
from tests.schemas import validate_model_config

TESTDATA = Path(__file__).resolve().parents[3] / "testdata"
MODELS = TESTDATA / "models"
HOSTILE = TESTDATA / "hostile"


class Counting(MemoryTarget):
    """A memory target that records every range read."""

    def __init__(self) -> None:
        super().__init__()
        self.ranges: list[tuple[str, int, int]] = []

    def fetch_range(self, desc, offset, length):
        self.ranges.append((str(desc.digest), offset, length))
        return super().fetch_range(desc, offset, length)


def stored(packed) -> Counting:
    target = Counting()
    source = packed.as_target()
    for layer in (packed.manifest.config, *packed.manifest.layers):
        with source.fetch(layer) as r:
            target.push(layer, bytes_source(r.read()))
    return target


@pytest.mark.parametrize("split", [False, True])
def test_list_tensors_of_sharded_checkpoint(split):
    packed = pack_directory(MODELS / "tiny-llm", split=split, part_size="16KiB")
    target = stored(packed)
    listing = list_tensors(target, packed.manifest)
    rows = listing.tensors
    assert len(rows) == 21
    assert {r["file"] for r in rows} == {
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    }
    embed = next(r for r in rows if r["name"] == "model.embed_tokens.weight")
    assert embed["dtype"] == "F16" and embed["shape"] == [320, 64] and embed["bytes"] == 40960
    assert listing.index is not None and listing.problems == []
    # headers only: at most 64 KiB per weight file, plus the small shard index
    assert listing.bytes_fetched <= 2 * 64 * 1024 + 2048
    assert all(f.split is split for f in listing.files)


def test_shard_index_mismatch_reported(tmp_path):
    root = tmp_path / "m"
    shutil.copytree(MODELS / "tiny-llm", root)
    index = json.loads((root / "model.safetensors.index.json").read_text())
    index["weight_map"]["ghost.weight"] = "model-00001-of-00002.safetensors"
    del index["weight_map"]["lm_head.weight"]
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    packed = pack_directory(root)
    listing = list_tensors(stored(packed), packed.manifest)
    assert any("ghost.weight" in p for p in listing.problems)
    assert any("lm_head.weight" in p and "omits" in p for p in listing.problems)


def test_gguf_onnx_and_pickles():
    for name, fmt in (("tiny-gguf", "gguf"), ("tiny-onnx", "onnx")):
        packed = pack_directory(MODELS / name)
        listing = list_tensors(stored(packed), packed.manifest)
        assert listing.files[0].format == fmt and listing.tensors
    packed = pack_directory(MODELS / "pickle-model")
    listing = list_tensors(stored(packed), packed.manifest)
    unsafe = {f.path: f.unsafe for f in listing.files}
    assert unsafe == {"model.pkl": True, "pytorch_model.bin": True}
    assert all(f.unsafe_reason for f in listing.files)


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in HOSTILE.iterdir() if p.suffix in (".safetensors", ".gguf", ".onnx")),
)
def test_hostile_headers_reported_with_bounded_reads(name):
    data = (HOSTILE / name).read_bytes()
    target = Counting()
    desc = Descriptor.for_bytes(mt.model_layer("weight"), data, {mt.ANN_FILEPATH: name})
    target.push(desc, bytes_source(data))
    tracemalloc.start()
    try:
        described = describe_file(BlobSource(target, desc), name)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert described.info is None and described.error
    assert peak < 32 * 1024 * 1024
    assert sum(length for _, _, length in target.ranges) <= max(len(data), 2 * 64 * 1024)


def model(root: Path, changed: frozenset[int] = frozenset(), extra: bool = False) -> Path:
    root.mkdir(parents=True)
    tensors = {}
    for i in range(12):
        rng = np.random.default_rng(i + (500 if i in changed else 0))
        tensors[f"layers.{i}.weight"] = rng.standard_normal((8, 512)).astype("f4")
    if extra:
        tensors["new.bias"] = np.zeros(16, dtype="f4")
    save_file(tensors, str(root / "model.safetensors"))
    (root / "config.json").write_text('{"model_type": "llama"}')
    (root / "README.md").write_text("v2" if changed else "v1")
    return root


def test_diff_split_versions(tmp_path):
    a = pack_directory(model(tmp_path / "a"), split=True, part_size="16KiB")
    b = pack_directory(
        model(tmp_path / "b", changed=frozenset({3, 9})), split=True, part_size="16KiB"
    )
    result = diff_manifests(stored(a), a.manifest, stored(b), b.manifest)
    status = {f.path: f.status for f in result.files}
    assert status == {
        "config.json": "unchanged",
        "README.md": "changed",
        "model.safetensors": "changed",
    }
    weights = next(f for f in result.files if f.path == "model.safetensors")
    changed = {t["name"] for t in weights.tensors if t["status"] == "changed"}
    assert changed == {"layers.3.weight", "layers.9.weight"}
    assert weights.tensor_summary == {"changed": 2, "unchanged": 10}
    assert result.shared > 0.7 * result.total_b and result.only_b < 0.3 * result.total_b
    doc = result.to_dict()
    assert doc["summary"] == {"added": 0, "removed": 0, "changed": 2, "unchanged": 1}


def test_diff_unsplit_reports_unknown_and_added(tmp_path):
    a = pack_directory(model(tmp_path / "a"))
    b = pack_directory(model(tmp_path / "b", changed=frozenset({1}), extra=True))
    result = diff_manifests(stored(a), a.manifest, stored(b), b.manifest)
    weights = next(f for f in result.files if f.path == "model.safetensors")
    assert weights.tensor_summary == {"added": 1, "unknown": 12}
    assert "--split" in (weights.note or "")


def hf_snapshot(tmp_path: Path) -> Path:
    src = TESTDATA / "hf-cache"
    shutil.copytree(src, tmp_path / "hf", symlinks=True)
    snaps = tmp_path / "hf" / "hub" / "models--tiny-org--tiny-llm" / "snapshots"
    return next(snaps.iterdir())


def test_hf_snapshot_detected_and_packed(tmp_path):
    snap = hf_snapshot(tmp_path)
    found = detect_snapshot(snap)
    assert found is not None and found.repo_id == "tiny-org/tiny-llm"
    assert found.revision == snap.name and found.kind == "models"
    packed = pack_directory(snap)
    config = json.loads(packed.config)
    validate_model_config(packed.config)
    assert config["descriptor"]["name"] == "tiny-org/tiny-llm"
    assert config["descriptor"]["revision"] == snap.name
    assert config["descriptor"]["sourceURL"] == "https://huggingface.co/tiny-org/tiny-llm"
    assert config["config"]["architecture"] == "llama"
    by_path = {f.path: f for f in packed.files}
    for name, f in by_path.items():
        assert f.source.parent == found.blobs  # followed into blobs/
        assert (snap / name).read_bytes() == f.source.read_bytes()


def test_hf_snapshot_links_only_into_its_blobs(tmp_path):
    snap = hf_snapshot(tmp_path)
    (tmp_path / "secret").write_text("s")
    os.symlink(tmp_path / "secret", snap / "leak.txt")
    with pytest.raises(UnsafeContentError, match="pointing outside"):
        pack_directory(snap)
    os.unlink(snap / "leak.txt")
    other = tmp_path / "hf" / "hub" / "models--other--x" / "blobs"
    other.mkdir(parents=True)
    (other / "abc").write_text("other repo")
    os.symlink(Path("..") / ".." / ".." / "models--other--x" / "blobs" / "abc", snap / "x.txt")
    with pytest.raises(UnsafeContentError, match="pointing outside"):
        pack_directory(snap)


def test_not_a_snapshot(tmp_path):
    assert detect_snapshot(MODELS / "tiny-llm") is None
    weird = tmp_path / "models--a--b--c--d" / "snapshots" / "rev"
    weird.mkdir(parents=True)
    (tmp_path / "models--a--b--c--d" / "blobs").mkdir()
    assert detect_snapshot(weird) is None
    with pytest.raises(InvalidInputError, match="not a Hugging Face cache snapshot"):
        require_snapshot(MODELS / "tiny-llm")


def test_listing_skips_archives():
    src = MemoryTarget()
    d = Descriptor.for_bytes(
        "application/vnd.cncf.model.weight.v1.tar", b"x" * 1024, {mt.ANN_FILEPATH: "w"}
    )
    src.push(d, bytes_source(b"x" * 1024))
    m = Manifest(
        config=Descriptor.for_bytes(mt.MODEL_CONFIG, b"{}"),
        layers=(d,),
        artifact_type=mt.MODEL_ARTIFACT,
    )
    listing = list_tensors(src, m)
    assert listing.tensors == [] and listing.skipped
