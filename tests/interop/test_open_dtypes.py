"""``modelreg.open(...).tensor`` for the dtypes released models use, read from a real
registry: BF16 and FP8 (E4M3, E5M2) through ``ml_dtypes`` (in the ``lazy`` extra since
issue 15), and GGUF quantized types as raw blocks that ``gguf``'s own dequantizer reads."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

import modelreg
from modelreg.errors import UnsupportedError
from tests.interop.peers import ok

RNG = np.random.default_rng(15)
VALUES = RNG.standard_normal((4, 64)).astype(np.float32)
SAFETENSORS_KINDS = {
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
}
#: gguf's Python package quantizes the first three; K-quant and IQ blocks are written as
#: random bytes of the right block size (what matters is that the blocks come back intact).
GGUF_QUANTIZED = ("Q8_0", "Q4_0", "TQ1_0")
GGUF_BLOCKS_ONLY = ("Q4_K", "Q6_K", "IQ4_NL")
GGUF_QUANTS = GGUF_QUANTIZED + GGUF_BLOCKS_ONLY
BLOCKS: dict[str, np.ndarray] = {}


def _blocks(q: str) -> np.ndarray:
    qtype = GGMLQuantizationType[q]
    if q in GGUF_QUANTIZED:
        data = VALUES if q != "TQ1_0" else RNG.standard_normal((2, 256)).astype(np.float32)
        return quantize(data, qtype)
    per_block, block_bytes = GGML_QUANT_SIZES[qtype]
    rows, cols = 2, 2 * 256
    return RNG.integers(0, 256, (rows, cols // per_block * block_bytes), dtype=np.uint8)


def _safetensors(path: Path, arrays: dict[str, tuple[str, np.ndarray]]) -> None:
    header: dict[str, object] = {}
    offset = 0
    blobs = []
    for name, (dtype, array) in arrays.items():
        raw = array.tobytes()
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def _gguf(path: Path) -> None:
    writer = GGUFWriter(str(path), "llama")
    writer.add_tensor(
        "bf16",
        VALUES.astype(ml_dtypes.bfloat16).view(np.uint16),
        raw_dtype=GGMLQuantizationType.BF16,
    )
    for q in GGUF_QUANTS:
        BLOCKS[q] = _blocks(q)
        writer.add_tensor(q.lower(), BLOCKS[q], raw_dtype=GGMLQuantizationType[q])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def ref(registry_plain, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("dtypes") / "model"
    root.mkdir()
    _safetensors(
        root / "model.safetensors",
        {k.lower(): (k, VALUES.astype(kind)) for k, kind in SAFETENSORS_KINDS.items()},
    )
    _gguf(root / "model.gguf")
    reference = f"{registry_plain.host}/interop/dtypes:v1"
    ok("push", str(root), reference)
    return reference


@pytest.mark.parametrize("dtype", sorted(SAFETENSORS_KINDS))
def test_safetensors_bf16_and_fp8(ref, dtype):
    kind = SAFETENSORS_KINDS[dtype]
    with modelreg.open(ref) as handle:
        got = handle.tensor(dtype.lower(), file="model.safetensors")
    assert got.dtype == np.dtype(kind) and got.shape == VALUES.shape
    assert got.tobytes() == VALUES.astype(kind).tobytes()


def test_gguf_bf16(ref):
    with modelreg.open(ref) as handle:
        got = handle.tensor("bf16", file="model.gguf")
    assert got.dtype == np.dtype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(
        got.astype(np.float32), VALUES.astype(ml_dtypes.bfloat16).astype(np.float32)
    )


@pytest.mark.parametrize("q", GGUF_QUANTS)
def test_gguf_quantized_types_as_raw_blocks(ref, q):
    qtype = GGMLQuantizationType[q]
    with modelreg.open(ref) as handle:
        with pytest.raises(UnsupportedError, match="quantized GGUF type"):
            handle.tensor(q.lower(), file="model.gguf")
        blocks = handle.tensor(q.lower(), file="model.gguf", raw=True)
    assert blocks.dtype == np.uint8
    np.testing.assert_array_equal(blocks, BLOCKS[q])
    np.testing.assert_array_equal(dequantize(blocks, qtype), dequantize(BLOCKS[q], qtype))
    if q in ("Q8_0", "Q4_0"):
        np.testing.assert_allclose(dequantize(blocks, qtype), VALUES, atol=0.35)


def test_the_lazy_extra_installs_ml_dtypes():
    from importlib.metadata import requires

    lazy = [r for r in requires("modelreg") or [] if 'extra == "lazy"' in r]
    assert any(r.replace("_", "-").startswith("ml-dtypes") for r in lazy), lazy
