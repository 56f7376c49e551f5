"""Every tensor of a model, local or remote, from headers fetched with range reads.

:class:`BlobSource` turns a layer of any target (registry, local store, OCI
layout, packed directory) into a :class:`~modelreg.model.formats.RangeSource`
through ``target.fetch_range``; :class:`SplitSource` does the same for a file
stored as parts. The parsers (:func:`~modelreg.model.formats.inspect_file`)
then ask only for the bytes they need: one request of 64 KiB for a typical
safetensors or GGUF header (one more when the header is longer), a few for
ONNX. Against a registry that ignores ``Range`` (answers 200 with the whole
blob), ``fetch_range`` reads from the start and stops at the end of the range:
headers sit at the start of these formats, so that costs little more.

Nothing here verifies tensor bytes (none are read); headers are parsed within
the caps of :mod:`modelreg.model.formats` (safetensors header ≤ 100 MB, ...).
Pickle-based files are flagged from their first 64 KiB and never unpickled.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Final

from modelreg.content.base import ReadOnlyTarget, fetch_bytes
from modelreg.errors import FormatError, ModelRegError, SizeLimitError
from modelreg.model.formats import (
    PREFIX_READ,
    UNSAFE_EXTENSIONS,
    CachedSource,
    ModelFileInfo,
    inspect_file,
    is_pickle_based,
    parse_sharded_index,
)
from modelreg.model.formats._base import check_range
from modelreg.model.formats.safetensors import DEFAULT_MAX_INDEX_SIZE
from modelreg.model.metadata import modelpack_dtype
from modelreg.model.paths import safe_relpath
from modelreg.model.producers import SplitFile, plan_manifest
from modelreg.model.roles import guess_role
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import Manifest

__all__ = [
    "BlobSource",
    "FileTensors",
    "SplitSource",
    "TensorListing",
    "describe_file",
    "list_tensors",
]

_PARSED_EXT: Final = frozenset({".safetensors", ".gguf", ".onnx", ".npy", ".npz"})
_DOCKER_FORMATS: Final = {
    "application/vnd.docker.ai.gguf.v3": ".gguf",
    "application/vnd.docker.ai.safetensors": ".safetensors",
}


class FetchCounter:
    """Bytes and requests spent on range reads (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bytes = 0
        self.requests = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.bytes += n
            self.requests += 1


class BlobSource:
    """A RangeSource over one blob of a target, read with ``fetch_range``."""

    def __init__(
        self, target: ReadOnlyTarget, desc: Descriptor, counter: FetchCounter | None = None
    ) -> None:
        self._target = target
        self._desc = desc
        self._counter = counter

    @property
    def size(self) -> int:
        return self._desc.size

    def read_at(self, offset: int, length: int) -> bytes:
        check_range(offset, length)
        length = max(0, min(length, self._desc.size - offset))
        if length == 0:
            return b""
        data = self._target.fetch_range(self._desc, offset, length)
        if self._counter is not None:
            self._counter.add(len(data))
        return data


class SplitSource:
    """A RangeSource over a split file: whole-file offsets mapped onto its parts."""

    def __init__(
        self, target: ReadOnlyTarget, split: SplitFile, counter: FetchCounter | None = None
    ) -> None:
        self._split = split
        self._parts = [(p.offset, BlobSource(target, p.descriptor, counter)) for p in split.parts]

    @property
    def size(self) -> int:
        return self._split.size

    def read_at(self, offset: int, length: int) -> bytes:
        check_range(offset, length)
        end = min(offset + length, self._split.size)
        chunks = []
        for start, source in self._parts:
            stop = start + source.size
            if stop <= offset or start >= end:
                continue
            lo = max(offset, start) - start
            hi = min(end, stop) - start
            chunks.append(source.read_at(lo, hi - lo))
        return b"".join(chunks)


@dataclass
class FileTensors:
    """What the header of one file of an artifact says."""

    path: str
    size: int
    format: str | None = None
    info: ModelFileInfo | None = None
    unsafe: bool = False
    unsafe_reason: str | None = None
    error: str | None = None
    split: bool = False

    def rows(self) -> list[dict[str, Any]]:
        if self.info is None:
            return []
        return [
            {
                "file": self.path,
                "name": t.name,
                "dtype": t.dtype,
                "precision": modelpack_dtype(self.info.format, t.dtype),
                "shape": list(t.shape),
                "bytes": t.nbytes,
                "offset": t.offset,
                **({"location": t.location} if t.location is not None else {}),
            }
            for t in self.info.tensors
        ]

    def to_dict(self) -> dict[str, Any]:
        info = self.info
        return {
            "path": self.path,
            "size": self.size,
            "format": self.format,
            "split": self.split,
            "tensorCount": len(info.tensors) if info is not None else 0,
            "paramCount": info.param_count if info is not None else 0,
            "architecture": info.architecture if info is not None else None,
            "quantization": info.quantization if info is not None else None,
            "unsafe": self.unsafe,
            "unsafeReason": self.unsafe_reason,
            "error": self.error,
        }


@dataclass
class TensorListing:
    files: list[FileTensors] = field(default_factory=list)
    bytes_fetched: int = 0
    requests: int = 0
    index: dict[str, str] | None = None
    """``model.safetensors.index.json`` weight map, when the model has one."""
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def tensors(self) -> list[dict[str, Any]]:
        return [row for f in self.files for row in f.rows()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": [f.to_dict() for f in self.files],
            "tensors": self.tensors,
            "bytesFetched": self.bytes_fetched,
            "requests": self.requests,
            "problems": list(self.problems),
            "skipped": list(self.skipped),
        }


def _wanted(path: str, media_type: str) -> str | None:
    """The extension to parse the file as, or None to skip it."""
    ext = PurePosixPath(path).suffix.lower()
    if ext in _PARSED_EXT or ext in UNSAFE_EXTENSIONS:
        return ext
    if media_type in _DOCKER_FORMATS:
        return _DOCKER_FORMATS[media_type]
    if guess_role(path).role == "weight":
        return ext or ".bin"
    return None


def describe_file(source: Any, path: str) -> FileTensors:
    """Parse one file's header through a RangeSource; errors are reported, not raised."""
    ext = PurePosixPath(path).suffix.lower()
    cached = CachedSource(source)
    result = FileTensors(path, source.size)
    try:
        first = cached.read_at(0, min(cached.size, PREFIX_READ))
        try:
            result.unsafe = is_pickle_based(path, first, cached)
        except (FormatError, SizeLimitError):
            result.unsafe = ext in UNSAFE_EXTENSIONS
        info = inspect_file(cached, path)
    except ModelRegError as exc:
        result.error = exc.message
        if result.unsafe:
            result.unsafe_reason = f"extension {ext!r} is a pickle-based format"
        return result
    result.info = info
    result.format = info.format
    result.unsafe = result.unsafe or info.unsafe
    result.unsafe_reason = info.unsafe_reason if info.unsafe else None
    if result.unsafe and result.unsafe_reason is None:
        result.unsafe_reason = "pickle-based: loading it runs code"
    return result


def list_tensors(
    target: ReadOnlyTarget, manifest: Manifest, *, concurrency: int = 4
) -> TensorListing:
    """Parse the header of every weight file of ``manifest`` read from ``target``."""
    plan = plan_manifest(manifest)
    counter = FetchCounter()
    listing = TensorListing()
    jobs: list[tuple[str, Any, bool]] = []
    index_layer: Descriptor | None = None
    for r in plan.raw:
        path = safe_relpath(r.path, f"layer {r.index} path")
        if path.endswith(".safetensors.index.json") and index_layer is None:
            index_layer = r.descriptor
        if r.compressed:
            if _wanted(path, r.descriptor.media_type):
                listing.skipped.append(f"{path}: compressed layer, not read")
            continue
        if _wanted(path, r.descriptor.media_type):
            jobs.append((path, BlobSource(target, r.descriptor, counter), False))
    for s in plan.split:
        path = safe_relpath(s.path, "split file path")
        jobs.append((path, SplitSource(target, s, counter), True))
    for a in plan.archives:
        listing.skipped.append(f"{a.label}: archive layer, its files are not listed")

    def one(job: tuple[str, Any, bool]) -> FileTensors:
        path, source, is_split = job
        described = describe_file(source, path)
        described.split = is_split
        return described

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        listing.files = list(pool.map(one, jobs))
    listing.files.sort(key=lambda f: f.path)
    if index_layer is not None:
        _check_index(target, index_layer, listing, counter)
    listing.bytes_fetched = counter.bytes
    listing.requests = counter.requests
    return listing


def _check_index(
    target: ReadOnlyTarget, layer: Descriptor, listing: TensorListing, counter: FetchCounter
) -> None:
    try:
        data = fetch_bytes(target, layer, limit=DEFAULT_MAX_INDEX_SIZE, what="shard index")
        counter.add(len(data))
        weight_map = parse_sharded_index(data)
    except ModelRegError as exc:
        listing.problems.append(f"shard index: {exc.message}")
        return
    listing.index = weight_map
    found: dict[str, str] = {}
    for f in listing.files:
        if f.info is None:
            continue
        for t in f.info.tensors:
            found[t.name] = f.path
    for tensor, shard in sorted(weight_map.items()):
        where = found.get(tensor)
        if where is None:
            listing.problems.append(f"shard index lists {tensor!r} in {shard!r}; no file has it")
        elif PurePosixPath(where).name != PurePosixPath(shard).name and where != shard:
            listing.problems.append(f"shard index puts {tensor!r} in {shard!r}, it is in {where!r}")
    shard_files = {PurePosixPath(s).name for s in weight_map.values()}
    for name, where in sorted(found.items()):
        if PurePosixPath(where).name in shard_files and name not in weight_map:
            listing.problems.append(f"{where!r} holds {name!r}, which the shard index omits")
