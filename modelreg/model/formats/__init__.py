"""Understand model files without loading weights and without ever unpickling.

All parsers read through a :class:`RangeSource` (``size`` + ``read_at``), so
they work on local files (:class:`FileSource`), bytes (:class:`BytesSource`)
and remote blobs read with HTTP Range requests.

:func:`inspect_file` reads the first 64 KiB once, detects the format
(:func:`detect_format`) and hands the cached prefix to the right parser, so a
typical safetensors or GGUF header costs one request.

Format names returned: ``safetensors``, ``gguf``, ``onnx``, ``pytorch`` (zip
of pickles, or the legacy ``torch.save`` pickle stream), ``pickle`` (raw
pickle, joblib), ``numpy`` (``.npy``/``.npz``), ``keras`` (Keras 3 ``.keras``
zip), ``hdf5`` (HDF5 magic: Keras 2 ``.h5`` and others), ``tflite``, ``zip``
(any other zip archive), or ``None`` when unrecognised.

The pickle rule (:func:`is_pickle_based`, ``ModelFileInfo.unsafe``):

* unsafe when the content is pickle-based, whatever the name: a raw pickle
  (``\\x80`` + protocol 2..5, or a protocol 0/1 stream recognised by decoding
  its opcodes, checked for names with an unsafe extension), the legacy
  ``torch.save`` stream, a zip whose central directory holds a ``*.pkl``
  member (``data.pkl`` for PyTorch), a ``.npy`` array or ``.npz`` member with
  an object dtype (stored as a pickle);
* safe when the content is positively a non-pickle format (safetensors, GGUF,
  ONNX, HDF5, TFLite, a ``.npy`` without objects, a zip without pickles whose
  directory could be read), even if the name ends in ``.pt`` or ``.bin``;
* otherwise by name: ``.pt .pth .ckpt .pkl .pickle .joblib`` are unsafe (fail
  safe). ``.bin`` is also a common name for plain binary blobs, so a ``.bin``
  is unsafe only when its content is pickle-based as above, or when it cannot
  be read (no first bytes), or when it is a zip whose directory was not
  available to check. A readable ``.bin`` of unrecognised content is safe.
"""

from __future__ import annotations

import os
import struct
from dataclasses import replace
from pathlib import PurePath
from typing import Final

from modelreg.errors import FormatError, SizeLimitError

from ._base import (
    BytesSource,
    CachedSource,
    FileSource,
    MetadataValue,
    ModelFileInfo,
    RangeSource,
    TensorInfo,
    read_exact,
)
from ._npy import NPY_MAGIC, header_length, parse_npy_header
from ._zip import ZipEntry, member_data_offset, member_prefix, read_zip_directory
from .gguf import GGUFLimits, parse_gguf
from .onnx import DEFAULT_MAX_SCAN, parse_onnx
from .pickle_scan import (
    DEFAULT_SCAN_LIMIT,
    TORCH_LEGACY_MAGIC,
    PickleScan,
    is_raw_pickle,
    looks_like_pickle,
    scan_pickle,
)
from .safetensors import DEFAULT_MAX_HEADER_SIZE, parse_safetensors, parse_sharded_index

__all__ = [
    "PREFIX_READ",
    "UNSAFE_EXTENSIONS",
    "BytesSource",
    "CachedSource",
    "FileSource",
    "GGUFLimits",
    "MetadataValue",
    "ModelFileInfo",
    "PickleScan",
    "RangeSource",
    "TensorInfo",
    "detect_format",
    "inspect_file",
    "is_pickle_based",
    "parse_gguf",
    "parse_onnx",
    "parse_safetensors",
    "parse_sharded_index",
    "scan_pickle",
]

#: Extensions of formats that are pickles (``.bin``: see the module docstring).
UNSAFE_EXTENSIONS: Final = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib"})
#: Bytes read from offset 0 by :func:`inspect_file` for detection (and reused by parsers).
PREFIX_READ: Final = 64 * 1024

_HDF5_MAGIC: Final = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGICS: Final = (b"PK\x03\x04", b"PK\x05\x06")
_SAFE_CONTENT: Final = frozenset({"safetensors", "gguf", "onnx", "hdf5", "keras", "tflite"})
_BY_EXTENSION: Final = {
    ".safetensors": "safetensors",
    ".gguf": "gguf",
    ".onnx": "onnx",
    ".pt": "pytorch",
    ".pth": "pytorch",
    ".ckpt": "pytorch",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".joblib": "pickle",
    ".npy": "numpy",
    ".npz": "numpy",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".keras": "keras",
    ".tflite": "tflite",
}
_MAX_NPZ_MEMBERS: Final = 4096


def _ext(name: str | os.PathLike[str]) -> str:
    return PurePath(os.fspath(name)).suffix.lower()


def _basename(member: str) -> str:
    return member.rstrip("/").rsplit("/", 1)[-1]


def _pickle_members(entries: tuple[ZipEntry, ...]) -> list[str]:
    return [e.name for e in entries if _basename(e.name).lower().endswith((".pkl", ".pickle"))]


def _torch_pickle(entries: tuple[ZipEntry, ...]) -> ZipEntry | None:
    for e in entries:
        if _basename(e.name) == "data.pkl" and e.name.count("/") <= 1:
            return e
    return None


def _classify_zip(entries: tuple[ZipEntry, ...]) -> str:
    if _torch_pickle(entries) is not None:
        return "pytorch"
    files = [e.name for e in entries if not e.name.endswith("/")]
    if files and all(n.endswith(".npy") for n in files):
        return "numpy"
    top = {n for n in files if "/" not in n}
    if "config.json" in top and ("model.weights.h5" in top or "metadata.json" in top):
        return "keras"
    return "zip"


def _zip_hint(name: str | os.PathLike[str], first: bytes) -> str:
    """Guess a zip's kind from its first local header and the file name."""
    if len(first) >= 30 and first.startswith(b"PK\x03\x04"):
        (nlen,) = struct.unpack_from("<H", first, 26)
        if len(first) >= 30 + nlen:
            member = first[30 : 30 + nlen].decode("utf-8", errors="replace")
            if _basename(member) == "data.pkl":
                return "pytorch"
    ext = _ext(name)
    if ext in (".pt", ".pth", ".ckpt", ".bin"):
        return "pytorch"
    if ext == ".npz":
        return "numpy"
    if ext == ".keras":
        return "keras"
    return "zip"


def _looks_like_safetensors(first: bytes, size: int | None) -> bool:
    if len(first) < 10:
        return False
    (n,) = struct.unpack_from("<Q", first, 0)
    if not 2 <= n <= 1 << 40 or (size is not None and 8 + n > size):
        return False
    head = first[8 : 8 + min(n, 64)].lstrip(b" \t\r\n")
    return head.startswith(b"{")


def _looks_like_onnx(first: bytes) -> bool:
    # ModelProto serialises ir_version (field 1, varint) first, then a string or the graph.
    if len(first) < 3 or first[0] != 0x08 or not 1 <= first[1] <= 32:
        return False
    return first[2] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42)


def detect_format(
    path_or_name: str | os.PathLike[str],
    first_bytes: bytes,
    source: RangeSource | None = None,
) -> str | None:
    """Name the format of a file from its first bytes, then from its extension.

    Give ``source`` to let zip archives be classified from their central
    directory (read with a couple of ``read_at`` calls); without it a zip is
    classified from its first member name and its extension.
    """
    first = first_bytes
    if first[:4] == b"GGUF":
        return "gguf"
    if first[:4] in _ZIP_MAGICS:
        if source is not None:
            try:
                entries = read_zip_directory(source, name=os.fspath(path_or_name))
            except (FormatError, SizeLimitError):
                return _zip_hint(path_or_name, first)
            return _classify_zip(entries)
        return _zip_hint(path_or_name, first)
    if first.startswith(TORCH_LEGACY_MAGIC):
        return "pytorch"
    if is_raw_pickle(first):
        return "pickle"
    if first.startswith(NPY_MAGIC):
        return "numpy"
    if first.startswith(_HDF5_MAGIC):
        return "hdf5"
    if _looks_like_safetensors(first, source.size if source is not None else None):
        return "safetensors"
    if first[4:8] == b"TFL3":
        return "tflite"
    ext = _ext(path_or_name)
    if ext in _BY_EXTENSION:
        return _BY_EXTENSION[ext]
    if ext in UNSAFE_EXTENSIONS and looks_like_pickle(first):
        return "pickle"
    if _looks_like_onnx(first):
        return "onnx"
    return None


def is_pickle_based(
    name: str | os.PathLike[str], first_bytes: bytes, source: RangeSource | None = None
) -> bool:
    """Would loading this file unpickle something? (Rule in the module docstring.)

    ``first_bytes`` should be the first few KiB of the file (64 KiB is what
    :func:`inspect_file` uses); empty means the content could not be read.
    """
    ext = _ext(name)
    if not first_bytes:
        return ext in UNSAFE_EXTENSIONS
    if first_bytes[:4] in _ZIP_MAGICS and source is not None:
        try:
            info = _inspect_zip(CachedSource(source), os.fspath(name), "zip")
            if info.unsafe:
                return True
        except (FormatError, SizeLimitError):
            return ext in UNSAFE_EXTENSIONS
    fmt = detect_format(name, first_bytes, source)
    if fmt in ("pickle", "pytorch"):
        return True
    if fmt in _SAFE_CONTENT:
        return False
    if fmt == "numpy":
        if first_bytes.startswith(NPY_MAGIC):
            try:
                return parse_npy_header(first_bytes, name=os.fspath(name)).has_object
            except (FormatError, SizeLimitError):
                return True
        if source is None:
            return False
        try:
            return _inspect_zip(CachedSource(source), os.fspath(name), "numpy").unsafe
        except (FormatError, SizeLimitError):
            return True
    if fmt == "zip":
        if source is None:
            return ext in UNSAFE_EXTENSIONS
        try:
            entries = read_zip_directory(source, name=os.fspath(name))
        except (FormatError, SizeLimitError):
            return ext in UNSAFE_EXTENSIONS
        return bool(_pickle_members(entries))
    # unrecognised content: judge by name, except .bin (plain binary blobs are common)
    return ext in UNSAFE_EXTENSIONS and ext != ".bin"


def inspect_file(
    source: RangeSource,
    name: str,
    *,
    max_safetensors_header: int = DEFAULT_MAX_HEADER_SIZE,
    gguf_limits: GGUFLimits | None = None,
    max_onnx_scan: int = DEFAULT_MAX_SCAN,
    pickle_scan_limit: int = DEFAULT_SCAN_LIMIT,
) -> ModelFileInfo:
    """Detect the format of ``source`` (named ``name``) and describe it.

    Raises :class:`~modelreg.errors.FormatError` for unrecognised or malformed
    files, :class:`~modelreg.errors.SizeLimitError` when a header is over a cap,
    :class:`~modelreg.errors.UnsafeContentError` for references that escape the
    model directory (ONNX external data).
    """
    cached = source if isinstance(source, CachedSource) else CachedSource(source)
    first = cached.read_at(0, min(cached.size, PREFIX_READ))
    fmt = detect_format(name, first, cached)
    if fmt == "safetensors":
        return parse_safetensors(
            cached, name=name, max_header_size=max_safetensors_header, initial_read=PREFIX_READ
        )
    if fmt == "gguf":
        return parse_gguf(cached, name=name, limits=gguf_limits)
    if fmt == "onnx":
        return parse_onnx(cached, name=name, max_scan=max_onnx_scan)
    if fmt in ("pytorch", "pickle", "numpy", "zip", "keras") and first[:4] in _ZIP_MAGICS:
        return _inspect_zip(cached, name, fmt, pickle_scan_limit=pickle_scan_limit)
    if fmt == "numpy" and first.startswith(NPY_MAGIC):
        return _inspect_npy(cached, name, first)
    if fmt in ("pytorch", "pickle"):
        return _inspect_raw(cached, name, fmt, first, pickle_scan_limit)
    if fmt in ("hdf5", "keras", "tflite", "numpy"):
        # recognised by name or magic; no header parser for these (yet)
        return ModelFileInfo(format=fmt, metadata={"size": cached.size})
    ext = _ext(name)
    raise FormatError(
        f"{name}: not a recognised model file format (first bytes {first[:8]!r})",
        hint="supported: safetensors, GGUF, ONNX, PyTorch/pickle (detected only), numpy, "
        "Keras/HDF5, TFLite" + (f"; the extension {ext!r} did not help" if ext else ""),
    )


def _inspect_raw(
    source: RangeSource, name: str, fmt: str, first: bytes, limit: int
) -> ModelFileInfo:
    data = first if len(first) >= min(source.size, limit) else source.read_at(0, limit)
    ext = _ext(name)
    if is_raw_pickle(first) or looks_like_pickle(first):
        scan = scan_pickle(data, limit=limit)
        kind = (
            "legacy torch.save stream"
            if first.startswith(TORCH_LEGACY_MAGIC)
            else f"pickle (protocol {scan.protocol if scan.protocol is not None else '0/1'})"
        )
        return ModelFileInfo(
            format=fmt,
            metadata=_scan_metadata(scan),
            unsafe=True,
            unsafe_reason=f"{kind}: loading it runs code; {scan.describe()}",
        )
    return ModelFileInfo(
        format=fmt,
        metadata={"size": source.size},
        unsafe=True,
        unsafe_reason=f"extension {ext!r} is a pickle-based format and the content is not a "
        "recognised safe format (checked by name, fail safe)",
    )


def _scan_metadata(scan: PickleScan) -> dict[str, MetadataValue]:
    meta: dict[str, MetadataValue] = {"pickle_imports": ", ".join(scan.imports)}
    if scan.protocol is not None:
        meta["pickle_protocol"] = scan.protocol
    if scan.unexpected_imports:
        meta["pickle_unexpected_imports"] = ", ".join(scan.unexpected_imports)
    return meta


def _inspect_npy(source: RangeSource, name: str, first: bytes) -> ModelFileInfo:
    total = header_length(first, name=name)
    data = (
        first
        if len(first) >= total
        else read_exact(source, 0, total, name=name, what=".npy header")
    )
    hdr = parse_npy_header(data, name=name)
    avail = source.size - hdr.data_offset
    numel = 1
    for d in hdr.shape:
        numel *= d
    nbytes = numel * hdr.itemsize if hdr.itemsize is not None and not hdr.has_object else avail
    if nbytes > avail:
        raise FormatError(
            f"{name}: .npy array of shape {hdr.shape} ({hdr.descr}) needs {nbytes} bytes, "
            f"the file holds {avail}",
            hint="the file is truncated; save it again",
        )
    tensor = TensorInfo(PurePath(name).stem, hdr.descr, hdr.shape, hdr.data_offset, nbytes)
    return ModelFileInfo(
        format="numpy",
        tensors=(tensor,),
        header_size=hdr.data_offset,
        param_count=numel,
        dtypes=(hdr.descr,),
        unsafe=hdr.has_object,
        unsafe_reason=f"array dtype {hdr.descr} holds Python objects stored as a pickle"
        if hdr.has_object
        else None,
    )


def _inspect_zip(
    source: RangeSource, name: str, fmt: str, *, pickle_scan_limit: int = DEFAULT_SCAN_LIMIT
) -> ModelFileInfo:
    entries = read_zip_directory(source, name=name)
    pickles = _pickle_members(entries)
    meta: dict[str, MetadataValue] = {"zip_members": len(entries)}
    if pickles:
        meta["pickle_members"] = ", ".join(pickles[:32])
    if fmt == "numpy":
        return _inspect_npz(source, name, entries, meta)
    if not pickles:
        return ModelFileInfo(format=fmt, metadata=meta)
    target = _torch_pickle(entries)
    entry = target if target is not None else next(e for e in entries if e.name == pickles[0])
    try:
        scan: PickleScan | None = scan_pickle(
            member_prefix(source, entry, pickle_scan_limit, name=name), limit=pickle_scan_limit
        )
    except FormatError:
        scan = None
    what = "PyTorch checkpoint" if target is not None else "zip archive"
    reason = f"{what}: member {entry.name!r} is a pickle; loading it runs code"
    if scan is not None:
        meta.update(_scan_metadata(scan))
        reason += f"; {entry.name} {scan.describe()}"
    return ModelFileInfo(format=fmt, metadata=meta, unsafe=True, unsafe_reason=reason)


def _inspect_npz(
    source: RangeSource, name: str, entries: tuple[ZipEntry, ...], meta: dict[str, MetadataValue]
) -> ModelFileInfo:
    tensors: list[TensorInfo] = []
    objects: list[str] = []
    members = [e for e in entries if e.name.endswith(".npy")]
    if len(members) > _MAX_NPZ_MEMBERS:
        return ModelFileInfo(
            format="numpy",
            metadata=meta,
            unsafe=True,
            unsafe_reason=f"{len(members)} arrays, more than the {_MAX_NPZ_MEMBERS} checked "
            "for object dtypes (fail safe)",
        )
    for e in members:
        member = f"{name}:{e.name}"
        head = member_prefix(source, e, 512, name=member)
        total = header_length(head, name=member)
        if total > len(head):
            head = member_prefix(source, e, total, name=member)
        hdr = parse_npy_header(head, name=member)
        numel = 1
        for d in hdr.shape:
            numel *= d
        known = hdr.itemsize is not None and not hdr.has_object
        nbytes = (
            numel * hdr.itemsize
            if known and hdr.itemsize is not None
            else (e.uncompressed_size - hdr.data_offset)
        )
        offset = (
            member_data_offset(source, e, name=member) + hdr.data_offset if e.method == 0 else -1
        )
        tensors.append(TensorInfo(e.name[: -len(".npy")], hdr.descr, hdr.shape, offset, nbytes))
        if hdr.has_object:
            objects.append(e.name)
    info = ModelFileInfo(
        format="numpy",
        tensors=tuple(tensors),
        metadata=meta,
        param_count=sum(t.numel for t in tensors),
        dtypes=tuple(sorted({t.dtype for t in tensors})),
    )
    if objects:
        return replace(
            info,
            unsafe=True,
            unsafe_reason="arrays with object dtypes are stored as pickles: "
            + ", ".join(objects[:8]),
        )
    return info
