"""safetensors header parser (no weights read) and sharded-index parser.

Layout: an 8-byte little-endian u64 ``N``, ``N`` bytes of UTF-8 JSON, then the
data section. The JSON maps tensor names to ``{"dtype", "shape",
"data_offsets": [begin, end]}`` (offsets relative to the data section) and may
hold ``"__metadata__"``: a string-to-string map.

Validation follows the reference implementation (the ``safetensors`` Rust
crate, checked against safetensors 0.8): header at most 100 MB, dtype one of
the known names, ``end - begin`` equal to the size implied by shape and dtype
(sub-byte dtypes must end on a byte boundary), tensors sorted by offset must
tile the data section exactly from 0 with no gap and no overlap, and the data
section must end exactly at the end of the file. On top of the reference we
refuse duplicate JSON keys (the reference silently keeps the last one, a
classic parser-differential trick) and NaN/Infinity literals.

Reads: one request of ``initial_read`` bytes (64 KiB) from offset 0, which
holds the length and, for typical models, the whole header; when the header is
longer, exactly one more request for the missing bytes.
"""

from __future__ import annotations

import json
import struct
from pathlib import PurePosixPath
from typing import Final

from modelreg._json import loads_strict
from modelreg.errors import FormatError, SizeLimitError, UnsafeContentError

from ._base import MetadataValue, ModelFileInfo, RangeSource, TensorInfo, summarize

__all__ = [
    "DEFAULT_MAX_HEADER_SIZE",
    "DEFAULT_MAX_INDEX_SIZE",
    "INITIAL_READ",
    "SAFETENSORS_DTYPE_BITS",
    "parse_safetensors",
    "parse_sharded_index",
]

#: Cap on the JSON header length, as in the reference implementation.
DEFAULT_MAX_HEADER_SIZE: Final = 100_000_000
#: Cap on a ``*.safetensors.index.json`` file.
DEFAULT_MAX_INDEX_SIZE: Final = 64 * 1024 * 1024
#: Bytes fetched by the first request (length prefix + optimistic header read).
INITIAL_READ: Final = 64 * 1024

#: Bits per element of each dtype the reference implementation accepts.
SAFETENSORS_DTYPE_BITS: Final[dict[str, int]] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

_HINT_CORRUPT: Final = "the file is not a valid safetensors file; re-export or re-download it"


def _is_uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _prefix(name: str) -> str:
    return name or "safetensors file"


def parse_safetensors(
    source: RangeSource,
    *,
    name: str = "",
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
    initial_read: int = INITIAL_READ,
) -> ModelFileInfo:
    """Parse and validate the header of a safetensors file.

    Raises :class:`SizeLimitError` when the header length is over
    ``max_header_size`` (checked before anything else is read) and
    :class:`FormatError` for anything malformed.
    """
    label = _prefix(name)
    size = source.size
    if size < 8:
        raise FormatError(
            f"{label}: file is {size} bytes, shorter than the 8-byte safetensors length prefix",
            hint=_HINT_CORRUPT,
        )
    first = source.read_at(0, min(size, max(8, initial_read)))
    if len(first) < 8:
        raise FormatError(f"{label}: could not read the 8-byte length prefix", hint=_HINT_CORRUPT)
    (n,) = struct.unpack_from("<Q", first, 0)
    if n > max_header_size:
        raise SizeLimitError(
            f"{label}: header length is {n} bytes, over the {max_header_size}-byte cap",
            hint="a real safetensors header is at most 100 MB; the file is corrupt or hostile",
        )
    if n < 2:
        raise FormatError(
            f"{label}: header length is {n} bytes, too short for a JSON object",
            hint=_HINT_CORRUPT,
        )
    if 8 + n > size:
        raise FormatError(
            f"{label}: header length is {n} bytes but only {size - 8} bytes follow the prefix",
            hint="the file is truncated; download it again",
        )
    if len(first) >= 8 + n:
        raw = first[8 : 8 + n]
    else:
        rest = source.read_at(len(first), 8 + n - len(first))
        raw = first[8:] + rest
        if len(raw) != n:
            raise FormatError(
                f"{label}: short read of the header ({len(raw)} of {n} bytes)",
                hint="the file changed while it was read, or the server ignored the range",
            )
    return _parse_header(raw, n, size, label)


def _parse_header(raw: bytes, n: int, size: int, label: str) -> ModelFileInfo:
    header = loads_strict(raw, what=f"{label}: header", hint=_HINT_CORRUPT)
    if not isinstance(header, dict):
        raise FormatError(
            f"{label}: header is a JSON {type(header).__name__}, not an object",
            hint=_HINT_CORRUPT,
        )
    metadata: dict[str, MetadataValue] = {}
    raw_meta = header.get("__metadata__")
    if raw_meta is not None:
        if not isinstance(raw_meta, dict):
            raise FormatError(
                f"{label}: __metadata__ is a JSON {type(raw_meta).__name__}, not an object",
                hint="__metadata__ must map strings to strings",
            )
        for key, value in raw_meta.items():
            if not isinstance(value, str):
                raise FormatError(
                    f"{label}: __metadata__[{key!r}] is {json.dumps(value)[:60]}, not a string",
                    hint="__metadata__ must map strings to strings",
                )
            metadata[key] = value

    entries: list[tuple[int, int, str, str, tuple[int, ...]]] = []
    for tname, spec in header.items():
        if tname == "__metadata__":
            continue
        entries.append(_tensor_entry(tname, spec, label))

    # The reference sorts by data_offsets and requires an exact tiling from 0.
    entries.sort(key=lambda e: (e[0], e[1]))
    data_start = 8 + n
    data_len = size - data_start
    expected = 0
    previous = ""
    tensors: list[TensorInfo] = []
    for begin, end, tname, dtype, shape in entries:
        if begin != expected:
            if begin < expected:
                problem = f"overlaps tensor {previous!r} (which ends at {expected})"
            else:
                problem = f"leaves a gap of {begin - expected} bytes after offset {expected}"
            raise FormatError(
                f"{label}: tensor {tname!r} data_offsets [{begin}, {end}] {problem}",
                hint="tensors must be stored back to back from offset 0 with no gap or overlap",
            )
        if end > data_len:
            raise FormatError(
                f"{label}: tensor {tname!r} data_offsets [{begin}, {end}] run past the end of "
                f"the data section ({data_len} bytes)",
                hint="the file is truncated or the header lies; download it again",
            )
        tensors.append(TensorInfo(tname, dtype, shape, data_start + begin, end - begin))
        expected = end
        previous = tname
    if expected != data_len:
        raise FormatError(
            f"{label}: the data section is {data_len} bytes but the tensors cover {expected}; "
            f"{data_len - expected} trailing bytes belong to no tensor",
            hint="safetensors files end exactly after the last tensor; the file was "
            "appended to or corrupted",
        )
    return summarize("safetensors", tensors, header_size=data_start, metadata=metadata)


def _tensor_entry(
    tname: str, spec: object, label: str
) -> tuple[int, int, str, str, tuple[int, ...]]:
    if not isinstance(spec, dict):
        raise FormatError(
            f"{label}: entry for tensor {tname!r} is a JSON {type(spec).__name__}, not an object",
            hint=_HINT_CORRUPT,
        )
    for key in ("dtype", "shape", "data_offsets"):
        if key not in spec:
            raise FormatError(f"{label}: tensor {tname!r} has no {key!r}", hint=_HINT_CORRUPT)
    dtype = spec["dtype"]
    if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPE_BITS:
        raise FormatError(
            f"{label}: tensor {tname!r} has unknown dtype {json.dumps(dtype)[:40]}",
            hint="known dtypes: " + ", ".join(SAFETENSORS_DTYPE_BITS),
        )
    shape = spec["shape"]
    if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
        raise FormatError(
            f"{label}: tensor {tname!r} has shape {json.dumps(shape)[:80]}; "
            "expected a list of non-negative integers",
            hint=_HINT_CORRUPT,
        )
    offsets = spec["data_offsets"]
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_uint(o) for o in offsets):
        raise FormatError(
            f"{label}: tensor {tname!r} has data_offsets {json.dumps(offsets)[:80]}; "
            "expected [begin, end] with non-negative integers",
            hint=_HINT_CORRUPT,
        )
    begin, end = int(offsets[0]), int(offsets[1])
    if end < begin:
        raise FormatError(
            f"{label}: tensor {tname!r} has data_offsets [{begin}, {end}] with end before begin",
            hint=_HINT_CORRUPT,
        )
    numel = 1
    for d in shape:
        numel *= int(d)
    nbits = numel * SAFETENSORS_DTYPE_BITS[dtype]
    if nbits % 8:
        raise FormatError(
            f"{label}: tensor {tname!r} of {numel} {dtype} elements does not end on a byte "
            f"boundary ({nbits} bits)",
            hint="sub-byte dtypes need an element count that fills whole bytes",
        )
    if nbits // 8 != end - begin:
        raise FormatError(
            f"{label}: tensor {tname!r} is {dtype} with shape {list(shape)}, which is "
            f"{nbits // 8} bytes, but data_offsets [{begin}, {end}] span {end - begin} bytes",
            hint="shape, dtype and offsets disagree; the header is corrupt",
        )
    return begin, end, tname, dtype, tuple(int(d) for d in shape)


def _check_relative(path: str, *, label: str, tensor: str) -> None:
    bad = (
        not path
        or "\x00" in path
        or "\\" in path
        or path.startswith("/")
        or (len(path) > 1 and path[1] == ":")
        or any(part in ("", ".", "..") for part in path.split("/"))
    )
    if bad:
        raise UnsafeContentError(
            f"{label}: weight_map[{tensor!r}] names shard {path!r}, which is not a plain "
            "relative path",
            hint="shard names must be relative paths inside the model directory, "
            "without '..', '.', empty parts, backslashes or a leading '/'",
        )


def parse_sharded_index(
    data: bytes,
    *,
    name: str = "model.safetensors.index.json",
    max_size: int = DEFAULT_MAX_INDEX_SIZE,
) -> dict[str, str]:
    """Parse ``model.safetensors.index.json`` into ``{tensor name: shard file}``.

    Shard names are checked to be plain relative paths (no ``..``, no absolute
    path, no backslash). ``metadata.total_size``, when present, must be a
    non-negative integer.
    """
    if len(data) > max_size:
        raise SizeLimitError(
            f"{name}: index is {len(data)} bytes, over the {max_size}-byte cap",
            hint="a sharded-checkpoint index is normally a few hundred KB",
        )
    doc = loads_strict(data, what=f"{name}: index", hint=_HINT_CORRUPT)
    if not isinstance(doc, dict):
        raise FormatError(
            f"{name}: index is a JSON {type(doc).__name__}, not an object",
            hint='expected {"metadata": {...}, "weight_map": {tensor: shard}}',
        )
    meta = doc.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict):
            raise FormatError(f"{name}: 'metadata' is not an object", hint="fix the index file")
        total = meta.get("total_size")
        integral_float = isinstance(total, float) and total >= 0 and total.is_integer()
        if total is not None and not (_is_uint(total) or integral_float):
            raise FormatError(
                f"{name}: metadata.total_size is {json.dumps(total)[:40]}, not a byte count",
                hint="fix the index file",
            )
    weight_map = doc.get("weight_map")
    if not isinstance(weight_map, dict):
        raise FormatError(
            f"{name}: 'weight_map' is missing or not an object",
            hint='expected "weight_map": {tensor name: shard file name}',
        )
    if not weight_map:
        raise FormatError(f"{name}: 'weight_map' is empty", hint="the index lists no tensor")
    out: dict[str, str] = {}
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str):
            raise FormatError(
                f"{name}: weight_map[{tensor!r}] is {json.dumps(shard)[:40]}, not a file name",
                hint="fix the index file",
            )
        _check_relative(shard, label=name, tensor=tensor)
        out[tensor] = str(PurePosixPath(shard))
    return out
