"""modelreg.model.formats: header parsers checked against the real packages.

The real ``safetensors``, ``gguf`` and ``onnx`` packages are test-only
dependencies: they are the reference for what each fixture contains.
Nothing in these tests unpickles anything (a guard fixture makes sure).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelreg.errors import FormatError, ModelRegError, SizeLimitError, UnsafeContentError
from modelreg.model.formats import (
    UNSAFE_EXTENSIONS,
    BytesSource,
    FileSource,
    GGUFLimits,
    ModelFileInfo,
    RangeSource,
    detect_format,
    inspect_file,
    is_pickle_based,
    parse_gguf,
    parse_onnx,
    parse_safetensors,
    parse_sharded_index,
    scan_pickle,
)
from modelreg.model.formats.pickle_scan import looks_like_pickle
from modelreg.model.formats.safetensors import SAFETENSORS_DTYPE_BITS

TESTDATA = Path(__file__).resolve().parents[3] / "testdata"
MODELS = TESTDATA / "models"
HOSTILE = TESTDATA / "hostile"
TINY_LLM = MODELS / "tiny-llm"
SHARDS = sorted(TINY_LLM.glob("model-*.safetensors"))


class CountingSource:
    """A RangeSource that records every request (what a remote reader would send)."""

    def __init__(self, inner: RangeSource) -> None:
        self.inner = inner
        self.requests: list[tuple[int, int]] = []

    @property
    def size(self) -> int:
        return self.inner.size

    def read_at(self, offset: int, length: int) -> bytes:
        self.requests.append((offset, length))
        return self.inner.read_at(offset, length)

    @property
    def bytes_read(self) -> int:
        return sum(min(n, max(0, self.size - o)) for o, n in self.requests)


class HugeZeroSource:
    """Claims to be enormous; serves a given prefix then zeros. Records requests."""

    def __init__(self, prefix: bytes, size: int) -> None:
        self.prefix = prefix
        self._size = size
        self.requested = 0

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        self.requested += length
        assert length <= 64 * 1024 * 1024, f"parser asked for {length} bytes"
        end = min(offset + length, self._size)
        data = self.prefix[offset:end]
        return data + bytes(max(0, end - offset - len(data)))


@pytest.fixture(autouse=True)
def _no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test in which modelreg calls an unpickler."""

    def refuse(*args: object, **kwargs: object) -> Any:
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)


def inspect_path(path: Path, name: str | None = None) -> ModelFileInfo:
    with FileSource(path) as src:
        return inspect_file(src, name or path.name)


# ---------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------


def test_bytes_source_reads_and_eof() -> None:
    src = BytesSource(b"0123456789")
    assert src.size == 10
    assert src.read_at(2, 3) == b"234"
    assert src.read_at(8, 10) == b"89"
    assert src.read_at(20, 5) == b""
    with pytest.raises(ValueError):
        src.read_at(-1, 2)
    assert isinstance(src, RangeSource)


def test_file_source_context_manager(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"abcdef")
    with FileSource(p) as src:
        assert src.size == 6
        assert src.read_at(4, 100) == b"ef"
        assert isinstance(src, RangeSource)
    assert src.closed
    with pytest.raises(ValueError):
        src.read_at(0, 1)


# ---------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shard", SHARDS, ids=lambda p: p.name)
def test_safetensors_shard_matches_reference(shard: Path) -> None:
    import safetensors

    data = shard.read_bytes()
    info = parse_safetensors(BytesSource(data), name=shard.name)
    ref = dict(safetensors.deserialize(data))
    assert {t.name for t in info.tensors} == set(ref)
    for t in info.tensors:
        assert t.dtype == ref[t.name]["dtype"]
        assert list(t.shape) == list(ref[t.name]["shape"])
        assert data[t.offset : t.offset + t.nbytes] == bytes(ref[t.name]["data"])
    with safetensors.safe_open(str(shard), framework="np") as f:
        assert info.metadata == f.metadata()
    (n,) = struct.unpack("<Q", data[:8])
    assert info.header_size == 8 + n
    assert info.format == "safetensors" and not info.unsafe
    assert info.param_count == sum(t.numel for t in info.tensors)
    assert info.dtypes == tuple(sorted({t.dtype for t in info.tensors}))
    offsets = [t.offset for t in info.tensors]
    assert offsets == sorted(offsets)


def test_tiny_llm_checkpoint_totals() -> None:
    index = json.loads((TINY_LLM / "model.safetensors.index.json").read_text())
    infos = [inspect_path(p) for p in SHARDS]
    assert sum(t.nbytes for i in infos for t in i.tensors) == index["metadata"]["total_size"]
    config = json.loads((TINY_LLM / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    dtypes = {d for i in infos for d in i.dtypes}
    assert dtypes == {"BF16", "F16", "F32"}
    all_tensors = [t for i in infos for t in i.tensors]
    assert len(all_tensors) >= 12
    # bf16 holds most of the bytes: that is the checkpoint's precision
    assert infos[1].dominant_dtype == "BF16"


def test_safetensors_normal_header_is_one_request() -> None:
    for shard in SHARDS:
        with FileSource(shard) as f:
            counting = CountingSource(f)
            parse_safetensors(counting, name=shard.name)
            assert len(counting.requests) == 1
            assert counting.requests[0][0] == 0
        with FileSource(shard) as f:
            counting = CountingSource(f)
            inspect_file(counting, shard.name)  # detection + parse share the prefix
            assert len(counting.requests) == 1


def _st_bytes(
    tensors: dict[str, tuple[str, list[int]]],
    *,
    meta: dict[str, str] | None = None,
    pad_header_to: int = 0,
) -> bytes:
    header: dict[str, Any] = {}
    if meta:
        header["__metadata__"] = meta
    pos = 0
    for name, (dtype, shape) in tensors.items():
        n = 1
        for d in shape:
            n *= d
        size = n * SAFETENSORS_DTYPE_BITS[dtype] // 8
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + size]}
        pos += size
    raw = json.dumps(header).encode()
    raw += b" " * max(0, pad_header_to - len(raw))
    return struct.pack("<Q", len(raw)) + raw + bytes(pos)


def test_safetensors_large_header_is_two_requests() -> None:
    tensors = {f"model.layers.{i}.weight": ("F16", [2, 2]) for i in range(6000)}
    data = _st_bytes(tensors)
    n = struct.unpack("<Q", data[:8])[0]
    assert n > 200_000
    counting = CountingSource(BytesSource(data))
    info = parse_safetensors(counting)
    assert len(info.tensors) == 6000
    assert len(counting.requests) == 2
    first, second = counting.requests
    assert first == (0, 64 * 1024)
    assert second == (64 * 1024, 8 + n - 64 * 1024)  # exactly what was missing
    assert counting.bytes_read == 8 + n


def test_safetensors_all_reference_dtypes_accepted() -> None:
    import safetensors

    for dtype, bits in SAFETENSORS_DTYPE_BITS.items():
        shape = [8] if bits < 8 else [3]
        data = _st_bytes({"x": (dtype, shape)})
        info = parse_safetensors(BytesSource(data))
        assert info.tensors[0].nbytes == shape[0] * bits // 8
        # the reference accepts the same header
        assert dict(safetensors.deserialize(data))["x"]["dtype"] == dtype


def test_safetensors_edge_cases_accepted_like_reference() -> None:
    import safetensors

    cases = [
        _st_bytes({}),  # no tensor at all
        _st_bytes({"scalar": ("F32", [])}),
        _st_bytes({"empty": ("F32", [0, 3]), "x": ("F32", [2])}),
        _st_bytes({"x": ("F32", [2])}, pad_header_to=64),  # trailing spaces (alignment)
        _st_bytes({"x": ("F32", [2])}, meta={"format": "pt"}),
    ]
    for data in cases:
        info = parse_safetensors(BytesSource(data))
        ref = dict(safetensors.deserialize(data))
        assert {t.name for t in info.tensors} == set(ref)
    # extra keys in a tensor entry are ignored, as by the reference; null metadata is none
    raw = json.dumps(
        {"__metadata__": None, "x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "z": 1}}
    )
    data = struct.pack("<Q", len(raw)) + raw.encode() + b"\x01"
    assert parse_safetensors(BytesSource(data)).tensors[0].nbytes == 1
    assert safetensors.deserialize(data)


def test_safetensors_header_cap_is_configurable() -> None:
    data = _st_bytes({"x": ("F32", [2])})
    with pytest.raises(SizeLimitError, match="over the 10-byte cap"):
        parse_safetensors(BytesSource(data), max_header_size=10)


def test_safetensors_huge_claims_never_read() -> None:
    # a "remote" file claiming 1 PiB with a 2**60 header length: refused after one request
    src = HugeZeroSource(struct.pack("<Q", 2**60) + b"{}", size=2**50)
    with pytest.raises(SizeLimitError):
        parse_safetensors(src)
    assert src.requested <= 64 * 1024
    # header length under the cap but past the end of a small file: no read of N bytes
    src2 = HugeZeroSource(struct.pack("<Q", 90_000_000) + b"{}", size=1000)
    with pytest.raises(FormatError, match="only 992 bytes follow"):
        parse_safetensors(src2)
    assert src2.requested <= 1000


def test_safetensors_deeply_nested_json_is_format_error() -> None:
    raw = b"[" * 100_000 + b"]" * 100_000
    data = struct.pack("<Q", len(raw)) + raw
    with pytest.raises(FormatError):
        parse_safetensors(BytesSource(data))


# ---------------------------------------------------------------------------------------
# sharded index
# ---------------------------------------------------------------------------------------


def test_sharded_index_matches_shards() -> None:
    raw = (TINY_LLM / "model.safetensors.index.json").read_bytes()
    mapping = parse_sharded_index(raw)
    assert mapping == json.loads(raw)["weight_map"]
    for shard in set(mapping.values()):
        info = inspect_path(TINY_LLM / shard)
        assert {t.name for t in info.tensors} == {k for k, v in mapping.items() if v == shard}


@pytest.mark.parametrize(
    ("weight_map", "error"),
    [
        ({"a": "../model.safetensors"}, UnsafeContentError),
        ({"a": "/etc/passwd"}, UnsafeContentError),
        ({"a": "shards\\model.safetensors"}, UnsafeContentError),
        ({"a": "C:model.safetensors"}, UnsafeContentError),
        ({"a": "x/../../y.safetensors"}, UnsafeContentError),
        ({"a": "./x.safetensors"}, UnsafeContentError),
        ({"a": ""}, UnsafeContentError),
        ({"a": "x\x00.safetensors"}, UnsafeContentError),
        ({"a": 3}, FormatError),
        ({}, FormatError),
    ],
)
def test_sharded_index_refuses_bad_shard_names(
    weight_map: dict[str, Any], error: type[Exception]
) -> None:
    raw = json.dumps({"metadata": {"total_size": 8}, "weight_map": weight_map}).encode()
    with pytest.raises(error):
        parse_sharded_index(raw)


def test_sharded_index_other_failures() -> None:
    with pytest.raises(FormatError, match="more than once"):
        parse_sharded_index(b'{"weight_map": {"a": "x.safetensors", "a": "y.safetensors"}}')
    with pytest.raises(FormatError, match="not an object"):
        parse_sharded_index(b"[]")
    with pytest.raises(FormatError, match="not valid JSON"):
        parse_sharded_index(b'{"weight_map": ')
    with pytest.raises(FormatError, match="total_size"):
        parse_sharded_index(b'{"metadata": {"total_size": "big"}, "weight_map": {"a": "x"}}')
    with pytest.raises(SizeLimitError):
        parse_sharded_index(b'{"weight_map": {"a": "x"}}', max_size=10)
    assert parse_sharded_index(b'{"weight_map": {"a": "sub/x.safetensors"}}') == {
        "a": "sub/x.safetensors"
    }


# ---------------------------------------------------------------------------------------
# GGUF
# ---------------------------------------------------------------------------------------


def test_gguf_matches_reference() -> None:
    import gguf

    path = MODELS / "tiny-gguf" / "model.gguf"
    info = inspect_path(path)
    reader = gguf.GGUFReader(str(path))
    assert [t.name for t in info.tensors] == [t.name for t in reader.tensors]
    for mine, ref in zip(info.tensors, reader.tensors, strict=True):
        assert mine.dtype == ref.tensor_type.name
        assert mine.shape == tuple(reversed([int(d) for d in ref.shape]))
        assert mine.nbytes == ref.n_bytes
        assert mine.offset == ref.data_offset
        assert mine.numel == ref.n_elements
    assert info.header_size == reader.data_offset
    assert info.architecture == "llama"
    assert info.quantization == "Q4_0,Q8_0"
    assert info.dtypes == ("F32", "Q4_0", "Q8_0")
    assert info.param_count == sum(t.n_elements for t in reader.tensors)
    assert info.metadata["GGUF.version"] == 3
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        value = info.metadata[key]
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            assert value == f"[{len(field.data)} x {field.types[-1].name.lower()}]"
        else:
            assert value == field.contents(), key
    assert not info.unsafe


def test_gguf_header_is_one_small_request() -> None:
    path = MODELS / "tiny-gguf" / "model.gguf"
    with FileSource(path) as f:
        counting = CountingSource(f)
        info = inspect_file(counting, path.name)
    assert len(counting.requests) == 1
    assert counting.bytes_read <= 64 * 1024
    assert info.header_size < 64 * 1024


def _big_vocab_gguf(path: Path, n_vocab: int) -> None:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_token_list([f"token-{i:06d}" for i in range(n_vocab)])
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types([1] * n_vocab)
    w.add_tensor("token_embd.weight", np.zeros((n_vocab, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_big_vocab_few_requests_skips_fixed_arrays(tmp_path: Path) -> None:
    path = tmp_path / "vocab.gguf"
    n_vocab = 150_000
    _big_vocab_gguf(path, n_vocab)
    with FileSource(path) as f:
        counting = CountingSource(f)
        info = parse_gguf(counting, name="vocab.gguf")
    assert info.metadata["tokenizer.ggml.tokens"] == f"[{n_vocab} x string]"
    assert info.metadata["tokenizer.ggml.scores"] == f"[{n_vocab} x float32]"
    assert info.tensors[0].shape == (n_vocab, 8)
    # token strings must be walked (~2.6 MB); requests grow so there are few of them
    assert len(counting.requests) <= 12
    # the 1.2 MB of scores/types is skipped: far less than header_size is fetched twice
    assert counting.bytes_read < info.header_size + 2 * 1024 * 1024
    assert counting.bytes_read < path.stat().st_size


def test_gguf_limits_are_configurable(tmp_path: Path) -> None:
    path = MODELS / "tiny-gguf" / "model.gguf"
    data = path.read_bytes()
    with pytest.raises(SizeLimitError, match="tensors"):
        parse_gguf(BytesSource(data), limits=GGUFLimits(max_tensors=4))
    with pytest.raises(SizeLimitError, match="metadata entries"):
        parse_gguf(BytesSource(data), limits=GGUFLimits(max_kv=4))
    with pytest.raises(SizeLimitError, match="items"):
        parse_gguf(BytesSource(data), limits=GGUFLimits(max_array_len=100))
    with pytest.raises(SizeLimitError, match="header"):
        parse_gguf(BytesSource(data), limits=GGUFLimits(max_header_bytes=1024))


def test_gguf_big_endian_is_read(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "be.gguf"
    w = gguf.GGUFWriter(str(path), "llama", endianess=gguf.GGUFEndian.BIG)
    w.add_uint32("llama.context_length", 77)
    w.add_tensor("w", np.zeros(32, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert path.read_bytes()[4:8] == b"\x00\x00\x00\x03"
    info = inspect_path(path)
    assert info.metadata["llama.context_length"] == 77
    assert info.metadata["general.architecture"] == "llama"
    assert info.tensors[0].shape == (32,) and info.tensors[0].nbytes == 128


def test_gguf_huge_claims_never_read() -> None:
    # a remote 1 PiB GGUF whose first key claims to be 2**62 bytes long
    head = b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + struct.pack("<Q", 2**62)
    src = HugeZeroSource(head, size=2**50)
    with pytest.raises(SizeLimitError):
        parse_gguf(src)
    assert src.requested <= 64 * 1024


# ---------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------


def test_onnx_matches_reference() -> None:
    import onnx

    path = MODELS / "tiny-onnx" / "model.onnx"
    data = path.read_bytes()
    info = inspect_path(path)
    model = onnx.load_model_from_string(data)
    inits = model.graph.initializer
    assert [t.name for t in info.tensors] == [t.name for t in inits]
    for mine, ref in zip(info.tensors, inits, strict=True):
        assert mine.shape == tuple(ref.dims)
        assert mine.dtype == onnx.TensorProto.DataType.Name(ref.data_type)
        if ref.HasField("raw_data"):
            assert data[mine.offset : mine.offset + mine.nbytes] == ref.raw_data
        arr = onnx.numpy_helper.to_array(ref)
        assert mine.nbytes == arr.nbytes
    assert info.metadata["ir_version"] == model.ir_version
    assert info.metadata["producer_name"] == model.producer_name == "modelreg-testdata"
    assert info.metadata["opset.ai.onnx"] == 17
    assert info.metadata["graph_name"] == model.graph.name
    assert info.metadata["node_count"] == len(model.graph.node)
    assert info.metadata["metadata_props.license"] == "apache-2.0"
    assert info.param_count == sum(
        onnx.numpy_helper.to_array(t).size for t in model.graph.initializer
    )
    assert not info.unsafe


def test_onnx_external_data_locations() -> None:
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    d = MODELS / "tiny-onnx-external"
    info = inspect_path(d / "model.onnx")
    model = onnx.load(str(d / "model.onnx"), load_external_data=False)
    blob = (d / "model.onnx.data").read_bytes()
    external = {t.name: t for t in model.graph.initializer if uses_external_data(t)}
    assert external, "fixture should have external tensors"
    for t in info.tensors:
        if t.name in external:
            ref = ExternalDataInfo(external[t.name])
            assert t.location == ref.location == "model.onnx.data"
            assert t.offset == ref.offset
            assert t.nbytes == ref.length
            assert len(blob[t.offset : t.offset + t.nbytes]) == t.nbytes
        else:
            assert t.location is None
    full = onnx.load(str(d / "model.onnx"))
    by_name = {t.name: onnx.numpy_helper.to_array(t) for t in full.graph.initializer}
    for t in info.tensors:
        if t.location is not None:
            assert blob[t.offset : t.offset + t.nbytes] == by_name[t.name].tobytes()


def test_onnx_skips_payloads(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    big = [
        numpy_helper.from_array(np.zeros((512, 512), dtype=np.float32), f"w{i}") for i in range(4)
    ]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=big,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    data = model.SerializeToString()
    counting = CountingSource(BytesSource(data))
    info = parse_onnx(counting)
    assert [t.nbytes for t in info.tensors] == [512 * 512 * 4] * 4
    assert counting.bytes_read < 5 * 64 * 1024 < len(data) // 10
    assert len(counting.requests) <= 5
    with pytest.raises(SizeLimitError, match="scan more than"):
        parse_onnx(BytesSource(data), max_scan=8)
    assert onnx.load_model_from_string(data).graph.initializer[0].name == "w0"


# ---------------------------------------------------------------------------------------
# pickle-based files
# ---------------------------------------------------------------------------------------


def test_pytorch_zip_is_unsafe_and_lists_imports() -> None:
    info = inspect_path(MODELS / "pickle-model" / "pytorch_model.bin")
    assert info.format == "pytorch"
    assert info.unsafe
    assert info.unsafe_reason is not None and "archive/data.pkl" in info.unsafe_reason
    imports = str(info.metadata["pickle_imports"])
    assert "torch._utils._rebuild_tensor_v2" in imports
    assert "collections.OrderedDict" in imports
    assert "pickle_unexpected_imports" not in info.metadata
    assert info.tensors == ()


def _torch_like_zip(*, compress: int = zipfile.ZIP_STORED, big: int = 0) -> bytes:
    pkl = (MODELS / "pickle-model" / "pytorch_model.bin").read_bytes()
    with zipfile.ZipFile(io.BytesIO(pkl)) as src:
        data_pkl = src.read("archive/data.pkl")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(
            zipfile.ZipInfo("archive/data.pkl", (1980, 1, 1, 0, 0, 0)),
            data_pkl,
            compress_type=compress,
        )
        zf.writestr("archive/data/0", bytes(big))
        zf.writestr("archive/version", b"3\n")
    return buf.getvalue()


def _to_zip64(data: bytes) -> bytes:
    """Rewrite a small zip's end record as ZIP64 (end record + locator)."""
    eocd = data.rindex(b"PK\x05\x06")
    _, _, _, total, cd_size, cd_offset, _ = struct.unpack_from("<HHHHIIH", data, eocd + 4)
    rec64 = b"PK\x06\x06" + struct.pack(
        "<QHHIIQQQQ", 44, 45, 45, 0, 0, total, total, cd_size, cd_offset
    )
    locator = b"PK\x06\x07" + struct.pack("<IQI", 0, eocd, 1)
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return data[:eocd] + rec64 + locator + end


def test_zip_directory_with_prepended_data() -> None:
    from modelreg.model.formats._zip import read_zip_directory

    data = b"#!/bin/sh\nexit 0\n" * 20 + _torch_like_zip()
    entries = read_zip_directory(BytesSource(data), name="sfx")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert [e.name for e in entries] == zf.namelist()
        for e, ref in zip(entries, zf.infolist(), strict=True):
            assert e.header_offset == ref.header_offset
    # loaders (torch, numpy) look for the zip magic at offset 0, and so does detection
    assert detect_format("checkpoint.bin", data[:4096], BytesSource(data)) is None


@pytest.mark.parametrize("variant", ["deflated", "zip64", "large"])
def test_pytorch_zip_variants(variant: str) -> None:
    if variant == "deflated":
        data = _torch_like_zip(compress=zipfile.ZIP_DEFLATED)
    elif variant == "zip64":
        data = _to_zip64(_torch_like_zip())
    else:
        data = _torch_like_zip(big=3 * 1024 * 1024)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:  # the stdlib reads it too
        assert "archive/data.pkl" in zf.namelist()
    counting = CountingSource(BytesSource(data))
    info = inspect_file(counting, "checkpoint.bin")
    assert info.format == "pytorch" and info.unsafe
    assert "torch._utils._rebuild_tensor_v2" in str(info.metadata["pickle_imports"])
    # prefix, tail (+ ZIP64 record) at most: the directory and data.pkl come from cache
    assert len(counting.requests) <= 3
    assert counting.bytes_read <= 3 * 64 * 1024 + 100
    assert is_pickle_based("checkpoint.bin", data[:4096], BytesSource(data))


def test_small_pickle_zip_is_one_request() -> None:
    path = MODELS / "pickle-model" / "pytorch_model.bin"
    with FileSource(path) as f:
        counting = CountingSource(f)
        inspect_file(counting, path.name)
    assert len(counting.requests) == 1


def test_raw_pickle_is_unsafe() -> None:
    info = inspect_path(MODELS / "pickle-model" / "model.pkl")
    assert info.format == "pickle" and info.unsafe
    assert info.metadata["pickle_protocol"] == 4
    assert "protocol 4" in (info.unsafe_reason or "")


@pytest.mark.parametrize("name", ["pickle-os-system.pkl", "pickle-os-system-named.bin"])
def test_malicious_pickle_import_reported(name: str) -> None:
    info = inspect_path(HOSTILE / name)
    assert info.unsafe
    assert info.metadata["pickle_unexpected_imports"] == "os.system"
    assert "os.system" in (info.unsafe_reason or "")


def test_malicious_torch_zip_reported() -> None:
    info = inspect_path(HOSTILE / "torch-zip-posix-system.bin")
    assert info.format == "pytorch" and info.unsafe
    assert info.metadata["pickle_unexpected_imports"] == "posix.system"


def test_scan_pickle_of_real_pickles() -> None:
    data = pickle.dumps({"a": [1, 2], "b": {"c": 3.5}}, protocol=5)
    scan = scan_pickle(data)
    assert scan.protocol == 5 and scan.complete and scan.imports == ()
    data = pickle.dumps(io.BytesIO, protocol=4)  # STACK_GLOBAL with memo
    assert scan_pickle(data).imports == ("_io.BytesIO",)
    data = pickle.dumps(io.BytesIO, protocol=2)  # GLOBAL
    assert scan_pickle(data).imports == ("_io.BytesIO",)
    data = pickle.dumps(io.BytesIO, protocol=0)
    assert scan_pickle(data).imports == ("_io.BytesIO",)
    # truncated or garbage input ends the scan quietly
    assert not scan_pickle(data[:5]).complete
    assert scan_pickle(b"\x80\x04\xff\xff").imports == ()


def test_pickle_heuristic_for_headerless_pickles() -> None:
    assert looks_like_pickle(pickle.dumps({"a": [1, 2, 3]}, protocol=0))
    assert looks_like_pickle(pickle.dumps({"a": [1, 2, 3]}, protocol=1))
    assert not looks_like_pickle(bytes(1000))
    assert not looks_like_pickle(b'{"json": true}')
    assert not looks_like_pickle(bytes(range(256)) * 4)


def test_is_pickle_based_rule() -> None:
    zip_pkl = (MODELS / "pickle-model" / "pytorch_model.bin").read_bytes()
    npz = (MODELS / "numpy-weights" / "weights.npz").read_bytes()
    st = SHARDS[0].read_bytes()
    raw2 = pickle.dumps([1, 2], protocol=2)
    raw0 = pickle.dumps({"k": [1, 2, 3]}, protocol=0)
    plain = bytes(range(256)) * 16

    # content says pickle: unsafe whatever the name
    assert is_pickle_based("weights.bin", zip_pkl[:4096])
    assert is_pickle_based("weights.bin", zip_pkl, BytesSource(zip_pkl))
    assert is_pickle_based("model.safetensors", raw2)
    assert is_pickle_based("model.onnx", raw2)
    assert is_pickle_based("weights.bin", raw0)  # protocol 0 via opcode decoding
    assert is_pickle_based("x.npy", (HOSTILE / "numpy-object-array.npy").read_bytes())
    # content positively safe: safe whatever the name
    assert not is_pickle_based("model.pt", st[:4096])
    assert not is_pickle_based("model.bin", st[:4096])
    assert not is_pickle_based("weights.npz", npz, BytesSource(npz))
    assert not is_pickle_based("w.npy", (MODELS / "numpy-weights" / "w.npy").read_bytes())
    # .bin: plain binary is safe, unreadable is not
    assert not is_pickle_based("tokenizer.bin", plain)
    assert is_pickle_based("tokenizer.bin", b"")
    # zip .bin whose directory is not available: fail safe; with it: decided by members
    npz_named_bin = npz
    assert is_pickle_based("weights.bin", npz_named_bin[:4096])
    assert not is_pickle_based("weights.bin", npz_named_bin, BytesSource(npz_named_bin))
    # a Keras-looking zip that also carries a pickle
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for member in ("config.json", "metadata.json", "model.weights.h5", "assets/extra.pkl"):
            zf.writestr(member, b"{}")
    keras = buf.getvalue()
    assert detect_format("m.keras", keras, BytesSource(keras)) == "keras"
    assert is_pickle_based("m.keras", keras, BytesSource(keras))
    assert inspect_file(BytesSource(keras), "m.keras").unsafe
    # other unsafe extensions with unrecognised content: unsafe by name
    for ext in sorted(UNSAFE_EXTENSIONS - {".bin"}):
        assert is_pickle_based("model" + ext, plain), ext
    assert not is_pickle_based("model.dat", plain)
    assert is_pickle_based("model.pkl", b"")
    assert not is_pickle_based("README.md", b"")


def test_unsafe_extension_with_unknown_content() -> None:
    info = inspect_file(BytesSource(bytes(range(256)) * 4), "model.ckpt")
    assert info.format == "pytorch" and info.unsafe
    assert "fail safe" in (info.unsafe_reason or "")
    with pytest.raises(FormatError, match="not a recognised"):
        inspect_file(BytesSource(bytes(range(256)) * 4), "blob.bin")


# ---------------------------------------------------------------------------------------
# numpy
# ---------------------------------------------------------------------------------------


def test_numpy_fixtures() -> None:
    import numpy as np

    info = inspect_path(MODELS / "numpy-weights" / "w.npy")
    arr = np.load(MODELS / "numpy-weights" / "w.npy", allow_pickle=False)
    t = info.tensors[0]
    assert (info.format, t.shape, t.nbytes, t.dtype) == ("numpy", arr.shape, arr.nbytes, "<f4")
    raw = (MODELS / "numpy-weights" / "w.npy").read_bytes()
    assert raw[t.offset : t.offset + t.nbytes] == arr.tobytes()
    npz_path = MODELS / "numpy-weights" / "weights.npz"
    info = inspect_path(npz_path)
    with np.load(npz_path, allow_pickle=False) as ref:
        assert {t.name: (t.shape, t.nbytes) for t in info.tensors} == {
            k: (ref[k].shape, ref[k].nbytes) for k in ref.files
        }
        raw = npz_path.read_bytes()
        for t in info.tensors:
            assert raw[t.offset : t.offset + t.nbytes] == ref[t.name].tobytes()
    assert not info.unsafe
    obj = inspect_path(HOSTILE / "numpy-object-array.npy")
    assert obj.unsafe and "pickle" in (obj.unsafe_reason or "")


def test_compressed_npz() -> None:
    import numpy as np

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in (("a", np.arange(1000, dtype="<f8")), ("b", np.ones((3, 4), "<i2"))):
            f = io.BytesIO()
            np.lib.format.write_array(f, arr, allow_pickle=False)
            zf.writestr(f"{name}.npy", f.getvalue())
    info = inspect_file(BytesSource(buf.getvalue()), "w.npz")
    assert {t.name: (t.shape, t.nbytes, t.offset) for t in info.tensors} == {
        "a": ((1000,), 8000, -1),
        "b": ((3, 4), 24, -1),
    }
    assert not info.unsafe


def test_onnx_string_and_typed_initializers() -> None:
    import onnx
    from onnx import TensorProto, helper

    inits = [
        helper.make_tensor("s", TensorProto.STRING, [2], [b"ab", b"cde"]),
        helper.make_tensor("f", TensorProto.FLOAT, [2, 2], [1.0, 2.0, 3.0, 4.0]),
        helper.make_tensor("e", TensorProto.FLOAT, [0], []),
        helper.make_tensor("i4", TensorProto.INT4, [3], [1, 2, 3]),
    ]
    graph = helper.make_graph([], "g", [], [], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    data = model.SerializeToString()
    info = parse_onnx(BytesSource(data))
    got = {t.name: (t.dtype, t.shape, t.nbytes) for t in info.tensors}
    assert got == {
        "s": ("STRING", (2,), 5),
        "f": ("FLOAT", (2, 2), 16),
        "e": ("FLOAT", (0,), 0),
        "i4": ("INT4", (3,), 2),
    }
    f = next(t for t in info.tensors if t.name == "f")
    assert struct.unpack("<4f", data[f.offset : f.offset + 16]) == (1.0, 2.0, 3.0, 4.0)
    assert onnx.load_model_from_string(data).graph.initializer[1].name == "f"
    with pytest.raises(FormatError, match="no graph"):
        parse_onnx(BytesSource(b"\x08\x08"))
    with pytest.raises(FormatError, match="no ir_version"):
        parse_onnx(BytesSource(b""))


# ---------------------------------------------------------------------------------------
# detection
# ---------------------------------------------------------------------------------------


def test_detect_format_by_magic_then_extension() -> None:
    st = SHARDS[0].read_bytes()
    assert detect_format("anything", st[:4096]) == "safetensors"
    assert detect_format("model.gguf", st[:4096]) == "safetensors"  # magic wins
    assert detect_format("x", b"GGUF\x03\x00\x00\x00") == "gguf"
    assert detect_format("x", b"\x93NUMPY\x01\x00") == "numpy"
    assert detect_format("x", b"\x89HDF\r\n\x1a\n" + bytes(8)) == "hdf5"
    assert detect_format("x", b"\x80\x04\x95") == "pickle"
    assert detect_format("x", b"\x1c\x00\x00\x00TFL3") == "tflite"
    onnx_bytes = (MODELS / "tiny-onnx" / "model.onnx").read_bytes()
    assert detect_format("model.bin", onnx_bytes[:64]) == "onnx"
    zip_pkl = (MODELS / "pickle-model" / "pytorch_model.bin").read_bytes()
    assert detect_format("blob", zip_pkl[:4096]) == "pytorch"
    assert detect_format("blob", zip_pkl, BytesSource(zip_pkl)) == "pytorch"
    npz = (MODELS / "numpy-weights" / "weights.npz").read_bytes()
    assert detect_format("blob", npz, BytesSource(npz)) == "numpy"
    assert detect_format("model.safetensors", b"") == "safetensors"
    assert detect_format("model.keras", b"") == "keras"
    assert detect_format("README.md", b"# hello") is None
    assert detect_format("tokenizer.bin", bytes(range(256))) is None


def test_inspect_file_unrecognised_and_empty() -> None:
    with pytest.raises(FormatError, match="not a recognised"):
        inspect_path(TINY_LLM / "config.json")
    with pytest.raises(FormatError):
        inspect_file(BytesSource(b""), "model.safetensors")
    with pytest.raises(FormatError):
        inspect_file(BytesSource(b""), "model.gguf")


# ---------------------------------------------------------------------------------------
# hostile files
# ---------------------------------------------------------------------------------------

HOSTILE_EXPECTED: dict[str, tuple[type[ModelRegError], str]] = {
    "st-header-too-large.safetensors": (SizeLimitError, "over the 100000000-byte cap"),
    "st-header-past-eof.safetensors": (FormatError, "only 16 bytes follow"),
    "st-offsets-past-eof.safetensors": (FormatError, "past the end of the data section"),
    "st-overlapping-tensors.safetensors": (FormatError, "overlaps tensor 'a'"),
    "st-gap-between-tensors.safetensors": (FormatError, "gap of 4 bytes"),
    "st-trailing-bytes.safetensors": (FormatError, "5 trailing bytes"),
    "st-truncated.safetensors": (FormatError, "past the end of the data section"),
    "st-bad-json.safetensors": (FormatError, "not valid JSON"),
    "st-unknown-dtype.safetensors": (FormatError, 'unknown dtype "F12"'),
    "st-shape-mismatch.safetensors": (FormatError, "which is 18 bytes"),
    "st-negative-dim.safetensors": (FormatError, "shape [-2]"),
    "st-non-object-header.safetensors": (FormatError, "not an object"),
    "st-duplicate-keys.safetensors": (FormatError, "more than once"),
    "st-metadata-not-string.safetensors": (FormatError, "not a string"),
    "st-bad-utf8.safetensors": (FormatError, "not valid UTF-8"),
    "st-subbyte-misaligned.safetensors": (FormatError, "byte boundary"),
    "gguf-bad-magic.gguf": (FormatError, "magic"),
    "gguf-version-1.gguf": (FormatError, "version 1 is not supported"),
    "gguf-version-99.gguf": (FormatError, "version 99"),
    "gguf-huge-tensor-count.gguf": (SizeLimitError, "tensors, over"),
    "gguf-huge-kv-count.gguf": (SizeLimitError, "metadata entries, over"),
    "gguf-impossible-counts.gguf": (FormatError, "cannot fit"),
    "gguf-huge-string.gguf": (SizeLimitError, "claims 4611686018427387904 bytes"),
    "gguf-huge-array.gguf": (SizeLimitError, "items, over"),
    "gguf-nested-array.gguf": (FormatError, "array of arrays"),
    "gguf-unknown-value-type.gguf": (FormatError, "unknown GGUF value type 13"),
    "gguf-truncated-data.gguf": (FormatError, "runs past the end of the file"),
    "gguf-truncated-header.gguf": (FormatError, "but the file ends"),
    "gguf-offset-past-eof.gguf": (FormatError, "runs past the end of the file"),
    "gguf-overlapping-tensors.gguf": (FormatError, "has offset 0, expected 32"),
    "gguf-misplaced-offset.gguf": (FormatError, "has offset 40, expected 32"),
    "gguf-unknown-type.gguf": (FormatError, "unknown ggml type 4"),
    "gguf-too-many-dims.gguf": (FormatError, "5 dimensions"),
    "gguf-negative-dim.gguf": (FormatError, "negative dimension"),
    "gguf-block-mismatch.gguf": (FormatError, "not a multiple of the 32-element block"),
    "gguf-bad-alignment.gguf": (FormatError, "not a power of two"),
    "gguf-alignment-wrong-type.gguf": (FormatError, "expected uint32"),
    "gguf-duplicate-key.gguf": (FormatError, "appears more than once"),
    "gguf-duplicate-tensor.gguf": (FormatError, "appears more than once"),
    "onnx-external-escape.onnx": (UnsafeContentError, "../../../etc/passwd"),
    "onnx-external-absolute.onnx": (UnsafeContentError, "/etc/shadow"),
    "onnx-raw-size-mismatch.onnx": (FormatError, "raw_data holds 10"),
    "onnx-negative-dim.onnx": (FormatError, "negative dimension -4"),
    "onnx-unknown-dtype.onnx": (FormatError, "unknown data_type 99"),
    "onnx-truncated.onnx": (FormatError, "past the end"),
}
HOSTILE_UNSAFE = {
    "pickle-os-system.pkl",
    "pickle-os-system-named.bin",
    "torch-zip-posix-system.bin",
    "numpy-object-array.npy",
}


def test_every_hostile_fixture_has_an_expectation() -> None:
    on_disk = {p.name for p in HOSTILE.iterdir() if p.is_file()}
    assert on_disk == set(HOSTILE_EXPECTED) | HOSTILE_UNSAFE


@pytest.mark.parametrize("name", sorted(HOSTILE_EXPECTED))
def test_hostile_file_refused(name: str) -> None:
    error, text = HOSTILE_EXPECTED[name]
    path = HOSTILE / name
    with FileSource(path) as f:
        counting = CountingSource(f)
        tracemalloc.start()
        try:
            with pytest.raises(error) as caught:
                inspect_file(counting, name)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert type(caught.value) is error
    assert text in caught.value.message
    assert name in caught.value.message  # the message says which file
    assert caught.value.hint  # and what to do
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes"
    assert counting.bytes_read <= path.stat().st_size


@pytest.mark.parametrize(
    "name",
    sorted(
        n for n in HOSTILE_EXPECTED if n.startswith("st-") and n != "st-duplicate-keys.safetensors"
    ),
)
def test_reference_safetensors_also_refuses(name: str) -> None:
    import safetensors

    with pytest.raises(safetensors.SafetensorError):
        safetensors.deserialize((HOSTILE / name).read_bytes())


def test_duplicate_keys_stricter_than_reference() -> None:
    # The reference keeps the last duplicate: a parser differential we refuse.
    import safetensors

    data = (HOSTILE / "st-duplicate-keys.safetensors").read_bytes()
    with pytest.raises(safetensors.SafetensorError):  # here it fails on offsets anyway
        safetensors.deserialize(data)
    raw = (
        b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
        b'"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'
    )
    same = struct.pack("<Q", len(raw)) + raw + b"\x00"
    assert safetensors.deserialize(same)  # accepted by the reference
    with pytest.raises(FormatError, match="more than once"):
        parse_safetensors(BytesSource(same))


# ---------------------------------------------------------------------------------------
# fixtures and generator
# ---------------------------------------------------------------------------------------


def _sums(root: Path) -> dict[str, str]:
    out = {}
    for line in (root / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split("  ", 1)
        out[rel] = digest
    return out


def test_committed_fixtures_match_sha256sums() -> None:
    sums = _sums(TESTDATA)
    assert sums, "SHA256SUMS is empty"
    for rel, digest in sums.items():
        assert hashlib.sha256((TESTDATA / rel).read_bytes()).hexdigest() == digest, rel
    listed = set(sums)
    on_disk = {
        p.relative_to(TESTDATA).as_posix()
        for sub in ("models", "hostile")
        for p in (TESTDATA / sub).rglob("*")
        if p.is_file()
    }
    assert on_disk == listed
    assert sum((TESTDATA / rel).stat().st_size for rel in listed) < 3 * 1024 * 1024


@pytest.fixture(scope="module")
def generated_twice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    dirs = []
    for i in range(2):
        out = tmp_path_factory.mktemp(f"gen{i}")
        subprocess.run(
            [sys.executable, str(TESTDATA / "generate.py"), "--out", str(out)],
            check=True,
            capture_output=True,
            timeout=240,
        )
        dirs.append(out)
    yield dirs[0], dirs[1]


def test_generator_is_deterministic(generated_twice: tuple[Path, Path]) -> None:
    a, b = generated_twice
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and files_a
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert _sums(a) == _sums(b)
