"""modelreg.load: tensors straight into memory, verified, filtered, sharded, zero-copy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from modelreg.content.memory import MemoryTarget
from modelreg.errors import IntegrityError, NotFoundError, UnsupportedError
from modelreg.lazy import load as load_mod
from modelreg.lazy.load import iter_load, load_model
from tests.unit.lazy.helpers import CHUNK, CountingTarget, publish, write_model

ROOT = Path(__file__).resolve().parents[3]


def _published(
    tmp_path: Path, *, index: bool = True, algorithm: str = "blake3"
) -> tuple[CountingTarget, Path]:
    root = write_model(tmp_path / "model")
    inner = MemoryTarget()
    publish(inner, root, index=index, algorithm=algorithm)
    return CountingTarget(inner), root


def _data_bytes(target: CountingTarget, head: int) -> int:
    """Range bytes asked for at or after ``head`` (the tensor data, not the header)."""
    return sum(n for _d, off, n in target.range_calls if off >= head)


def _head(root: Path) -> int:
    raw = (root / "model.safetensors").read_bytes()
    return 8 + int.from_bytes(raw[:8], "little")


# the index's chunk digest algorithm: BLAKE3 (what push writes now), SHA-256 (indexes
# pushed before), or no index at all (whole-blob verification)
INDEXES = ["blake3", "sha256", None]


@pytest.mark.parametrize("index", INDEXES)
def test_load_equals_safetensors_load_file(tmp_path, index):
    target, root = _published(tmp_path, index=index is not None, algorithm=index or "blake3")
    got = load_model(target, "v1")
    want = load_file(str(root / "model.safetensors"))
    assert list(got) == sorted(want, key=list(want).index)  # file order
    assert set(got) == set(want)
    for name, arr in want.items():
        assert got[name].dtype == arr.dtype and np.array_equal(got[name], arr)
        assert got[name].flags.writeable


def test_tensor_filter_fetches_only_the_chunks_it_needs(tmp_path):
    target, root = _published(tmp_path)
    full = load_file(str(root / "model.safetensors"))
    got = load_model(target, "v1", tensors=["d.weight"])
    assert list(got) == ["d.weight"] and np.array_equal(got["d.weight"], full["d.weight"])
    assert _data_bytes(target, _head(root)) <= full["d.weight"].nbytes + 2 * CHUNK
    target.reset()
    got = load_model(target, "v1", tensors=lambda n: n.endswith(".bias"))
    assert list(got) == ["c.bias"]
    assert _data_bytes(target, _head(root)) <= 2 * CHUNK
    with pytest.raises(NotFoundError):
        load_model(target, "v1", tensors=["no.such"])
    with pytest.raises(NotFoundError):
        load_model(target, "v1", files=["*.gguf"])
    target.reset()
    assert load_model(target, "v1", files=["model.*"]).keys() == full.keys()


@pytest.mark.parametrize("index", INDEXES)
def test_a_tampered_chunk_is_never_handed_out(tmp_path, index):
    target, root = _published(tmp_path, index=index is not None, algorithm=index or "blake3")
    head = _head(root)
    offsets = {}
    header = json.loads((root / "model.safetensors").read_bytes()[8:head])
    for name, meta in header.items():
        if name != "__metadata__":
            offsets[name] = (head + meta["data_offsets"][0], head + meta["data_offsets"][1])
    bad = offsets["d.weight"][0] + 1000

    def flip(_desc, offset, data):
        if offset <= bad < offset + len(data):
            data = bytearray(data)
            data[bad - offset] ^= 0xFF
        return bytes(data)

    target.tamper = flip
    seen: list[str] = []
    gen = iter_load(target, "v1", concurrency=1, max_request=CHUNK)
    # an indexed read names the chunk digest it checked, in the index's algorithm
    with pytest.raises(IntegrityError, match=f"hash to {index}:" if index else None):
        for name, _arr in gen:
            seen.append(name)
    assert "d.weight" not in seen
    assert list(gen) == []  # nothing after the failure
    if not index:
        assert seen == []  # whole-blob verification: nothing before it either


def _tp_model(tmp_path: Path) -> tuple[CountingTarget, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    tensors = {
        "a.rows": rng.standard_normal((8, 16384)).astype(np.float32),  # 64 KiB rows
        "b.bias": rng.standard_normal((300,)).astype(np.float32),
        "c.odd": rng.standard_normal((7, 5, 9)).astype(np.float16),
    }
    root = tmp_path / "tp"
    root.mkdir()
    save_file(tensors, str(root / "model.safetensors"))
    inner = MemoryTarget()
    publish(inner, root)
    return CountingTarget(inner), tensors


@pytest.mark.parametrize("world", [2, 3])
def test_tensor_parallel_shards_equal_slices_and_fetch_only_them(tmp_path, world):
    target, full = _tp_model(tmp_path)
    for rank in range(world):
        rows = load_model(target, "v1", tensor_parallel=(rank, world))
        assert np.array_equal(rows["a.rows"], np.array_split(full["a.rows"], world, 0)[rank])
        assert np.array_equal(rows["b.bias"], full["b.bias"])  # 1-D: replicated
        assert np.array_equal(rows["c.odd"], full["c.odd"])
        split = {"a.rows": 1, "c.odd": 2}
        cols = load_model(target, "v1", tensor_parallel=(rank, world), split=split)
        assert np.array_equal(cols["a.rows"], np.array_split(full["a.rows"], world, 1)[rank])
        assert np.array_equal(cols["c.odd"], np.array_split(full["c.odd"], world, 2)[rank])
        by_fn = load_model(
            target, "v1", tensor_parallel=(rank, world), split=lambda r: 0 if r.shape else None
        )
        assert np.array_equal(by_fn["b.bias"], np.array_split(full["b.bias"], world)[rank])


def test_row_shard_fetches_its_bytes_and_at_most_a_chunk_more(tmp_path):
    target, full = _tp_model(tmp_path)
    shard = full["a.rows"].nbytes // 2
    target.reset()
    load_model(target, "v1", tensors=["a.rows"], tensor_parallel=(1, 2))
    big = [n for _d, _o, n in target.range_calls if n >= CHUNK]
    assert shard <= sum(big) <= shard + 2 * CHUNK
    target.reset()
    load_model(target, "v1", tensors=["a.rows"], tensor_parallel=(1, 2), split={"a.rows": 1})
    big = [n for _d, _o, n in target.range_calls if n >= CHUNK]
    # rows are 64 KiB (one chunk each) here, so a column shard needs every chunk:
    # a chunk is verified whole or not at all
    assert sum(big) <= full["a.rows"].nbytes + 2 * CHUNK


def test_gguf_where_the_dtype_maps(tmp_path):
    import gguf

    gguf_dir = ROOT / "testdata" / "models" / "tiny-gguf"
    inner = MemoryTarget()
    publish(inner, gguf_dir)
    reader = gguf.GGUFReader(str(gguf_dir / "model.gguf"))
    plain = {t.name: t for t in reader.tensors if t.tensor_type.name in ("F32", "F16")}
    quantized = [t.name for t in reader.tensors if t.name not in plain]
    assert plain and quantized
    got = load_model(inner, "v1", tensors=list(plain))
    for name, t in plain.items():
        assert np.array_equal(got[name], np.asarray(t.data))
    with pytest.raises(UnsupportedError, match="quantized"):
        load_model(inner, "v1", tensors=quantized[:1])


import torch  # noqa: E402  (dev installs torch==2.13.0: never skipped)


def test_torch_tensors_equal_and_share_the_buffer_they_were_read_into(tmp_path, monkeypatch):
    target, root = _published(tmp_path)
    allocated: dict[int, int] = {}
    original = load_mod._Loader._allocate

    def spy(self, nbytes):
        buf, view = original(self, nbytes)
        allocated[buf.data_ptr()] = nbytes
        return buf, view

    monkeypatch.setattr(load_mod._Loader, "_allocate", spy)
    got = load_model(target, "v1", framework="torch")
    want = load_file(str(root / "model.safetensors"))
    assert set(got) == set(want)
    for name, t in got.items():
        assert isinstance(t, torch.Tensor) and t.device.type == "cpu"
        assert np.array_equal(t.numpy(), want[name])
        # the tensor's storage is the very buffer the bytes were read into: no copy
        storage = t.untyped_storage()
        assert storage.data_ptr() in allocated and t.data_ptr() == storage.data_ptr()
        assert storage.nbytes() == allocated[storage.data_ptr()] == t.nbytes


def test_torch_bf16_model_equals_safetensors_torch(tmp_path):
    from safetensors.torch import load_file as torch_load_file

    llm = ROOT / "testdata" / "models" / "tiny-llm"
    inner = MemoryTarget()
    publish(inner, llm)
    got = dict(iter_load(inner, "v1", framework="torch"))
    want: dict[str, object] = {}
    for f in sorted(llm.glob("*.safetensors")):
        want.update(torch_load_file(str(f)))
    assert set(got) == set(want)
    for name, t in want.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t)


def test_large_numpy_tensors_live_in_mappings_of_their_own(tmp_path):
    """Big tensors get a private anonymous mapping (no huge-page advice, see
    load._allocate): still right, writable, independent of each other."""
    import mmap

    root = tmp_path / "big"
    root.mkdir()
    rng = np.random.default_rng(7)
    want = {
        "big.a": rng.standard_normal((512, 1024)).astype(np.float32),  # 2 MiB
        "big.b": rng.standard_normal((256, 1024)).astype(np.float32),  # 1 MiB
        "small": rng.standard_normal((16,)).astype(np.float32),
    }
    save_file(want, str(root / "model.safetensors"))
    (root / "config.json").write_text("{}")
    inner = MemoryTarget()
    publish(inner, root, index=True)
    got = load_model(inner, "v1")
    for name, arr in want.items():
        assert np.array_equal(got[name], arr)
        assert got[name].flags.writeable

    def owner(arr: np.ndarray) -> object:
        base: object = arr
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        return base.obj if isinstance(base, memoryview) else base

    assert isinstance(owner(got["big.a"]), mmap.mmap)
    assert isinstance(owner(got["big.b"]), mmap.mmap)
    assert not isinstance(owner(got["small"]), mmap.mmap)
    got["big.a"][0, 0] = 42.0
    assert got["big.b"][0, 0] == want["big.b"][0, 0] and got["big.a"][0, 0] == 42.0
