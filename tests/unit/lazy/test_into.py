"""pull_into: configuration first, every byte verified, resumable by chunk."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from modelreg.content.memory import MemoryTarget
from modelreg.errors import IntegrityError, InvalidInputError
from modelreg.events import Event
from modelreg.lazy import open_model, pull_into
from modelreg.lazy.into import COMPLETE_MARKER, STAGING_DIR
from tests.unit.lazy.helpers import CountingTarget, publish


def same_tree(a, b):
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(
        p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != COMPLETE_MARKER
    )
    assert files_a == files_b
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_pull_into_orders_config_first_and_writes_a_marker(memory_model, model_dir, tmp_path):
    target, desc = memory_model
    events: list[Event] = []
    out = tmp_path / "out"
    result = pull_into(target, "v1", out, cache=tmp_path / "cache", progress=events.append)
    same_tree(model_dir, out)
    starts = [e.name for e in events if e.kind == "start"]
    assert starts[-1] == "model.safetensors"
    assert starts.index("config.json") < starts.index("model.safetensors")
    marker = json.loads((out / COMPLETE_MARKER).read_text())
    assert marker["digest"] == str(desc.digest)
    assert result.bytes_reused == 0
    assert result.bytes_fetched == sum(
        f.stat().st_size for f in model_dir.rglob("*") if f.is_file()
    )
    assert os.stat(out / "sub" / "run.sh").st_mode & 0o777 == 0o755
    assert not (out / STAGING_DIR).exists()
    # again: everything verified in place, nothing fetched
    target.reset()
    again = pull_into(target, "v1", out, cache=tmp_path / "cache")
    assert again.bytes_fetched == 0 and again.bytes_reused == result.bytes_fetched
    assert target.range_calls == []


def test_pull_into_resumes_a_partial_weight_file(memory_model, model_dir, tmp_path):
    target, _ = memory_model
    out = tmp_path / "out"
    pull_into(target, "v1", out, cache=tmp_path / "cache")
    weights = out / "model.safetensors"
    original = weights.read_bytes()
    # simulate an interruption: the file is partial (second half never written)
    partial = out / STAGING_DIR / "model.safetensors.partial"
    partial.parent.mkdir(parents=True)
    half = len(original) // 2
    partial.write_bytes(original[:half] + bytes(len(original) - half))
    weights.unlink()
    (out / COMPLETE_MARKER).unlink()
    target.reset()
    result = pull_into(target, "v1", out, cache=tmp_path / "cache")
    assert weights.read_bytes() == original
    fetched_weights = next(f for f in result.files if f["path"] == "model.safetensors")
    assert fetched_weights["reused"] >= half - 2 * 64 * 1024
    assert sum(n for _, _, n in target.range_calls) <= len(original) - half + 2 * 64 * 1024
    assert (out / COMPLETE_MARKER).exists()


def test_pull_into_repairs_a_corrupted_final_file(memory_model, tmp_path):
    target, _ = memory_model
    out = tmp_path / "out"
    pull_into(target, "v1", out, cache=tmp_path / "cache")
    weights = out / "model.safetensors"
    good = weights.read_bytes()
    data = bytearray(good)
    data[len(data) - 10] ^= 0xFF
    weights.write_bytes(bytes(data))
    target.reset()
    pull_into(target, "v1", out, cache=tmp_path / "cache")
    assert weights.read_bytes() == good
    assert len(target.range_calls) == 1  # only the bad chunk


def test_pull_into_refuses_tampered_bytes_and_leaves_no_final_file(memory_model, tmp_path):
    target, _ = memory_model
    target.tamper = lambda desc, off, data: bytes([data[0] ^ 1]) + data[1:]
    out = tmp_path / "out"
    with pytest.raises(IntegrityError):
        pull_into(target, "v1", out, cache=tmp_path / "cache")
    assert not (out / "config.json").exists() and not (out / COMPLETE_MARKER).exists()


def test_pull_into_without_index_and_with_include(model_dir, tmp_path):
    inner = MemoryTarget()
    publish(inner, model_dir, index=False)
    target = CountingTarget(inner)
    out = tmp_path / "out"
    result = pull_into(target, "v1", out, cache=tmp_path / "cache", include=["*.json"])
    assert sorted(f["path"] for f in result.files) == ["config.json", "tokenizer.json"]
    assert not (out / "model.safetensors").exists()
    with pytest.raises(InvalidInputError):
        pull_into(target, "v1", out, cache=tmp_path / "cache", include=["*.nothing"])
    full = pull_into(target, "v1", tmp_path / "full", cache=tmp_path / "cache")
    same_tree(model_dir, tmp_path / "full")
    assert full.bytes_fetched > 0


def test_pull_into_refuses_a_file_in_place_of_the_directory(memory_model, tmp_path):
    target, _ = memory_model
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InvalidInputError):
        pull_into(target, "v1", f, cache=tmp_path / "cache")


def test_handle_stats_are_json_friendly(memory_model, tmp_path):
    target, _ = memory_model
    with open_model(target, "v1", cache=tmp_path / "cache") as h:
        h.tensor("a.weight")
        json.dumps(h.stats)
        assert h.stats["chunksFetched"] > 0
        assert np.asarray(h.tensor("e.scale")).sum() == 45


def test_pull_into_refuses_archive_layers_instead_of_marking_a_partial_model_complete(
    tmp_path,
):
    import io
    import tarfile

    from modelreg import Client
    from tests.hostile.crafted import CraftedRegistry

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("tokenizer/vocab.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    title = "org.opencontainers.image.title"
    raw = "application/vnd.cncf.model.weight.v1.raw"
    tar_type = "application/vnd.cncf.model.weight.v1.tar"
    out = tmp_path / "out"
    with CraftedRegistry() as registry, Client() as client:
        layers = [(raw, b"w", {title: "w.bin"}), (tar_type, buf.getvalue(), {title: "tokenizer"})]
        registry.model("m", "v1", layers)
        ref = f"{registry.host}/m:v1"
        with pytest.raises(InvalidInputError, match="cannot unpack archives"):
            pull_into(client, ref, out, cache=tmp_path / "cache")
        assert not (out / COMPLETE_MARKER).exists()
        # an archive that --include leaves out is no obstacle
        pull_into(client, ref, out, include=["w.bin"], cache=tmp_path / "cache")
        assert (out / "w.bin").read_bytes() == b"w"
        assert (out / COMPLETE_MARKER).exists()
