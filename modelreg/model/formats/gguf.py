"""GGUF (v2/v3) header parser: metadata key/values and tensor infos, no tensor data.

Layout: magic ``GGUF``, u32 version, u64 tensor count, u64 KV count, the KV
pairs, the tensor infos (name, u32 n_dims, u64 dims innermost first, u32 ggml
type, u64 offset relative to the data section), padding up to
``general.alignment`` (default 32), then the data section.

Validation follows ggml's own loader (``gguf_init_from_file_impl``): version
2 or 3, no duplicate keys or tensor names, ``general.alignment`` a u32 power of
two, at most 4 dimensions, no negative dimension, element count below 2**63,
a known ggml type whose block size divides the row length, and tensor offsets
laid out back to back in order, each padded to the alignment. Tensors must lie
inside the file. Big-endian files (version read byte-swapped) are accepted,
as the ``gguf`` Python package does.

Reads: sequential, through a buffered reader whose requests start at 64 KiB
and double while parsing continues; fixed-size metadata arrays are skipped
without being fetched. A GGUF header has no length field, so the whole KV
section must be walked: a model with a large vocabulary (several MB of token
strings) costs a handful of requests of growing size.

Block sizes and type sizes come from the ggml type table (the ``gguf``
package's ``GGML_QUANT_SIZES``, v0.19).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from modelreg.errors import FormatError, SizeLimitError

from ._base import (
    BufferedReader,
    MetadataScalar,
    MetadataValue,
    ModelFileInfo,
    RangeSource,
    TensorInfo,
    summarize,
)

__all__ = [
    "DEFAULT_ALIGNMENT",
    "GGML_TYPES",
    "QUANTIZED_TYPES",
    "GGUFLimits",
    "parse_gguf",
]

GGUF_MAGIC: Final = b"GGUF"
DEFAULT_ALIGNMENT: Final = 32
MAX_DIMS: Final = 4

#: ggml type id -> (name, elements per block, bytes per block)
GGML_TYPES: Final[dict[int, tuple[str, int, int]]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}

#: ggml types that are not plain float/int storage.
QUANTIZED_TYPES: Final = frozenset(
    n
    for n, _, _ in GGML_TYPES.values()
    if n not in {"F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64"}
)

# GGUF metadata value types: id -> (name, struct code or "" for string/array)
_VALUE_TYPES: Final[dict[int, tuple[str, str]]] = {
    0: ("uint8", "B"),
    1: ("int8", "b"),
    2: ("uint16", "H"),
    3: ("int16", "h"),
    4: ("uint32", "I"),
    5: ("int32", "i"),
    6: ("float32", "f"),
    7: ("bool", "?"),
    8: ("string", ""),
    9: ("array", ""),
    10: ("uint64", "Q"),
    11: ("int64", "q"),
    12: ("float64", "d"),
}
_T_UINT32: Final = 4
_T_STRING: Final = 8
_T_ARRAY: Final = 9

#: Arrays up to this many elements are kept in metadata; longer ones are summarized.
SMALL_ARRAY: Final = 16

_HINT_CORRUPT: Final = "the file is not a valid GGUF file; re-convert or re-download it"


@dataclass(slots=True, kw_only=True)
class GGUFLimits:
    """Caps applied while parsing (all remote-controlled counts and lengths)."""

    max_header_bytes: int = 256 * 1024 * 1024
    max_tensors: int = 1 << 20
    max_kv: int = 1 << 16
    max_key_len: int = 1 << 16
    max_string_len: int = 1 << 24
    max_array_len: int = 1 << 24


class _Parser:
    def __init__(self, source: RangeSource, name: str, limits: GGUFLimits) -> None:
        self.label = name or "GGUF file"
        self.limits = limits
        self.r = BufferedReader(
            source,
            name=self.label,
            max_pos=limits.max_header_bytes,
            limit_what="GGUF header (metadata and tensor infos)",
            limit_hint="raise max_header_bytes if this file is trusted",
        )
        self.e = "<"

    def u32(self, what: str) -> int:
        return self.r.uint(self.e + "I", what)

    def u64(self, what: str) -> int:
        return self.r.uint(self.e + "Q", what)

    def string_len(self, cap: int, what: str) -> int:
        n = self.u64(f"length of {what}")
        if n > cap:
            raise SizeLimitError(
                f"{self.label}: {what} claims {n} bytes, over the {cap}-byte cap",
                hint="the file is corrupt or hostile; real GGUF strings are far shorter",
            )
        return n

    def string(self, cap: int, what: str) -> str:
        n = self.string_len(cap, what)
        return self.r.read(n, what).decode("utf-8", errors="replace")

    def scalar(self, vtype: int, what: str) -> MetadataScalar:
        code = _VALUE_TYPES[vtype][1]
        if vtype == _T_STRING:
            return self.string(self.limits.max_string_len, what)
        value = self.r.unpack(self.e + code, what)[0]
        if vtype == 7:
            return bool(value)
        return value

    def value_type(self, what: str) -> int:
        vtype = self.u32(f"type of {what}")
        if vtype not in _VALUE_TYPES:
            raise FormatError(
                f"{self.label}: {what} has unknown GGUF value type {vtype}",
                hint=_HINT_CORRUPT,
            )
        return vtype

    def array(self, key: str) -> MetadataValue:
        itype = self.value_type(f"items of {key!r}")
        if itype == _T_ARRAY:
            raise FormatError(
                f"{self.label}: metadata {key!r} is an array of arrays",
                hint="nested arrays are not part of GGUF as ggml reads it",
            )
        n = self.u64(f"length of array {key!r}")
        if n > self.limits.max_array_len:
            raise SizeLimitError(
                f"{self.label}: metadata array {key!r} claims {n} items, over the "
                f"{self.limits.max_array_len}-item cap",
                hint="the file is corrupt or hostile",
            )
        tname, code = _VALUE_TYPES[itype]
        if n <= SMALL_ARRAY:
            return [self.scalar(itype, f"item of {key!r}") for _ in range(n)]
        if itype == _T_STRING:
            for _ in range(n):
                length = self.string_len(self.limits.max_string_len, f"item of {key!r}")
                self.r.skip(length, f"item of {key!r}")
        else:
            self.r.skip(n * struct.calcsize(code), f"array {key!r}")
        return f"[{n} x {tname}]"

    def parse(self) -> ModelFileInfo:
        r = self.r
        label = self.label
        magic = r.read(4, "magic")
        if magic != GGUF_MAGIC:
            raise FormatError(
                f"{label}: magic is {magic!r}, expected {GGUF_MAGIC!r}",
                hint="this is not a GGUF file",
            )
        version = self.u32("version")
        if version != 0 and version & 0xFFFF == 0:
            self.e = ">"
            version = struct.unpack(">I", struct.pack("<I", version))[0]
        if version not in (2, 3):
            extra = " (GGUF v1 is no longer read by ggml)" if version == 1 else ""
            raise FormatError(
                f"{label}: GGUF version {version} is not supported{extra}",
                hint="versions 2 and 3 are supported; re-convert the model with a current "
                "llama.cpp",
            )
        n_tensors = self.u64("tensor count")
        n_kv = self.u64("metadata count")
        remaining = r.size - r.pos
        if n_tensors > self.limits.max_tensors:
            raise SizeLimitError(
                f"{label}: header claims {n_tensors} tensors, over the "
                f"{self.limits.max_tensors}-tensor cap",
                hint="the file is corrupt or hostile",
            )
        if n_kv > self.limits.max_kv:
            raise SizeLimitError(
                f"{label}: header claims {n_kv} metadata entries, over the "
                f"{self.limits.max_kv}-entry cap",
                hint="the file is corrupt or hostile",
            )
        # Each KV takes >= 13 bytes and each tensor info >= 24: refuse impossible counts.
        if n_kv * 13 + n_tensors * 24 > remaining:
            raise FormatError(
                f"{label}: header claims {n_tensors} tensors and {n_kv} metadata entries, "
                f"which cannot fit in the {remaining} bytes that follow",
                hint="the file is truncated or corrupt",
            )

        metadata: dict[str, MetadataValue] = {"GGUF.version": version}
        kv_types: dict[str, int] = {}
        for _ in range(n_kv):
            key = self.string(self.limits.max_key_len, "metadata key")
            if key in kv_types:
                raise FormatError(
                    f"{label}: metadata key {key!r} appears more than once",
                    hint="duplicate keys are refused by ggml; the file is corrupt",
                )
            vtype = self.value_type(f"metadata {key!r}")
            kv_types[key] = vtype
            if vtype == _T_ARRAY:
                metadata[key] = self.array(key)
            else:
                metadata[key] = self.scalar(vtype, f"metadata {key!r}")

        alignment = DEFAULT_ALIGNMENT
        if "general.alignment" in kv_types:
            value = metadata["general.alignment"]
            if kv_types["general.alignment"] != _T_UINT32 or not isinstance(value, int):
                raise FormatError(
                    f"{label}: general.alignment has type "
                    f"{_VALUE_TYPES[kv_types['general.alignment']][0]}, expected uint32",
                    hint=_HINT_CORRUPT,
                )
            if value == 0 or value & (value - 1):
                raise FormatError(
                    f"{label}: general.alignment is {value}, not a power of two",
                    hint=_HINT_CORRUPT,
                )
            alignment = value

        infos: list[tuple[str, str, tuple[int, ...], int, int]] = []
        names: set[str] = set()
        for i in range(n_tensors):
            infos.append(self.tensor_info(i, names))

        header_end = r.pos
        data_start = -(-header_end // alignment) * alignment
        tensors: list[TensorInfo] = []
        expected = 0
        quantized: set[str] = set()
        for tname, gname, shape, offset, nbytes in infos:
            if offset != expected:
                raise FormatError(
                    f"{label}: tensor {tname!r} has offset {offset}, expected {expected} "
                    "(tensors must follow each other in order, each padded to "
                    f"{alignment} bytes)",
                    hint="ggml refuses such a file: the tensor table is corrupt or tensors overlap",
                )
            start = data_start + offset
            if start + nbytes > r.size:
                raise FormatError(
                    f"{label}: tensor {tname!r} ({nbytes} bytes at offset {start}) runs past "
                    f"the end of the file ({r.size} bytes)",
                    hint="the file is truncated; download it again",
                )
            expected = offset + (-(-nbytes // alignment) * alignment)
            tensors.append(TensorInfo(tname, gname, shape, start, nbytes))
            if gname in QUANTIZED_TYPES:
                quantized.add(gname)

        arch = metadata.get("general.architecture")
        return summarize(
            "gguf",
            tensors,
            header_size=data_start,
            metadata=metadata,
            architecture=arch if isinstance(arch, str) else None,
            quantization=",".join(sorted(quantized)) or None,
        )

    def tensor_info(
        self, index: int, names: set[str]
    ) -> tuple[str, str, tuple[int, ...], int, int]:
        label = self.label
        tname = self.string(self.limits.max_key_len, f"name of tensor #{index}")
        if tname in names:
            raise FormatError(
                f"{label}: tensor name {tname!r} appears more than once",
                hint="duplicate tensor names are refused by ggml; the file is corrupt",
            )
        names.add(tname)
        n_dims = self.u32(f"n_dims of tensor {tname!r}")
        if n_dims > MAX_DIMS:
            raise FormatError(
                f"{label}: tensor {tname!r} has {n_dims} dimensions, more than {MAX_DIMS}",
                hint=_HINT_CORRUPT,
            )
        dims = [self.u64(f"dimension of tensor {tname!r}") for _ in range(n_dims)]
        for d in dims:
            if d >= 1 << 63:
                raise FormatError(
                    f"{label}: tensor {tname!r} has a negative dimension ({d - (1 << 64)})",
                    hint=_HINT_CORRUPT,
                )
        type_id = self.u32(f"type of tensor {tname!r}")
        if type_id not in GGML_TYPES:
            raise FormatError(
                f"{label}: tensor {tname!r} has unknown ggml type {type_id}",
                hint="known types: " + ", ".join(n for n, _, _ in GGML_TYPES.values()),
            )
        gname, block, type_size = GGML_TYPES[type_id]
        offset = self.u64(f"offset of tensor {tname!r}")
        numel = 1
        for d in dims:
            numel *= d
        if numel >= 1 << 63:
            raise FormatError(
                f"{label}: tensor {tname!r} has {numel} elements, beyond what ggml can address",
                hint=_HINT_CORRUPT,
            )
        row = dims[0] if dims else 1
        if row % block:
            raise FormatError(
                f"{label}: tensor {tname!r} of type {gname} has rows of {row} elements, "
                f"not a multiple of the {block}-element block",
                hint=_HINT_CORRUPT,
            )
        nbytes = numel // block * type_size
        return tname, gname, tuple(reversed(dims)), offset, nbytes


def parse_gguf(
    source: RangeSource, *, name: str = "", limits: GGUFLimits | None = None
) -> ModelFileInfo:
    """Parse a GGUF header: metadata (arrays longer than 16 summarized as
    ``"[N x type]"``), tensor infos with absolute offsets and sizes.

    ``metadata`` also holds ``GGUF.version``. ``architecture`` is
    ``general.architecture``; ``quantization`` lists the distinct quantized
    ggml types, comma-separated and sorted.
    """
    return _Parser(source, name, limits or GGUFLimits()).parse()
