"""NumPy ``.npy`` header reader (format versions 1.0, 2.0, 3.0), no numpy needed.

The header is a Python dict literal, read with :func:`ast.literal_eval` (which
only accepts literals: nothing is executed), after a length cap. An array whose
dtype contains Python objects (``O``) is stored as a pickle: loading it with
``allow_pickle=True`` runs code.
"""

from __future__ import annotations

import ast
import re
import struct
from dataclasses import dataclass
from typing import Final

from modelreg.errors import FormatError, SizeLimitError

__all__ = ["NPY_MAGIC", "NpyHeader", "parse_npy_header"]

NPY_MAGIC: Final = b"\x93NUMPY"
#: numpy's own ``np.load`` refuses headers over 10000 bytes by default.
MAX_HEADER: Final = 64 * 1024
_HINT: Final = "the .npy data is corrupt; re-save it with numpy"
_SIMPLE: Final = re.compile(r"^[<>|=]?([a-zA-Z])(\d*)(\[[a-z]+\])?$")


@dataclass(frozen=True, slots=True)
class NpyHeader:
    descr: str
    shape: tuple[int, ...]
    data_offset: int
    itemsize: int | None  # None when the dtype is structured or variable
    has_object: bool


def header_length(first: bytes, *, name: str) -> int:
    """Total header length (magic to data) from the first 12 bytes."""
    if len(first) < 10 or not first.startswith(NPY_MAGIC):
        raise FormatError(f"{name}: not a .npy file (bad magic)", hint=_HINT)
    major = first[6]
    if major == 1:
        (hlen,) = struct.unpack_from("<H", first, 8)
        prefix = 10
    elif major in (2, 3):
        if len(first) < 12:
            raise FormatError(f"{name}: truncated .npy header", hint=_HINT)
        (hlen,) = struct.unpack_from("<I", first, 8)
        prefix = 12
    else:
        raise FormatError(
            f"{name}: unsupported .npy format version {major}.{first[7]}",
            hint="versions 1.0 to 3.0 are understood",
        )
    if hlen > MAX_HEADER:
        raise SizeLimitError(
            f"{name}: .npy header is {hlen} bytes, over the {MAX_HEADER} cap",
            hint="the file is corrupt or hostile",
        )
    return int(prefix + hlen)


def _descr_has_object(descr: object) -> bool:
    if isinstance(descr, str):
        m = _SIMPLE.match(descr)
        return m is None or m.group(1) == "O"
    if isinstance(descr, (list, tuple)):
        for field in descr:
            if not isinstance(field, (list, tuple)) or len(field) < 2:
                return True
            if _descr_has_object(field[1]):
                return True
        return False
    return True  # unknown form: assume the worst


def _itemsize(descr: str) -> int | None:
    m = _SIMPLE.match(descr)
    if m is None or not m.group(2):
        return None
    kind, n = m.group(1), int(m.group(2))
    return n * 4 if kind == "U" else n


def parse_npy_header(data: bytes, *, name: str) -> NpyHeader:
    """Parse a .npy header from bytes starting at the magic (must hold the whole header)."""
    total = header_length(data, name=name)
    if len(data) < total:
        raise FormatError(
            f"{name}: truncated .npy header ({len(data)} of {total} bytes)", hint=_HINT
        )
    prefix = 10 if data[6] == 1 else 12
    encoding = "utf-8" if data[6] == 3 else "latin-1"
    try:
        text = data[prefix:total].decode(encoding)
        header = ast.literal_eval(text)
    except (
        ValueError,
        SyntaxError,
        TypeError,
        MemoryError,
        RecursionError,
        UnicodeDecodeError,
    ) as exc:
        raise FormatError(f"{name}: .npy header is not a dict literal: {exc}", hint=_HINT) from None
    if not isinstance(header, dict) or not {"descr", "shape"} <= set(header):
        raise FormatError(f"{name}: .npy header lacks 'descr' or 'shape'", hint=_HINT)
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise FormatError(f"{name}: .npy shape {shape!r} is not a tuple of sizes", hint=_HINT)
    descr = header["descr"]
    return NpyHeader(
        descr=descr if isinstance(descr, str) else repr(descr),
        shape=tuple(int(d) for d in shape),
        data_offset=total,
        itemsize=_itemsize(descr) if isinstance(descr, str) else None,
        has_object=_descr_has_object(descr),
    )
