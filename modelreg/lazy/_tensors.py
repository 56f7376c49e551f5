"""Tensor dtypes to NumPy, for safetensors and GGUF.

NumPy is imported only when a tensor is materialised (the ``lazy`` extra).
Dtypes NumPy lacks (BF16, the most common dtype of released LLMs, and the
FP8 kinds) come from ``ml_dtypes``, which the ``lazy`` extra installs with
NumPy (issue 15: without it BF16 models could not be read as arrays). Without
``ml_dtypes`` they are refused with a hint (``raw=True`` returns the bytes as
``uint8``).
GGUF quantized types (Q4_0, Q8_0, K-quants, IQ*, ...) have no element dtype:
they are refused unless ``raw=True``, which returns the quantized blocks as a
``uint8`` array of shape ``(*shape[:-1], row_bytes)``.
"""

from __future__ import annotations

from typing import Any, Final

from modelreg._extras import require
from modelreg.errors import UnsupportedError

__all__ = ["numpy_dtype", "require_numpy"]

_PLAIN: Final[dict[str, str]] = {
    # safetensors names
    "BOOL": "?",
    "U8": "u1",
    "I8": "i1",
    "U16": "u2",
    "I16": "i2",
    "F16": "f2",
    "U32": "u4",
    "I32": "i4",
    "F32": "f4",
    "U64": "u8",
    "I64": "i8",
    "F64": "f8",
    "C64": "c8",
}
_ML_DTYPES: Final = frozenset(
    {"BF16", "F8_E4M3", "F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F8_E8M0"}
)
_GGUF_PLAIN: Final[dict[str, str]] = {
    "F32": "f4",
    "F16": "f2",
    "F64": "f8",
    "I8": "i1",
    "I16": "i2",
    "I32": "i4",
    "I64": "i8",
}


def require_numpy() -> Any:
    """NumPy, or MissingExtraError naming ``modelreg[lazy]`` (file access works without it)."""
    return require("numpy", "lazy", "reading tensors as NumPy arrays")


def numpy_dtype(fmt: str, dtype: str, *, big_endian: bool = False) -> Any:
    """The NumPy dtype of a tensor, or raise UnsupportedError saying what to do."""
    np = require_numpy()
    order = ">" if big_endian else "<"
    table = _PLAIN if fmt == "safetensors" else _GGUF_PLAIN
    code = table.get(dtype)
    if code is not None:
        return np.dtype(code if code in ("?", "u1", "i1") else order + code)
    if dtype in _ML_DTYPES:
        base = np.dtype(_ml_dtype(dtype))
        return base.newbyteorder(order) if base.itemsize > 1 else base
    if fmt == "gguf":
        raise UnsupportedError(
            f"{dtype} is a quantized GGUF type: it has no element dtype",
            hint="pass raw=True to get the quantized blocks as uint8 (one row of blocks per "
            "row of the tensor) and dequantize them yourself (e.g. gguf.quants.dequantize)",
        )
    raise UnsupportedError(
        f"NumPy has no dtype for {dtype} (sub-byte or unknown) in a {fmt} file",
        hint="pass raw=True to get the tensor's bytes as uint8",
    )


def _ml_dtype(dtype: str) -> Any:
    """The ``ml_dtypes`` type for a safetensors/GGUF dtype name (NumPy has none of them);
    MissingExtraError naming ``modelreg[lazy]`` without ml_dtypes (``raw=True`` needs none)."""
    ml_dtypes = require("ml_dtypes", "lazy", f"reading {dtype} tensors as NumPy arrays")
    return {
        "BF16": ml_dtypes.bfloat16,
        "F8_E4M3": ml_dtypes.float8_e4m3fn,
        "F8_E5M2": ml_dtypes.float8_e5m2,
        "F8_E4M3FNUZ": ml_dtypes.float8_e4m3fnuz,
        "F8_E5M2FNUZ": ml_dtypes.float8_e5m2fnuz,
        "F8_E8M0": ml_dtypes.float8_e8m0fnu,
    }[dtype]
