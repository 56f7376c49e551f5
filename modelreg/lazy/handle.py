"""Open a model without pulling it: files, file objects and tensors, fetched on demand.

::

    with Client() as client, open_model(client, "registry.example.com/team/llm:v1") as model:
        for f in model.files:
            print(f.path, f.size, f.digest)
        with model.open("config.json") as fh:          # a binary file object
            config = json.load(fh)
        for t in model.tensors():                      # headers only
            print(t.name, t.dtype, t.shape)
        w = model.tensor("model.layers.0.self_attn.q_proj.weight")   # numpy array

``files`` lists every file a pull would write that can be read by range, named
as pull names it (:mod:`modelreg.lazy._files`), including the files of
modelreg's small-file groups (each read by Range from its group layer and
verified against its own digest); files inside other archive layers and
compressed single files are readable only after ``pull``: ``notes`` names them,
``pull_only`` holds their layers.

Everything served is verified first: with a chunk index (written by ``modelreg
push``), per chunk, against digests the manifest covers; without one, per blob
(:mod:`modelreg.lazy._engine`). ``verify=`` runs signature or policy checks
before the manifest is even read.
"""

from __future__ import annotations

import functools
import io
import os
import posixpath
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from modelreg import settings
from modelreg._closing import Closing
from modelreg._json import camel_fields
from modelreg.content.base import ReadOnlyTarget, fetch_bytes
from modelreg.content.layout import LayoutStore, LayoutTarget
from modelreg.copy import fetch_manifest
from modelreg.errors import (
    FormatError,
    IntegrityError,
    InvalidInputError,
    ModelRegError,
    NotFoundError,
)
from modelreg.lazy._cache import ChunkStore
from modelreg.lazy._engine import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_REQUEST,
    DEFAULT_MEMORY,
    DEFAULT_READAHEAD,
    Engine,
    SequentialDetector,
    host_ignores_range,
)
from modelreg.lazy._files import ModelFile, model_files
from modelreg.lazy._stream import SequentialStream
from modelreg.lazy._tensors import numpy_dtype, require_numpy
from modelreg.lazy.chunkindex import (
    ANN_TOC_DIGEST,
    ANN_TOC_SIZE,
    MAX_INDEX_BYTES,
    PREFIX_SIZE,
    WHOLE_FETCH_MAX,
    ChunkIndex,
    FileChunks,
    index_from_toc,
    parse_chunk_index,
    parse_toc,
    read_toc_length,
)
from modelreg.lazy.publish import find_chunk_index_referrer, index_descriptor_from_annotations
from modelreg.model.formats import GGUFLimits, ModelFileInfo, parse_gguf, parse_safetensors
from modelreg.model.formats.gguf import QUANTIZED_TYPES
from modelreg.model.layerfiles import LayerFile, read_config
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import Manifest

if TYPE_CHECKING:
    from modelreg.client import Client

__all__ = [
    "FileInfo",
    "LazyFile",
    "ModelHandle",
    "TensorRef",
    "Verifier",
    "open_model",
]

Verifier = Callable[[ReadOnlyTarget, Descriptor], None]
"""``verify(target, manifest_descriptor)``: raise (e.g. VerificationError) to refuse."""

CHUNK_STORE_DIR: Final = "modelreg-chunks"
_TENSOR_FORMATS: Final = {".safetensors": "safetensors", ".gguf": "gguf"}
_BUFFER: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What the handle knows about one file without reading it."""

    path: str
    size: int
    digest: Digest
    media_type: str
    mode: int
    indexed: bool
    """True when a chunk index covers it (chunk-granular reads); else whole-blob."""
    parts: int
    """Number of blobs holding it (more than 1 for split files)."""
    grouped: bool = False
    """It is a member of a small-file group layer: read by Range, verified whole."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **camel_fields(self, "path", "size"),
            "digest": str(self.digest),
            **camel_fields(self, "media_type", "indexed", "parts"),
        }
        if self.grouped:
            out["grouped"] = True
        return out


@dataclass(frozen=True, slots=True)
class TensorRef:
    """A tensor as described by its file's header (no data read)."""

    name: str
    file: str
    format: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    """Absolute offset of the tensor's data in its file."""
    nbytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            **camel_fields(self, "name", "file", "format", "dtype"),
            "shape": list(self.shape),
            **camel_fields(self, "offset", "nbytes"),
        }


class LazyFile(io.RawIOBase):
    """A read-only, seekable binary file over one model file; bytes arrive verified.

    Sequential reading triggers read-ahead (background fetches of the next
    chunks); once as many readers read sequentially as the engine has
    connections, each reads through a stream of its own instead
    (:mod:`modelreg.lazy._stream`), and a read may then return fewer bytes than
    asked, ending on a chunk boundary (as a raw file may: loop, or use the
    buffered file :meth:`ModelHandle.open` gives by default). A seek drops the
    stream. ``fileno()`` is not supported (use ``modelreg mount`` for tools that
    need a real file, e.g. mmap).
    """

    def __init__(self, handle: ModelHandle, file: ModelFile, readahead: int) -> None:
        super().__init__()
        self._handle = handle
        self._file = file
        self._pos = 0
        self._readahead = readahead
        self._detector = SequentialDetector(readahead)
        self._stream: SequentialStream | None = None
        self._sequential = False
        self.name = file.path

    @property
    def size(self) -> int:
        return self._file.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("seek on a closed file")
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._file.size + offset
        else:
            raise ValueError(f"invalid whence {whence!r}")
        if pos < 0:
            raise OSError(22, "negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("read from a closed file")
        view = memoryview(buffer).cast("B")
        engine = self._handle._engine
        n: int | None = None
        if self._stream is not None:
            if self._stream.position == self._pos:
                n = self._stream.readinto(self._pos, view)
            else:
                self._end_stream()  # a seek: reads elsewhere go the read path's way
        if n is None:
            n = engine.readinto(self._file, self._pos, view)
        ahead = self._detector.on_read(self._pos, n)
        self._pos += n
        self._note_sequential(ahead is not None)
        if ahead is not None and self._stream is None:
            self._stream = engine.open_stream(self._file, self._pos)
            if self._stream is None:
                engine.prefetch(self._file, ahead[0], ahead[1], budget=self._readahead)
        return n

    def close(self) -> None:
        if not self.closed:
            self._end_stream()
            self._note_sequential(False)
        super().close()

    def _note_sequential(self, on: bool) -> None:
        """Tell the engine when this reader starts or stops reading sequentially (it
        decides on streams by how many do); a reader that stops drops its stream."""
        if on == self._sequential:
            return
        self._sequential = on
        self._handle._engine.reading_sequentially(on)
        if not on:
            self._end_stream()

    def _end_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def readall(self) -> bytes:
        remaining = max(0, self._file.size - self._pos)
        buf = bytearray(remaining)
        got = self.readinto(buf) if remaining else 0
        return bytes(buf[:got])


class _HeaderSource:
    """RangeSource over a lazy file for header parsing.

    With ``limit`` (the head length from the chunk index), bytes at or beyond it are
    never fetched: they read as zeros and ``padded`` is set. A parser that consumes
    only the header (which ends at ``limit``) never looks at them; the caller checks
    that the parsed header ends within ``limit`` and otherwise parses again without
    a limit, so no zero byte ever decides anything.
    """

    def __init__(self, engine: Engine, file: ModelFile, limit: int | None) -> None:
        self._engine = engine
        self._file = file
        self._limit = limit
        self.size = file.size  # a model file's size is fixed by its manifest
        self.padded = False

    def read_at(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        if self._limit is None:
            return self._engine.read(self._file, offset, end - offset)
        capped = max(offset, min(end, self._limit))
        data = self._engine.read(self._file, offset, capped - offset) if capped > offset else b""
        if end > capped:
            self.padded = True
            data += bytes(end - capped)
        return data


class ModelHandle(Closing):
    """An opened model: use :func:`open_model`. Thread-safe; close it (or use ``with``)."""

    def __init__(
        self,
        *,
        reference: str,
        target: ReadOnlyTarget,
        descriptor: Descriptor,
        manifest: Manifest,
        files: list[ModelFile],
        notes: list[str],
        pull_only: list[LayerFile],
        index: ChunkIndex | None,
        index_descriptor: Descriptor | None,
        engine: Engine,
        readahead: int,
        index_bytes: int,
    ) -> None:
        self.reference = reference
        self.target = target
        self.descriptor = descriptor
        self.manifest = manifest
        self.notes = notes
        self.pull_only = pull_only
        """Layers whose files only ``pull`` writes (archives, compressed files)."""
        self.index = index
        self.index_descriptor = index_descriptor
        self.readahead = readahead
        self._engine = engine
        self._files = {f.path: f for f in files}
        self._order = [f.path for f in files]
        self._tensors: dict[str, list[TensorRef]] = {}
        self._big_endian: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._index_bytes = index_bytes
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        self._closed = True
        self._engine.close()
        for closer in getattr(self, "_owned", ()):
            closer()
        self._owned: list[Callable[[], None]] = []

    def adopt(self, closer: Callable[[], None]) -> None:
        """Run ``closer`` when the handle closes (e.g. a client opened for this handle)."""
        if not hasattr(self, "_owned"):
            self._owned = []
        self._owned.append(closer)

    def __repr__(self) -> str:
        return f"ModelHandle({self.reference!r}, {len(self._files)} files)"

    @property
    def digest(self) -> Digest:
        return self.descriptor.digest

    @property
    def stats(self) -> dict[str, int]:
        """Where bytes came from: remote bytes/requests, chunks from disk/memory, ..."""
        return {**self._engine.stats.to_dict(), "indexBytes": self._index_bytes}

    # ------------------------------------------------------------------ files
    @property
    def files(self) -> list[FileInfo]:
        out = []
        for path in self._order:
            f = self._files[path]
            out.append(
                FileInfo(
                    path=f.path,
                    size=f.size,
                    digest=f.digest,
                    media_type=f.media_type,
                    mode=f.mode,
                    indexed=not f.grouped and self._engine.chunks_of(f) is not None,
                    parts=len(f.segments),
                    grouped=f.grouped,
                )
            )
        return out

    def model_file(self, path: str) -> ModelFile:
        norm = posixpath.normpath(path.lstrip("/")) if path else path
        f = self._files.get(norm)
        if f is None:
            raise NotFoundError(
                f"{self.reference} has no file {path!r}",
                hint="list the files with handle.files",
            )
        return f

    def open(self, path: str, *, buffering: int = -1) -> io.BufferedReader | LazyFile:
        """A binary file object over ``path``. ``buffering=0`` gives the raw LazyFile."""
        if self._closed:
            raise InvalidInputError("the model handle is closed")
        raw = LazyFile(self, self.model_file(path), self.readahead)
        if buffering == 0:
            return raw
        return io.BufferedReader(raw, buffer_size=buffering if buffering > 0 else _BUFFER)

    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes ``[offset, offset + length)`` of a file (to EOF when length is None)."""
        f = self.model_file(path)
        if length is None:
            length = max(0, f.size - offset)
        return self._engine.read(f, offset, length)

    def readinto(self, path: str, offset: int, buffer: Any) -> int:
        return self._engine.readinto(self.model_file(path), offset, memoryview(buffer).cast("B"))

    def prefetch(self, path: str, offset: int = 0, length: int | None = None) -> None:
        """Start fetching a range in the background (best effort, never raises)."""
        f = self.model_file(path)
        if length is None:
            length = f.size - offset
        self._engine.prefetch(f, offset, length, budget=max(self.readahead, length))

    # ------------------------------------------------------------------ tensors
    def tensor_files(self) -> list[str]:
        """Files holding tensors this handle can list (safetensors and GGUF, by name)."""
        return [p for p in self._order if _tensor_format(p) is not None]

    def tensors(self, file: str | None = None) -> list[TensorRef]:
        """Every tensor (name, dtype, shape, offset, size) in file order; reads headers only."""
        paths = [self.model_file(file).path] if file is not None else self.tensor_files()
        out: list[TensorRef] = []
        for path in paths:
            out.extend(self._file_tensors(path))
        return out

    def _file_tensors(self, path: str) -> list[TensorRef]:
        with self._lock:
            cached = self._tensors.get(path)
        if cached is not None:
            return cached
        fmt = _tensor_format(path)
        if fmt is None:
            raise FormatError(
                f"{path!r} is not a safetensors or GGUF file",
                hint="tensors are listed for *.safetensors and *.gguf files",
            )
        f = self._files[path]
        info = self._parse_header(f, fmt)
        refs = [
            TensorRef(t.name, path, fmt, t.dtype, t.shape, t.offset, t.nbytes)
            for t in sorted(info.tensors, key=lambda t: (t.offset, t.name))
        ]
        big_endian = False
        if fmt == "gguf" and f.size >= 8:
            version = self._engine.read(f, 4, 4)
            raw = int.from_bytes(version, "little")
            big_endian = raw != 0 and raw & 0xFFFF == 0
        with self._lock:
            self._tensors[path] = refs
            self._big_endian[path] = big_endian
        return refs

    def _parse_header(self, f: ModelFile, fmt: str) -> ModelFileInfo:
        fc = self._engine.chunks_of(f)
        limit = fc.head if fc is not None and fc.head > 0 else None
        source = _HeaderSource(self._engine, f, limit)
        try:
            info = _parse(fmt, source, f.path)
        except ModelRegError:
            if not source.padded:
                raise
            info = None
        if info is not None and (not source.padded or info.header_size <= (limit or 0)):
            return info
        return _parse(fmt, _HeaderSource(self._engine, f, None), f.path)

    def tensor_ref(self, name: str, file: str | None = None) -> TensorRef:
        matches = [t for t in self.tensors(file) if t.name == name]
        if not matches:
            raise NotFoundError(
                f"{self.reference} has no tensor {name!r}" + (f" in {file!r}" if file else ""),
                hint="list them with handle.tensors()",
            )
        if len(matches) > 1:
            raise InvalidInputError(
                f"tensor {name!r} is in several files: "
                + ", ".join(sorted({t.file for t in matches})),
                hint="pass file= to choose one",
            )
        return matches[0]

    def tensor(self, name: str, *, file: str | None = None, raw: bool = False) -> Any:
        """The tensor as a NumPy array (writable, owning its memory).

        ``raw=True`` returns the stored bytes as ``uint8`` (for quantized GGUF
        types: shape ``(*shape[:-1], row_bytes)``; otherwise 1-D).
        """
        return self._materialize(self.tensor_ref(name, file), raw)

    def tensor_bytes(self, name: str, *, file: str | None = None) -> bytes:
        ref = self.tensor_ref(name, file)
        return self._engine.read(self._files[ref.file], ref.offset, ref.nbytes)

    def iter_tensors(
        self, file: str | None = None, *, raw: bool = False
    ) -> Iterator[tuple[TensorRef, Any]]:
        """Yield ``(ref, array)`` in file order, fetching the next tensors ahead."""
        refs = self.tensors(file)
        for k, ref in enumerate(refs):
            budget = self.readahead
            ahead = 0
            for nxt in refs[k + 1 :]:
                if ahead >= budget:
                    break
                self._engine.prefetch(self._files[nxt.file], nxt.offset, nxt.nbytes, budget=budget)
                ahead += nxt.nbytes
            yield ref, self._materialize(ref, raw)

    def _materialize(self, ref: TensorRef, raw: bool) -> Any:
        np = require_numpy()
        f = self._files[ref.file]
        if not raw:
            dtype = numpy_dtype(
                ref.format, ref.dtype, big_endian=self._big_endian.get(ref.file, False)
            )
        buf = bytearray(ref.nbytes)
        if ref.nbytes:
            self._engine.readinto(f, ref.offset, memoryview(buf))
        if raw:
            arr = np.frombuffer(buf, dtype=np.uint8)
            if ref.format == "gguf" and ref.dtype in QUANTIZED_TYPES and ref.shape:
                rows = 1
                for d in ref.shape[:-1]:
                    rows *= d
                if rows and ref.nbytes % rows == 0:
                    return arr.reshape((*ref.shape[:-1], ref.nbytes // rows))
            return arr
        return np.frombuffer(buf, dtype=dtype).reshape(ref.shape)


def _tensor_format(path: str) -> str | None:
    return _TENSOR_FORMATS.get(os.path.splitext(path)[1].lower())


def _parse(fmt: str, source: _HeaderSource, name: str) -> ModelFileInfo:
    if fmt == "safetensors":
        return parse_safetensors(source, name=name)
    return parse_gguf(source, name=name, limits=GGUFLimits())


# --------------------------------------------------------------------------- opening


def _load_index(
    target: ReadOnlyTarget,
    desc: Descriptor,
    store: LayoutStore,
    chunk_store: ChunkStore | None,
    source_is_store: bool,
) -> tuple[ChunkIndex, int]:
    """Fetch and verify the chunk index (whole when small, else TOC + pages on demand)."""
    if store.has_blob(desc.digest):
        try:
            data = fetch_bytes(store.target(None), desc, limit=MAX_INDEX_BYTES, what="chunk index")
            return parse_chunk_index(data), 0
        except ModelRegError:
            store.evict(desc.digest)
    if source_is_store:
        raise NotFoundError(f"chunk index {desc.digest} is not in the local store")
    if desc.size <= WHOLE_FETCH_MAX or host_ignores_range(target):
        data = fetch_bytes(target, desc, limit=MAX_INDEX_BYTES, what="chunk index")
        index = parse_chunk_index(data)
        try:
            store.write_blob(desc, io.BytesIO(data))
        except OSError:
            pass
        return index, len(data)
    toc_size = int(desc.annotations[ANN_TOC_SIZE])
    toc_digest = Digest.parse(desc.annotations[ANN_TOC_DIGEST])
    key = bytes.fromhex(toc_digest.hex)
    fetched = 0
    toc = chunk_store.get(key, toc_size) if chunk_store is not None else None
    if toc is None:
        toc = target.fetch_range(desc, 0, toc_size)
        fetched += len(toc)
        if len(toc) != toc_size or Digest.from_bytes(toc) != toc_digest:
            raise IntegrityError(
                f"the table of contents of chunk index {desc.digest} does not match the digest "
                "the manifest gives",
                hint="the registry serves tampered or corrupt bytes; nothing was used",
            )
        if chunk_store is not None:
            chunk_store.put(key, toc)
    toc_len = read_toc_length(toc[:PREFIX_SIZE], desc.size)
    if PREFIX_SIZE + toc_len != toc_size:
        raise FormatError("chunk index: the TOC size in the manifest disagrees with the index")
    files = parse_toc(toc[PREFIX_SIZE:], desc.size)

    def loader(fc: FileChunks, page: int) -> bytes:
        offset, length = fc.page_range(page)
        digest = fc.page_digests[page]
        if chunk_store is not None:
            cached = chunk_store.get(digest, length, algorithm=fc.algorithm)
            if cached is not None:
                return cached
        data = target.fetch_range(desc, offset, length)
        if chunk_store is not None and len(data) == length and fc.hash_chunk(data) == digest:
            chunk_store.put(digest, data, algorithm=fc.algorithm)
        return data

    return index_from_toc(files, loader), fetched


@dataclass(frozen=True)
class _IndexPlace:
    """Where a chunk index is cached once fetched."""

    store: LayoutStore
    chunk_store: ChunkStore | None
    source_is_store: bool


_WHOLE_BLOBS: Final = "files are fetched whole and verified on first read"


def _discover_index(
    target: ReadOnlyTarget,
    desc: Descriptor,
    manifest: Manifest,
    files: list[ModelFile],
    place: _IndexPlace,
    *,
    reference: str,
    referrers: bool,
    warn: Callable[[str], None],
    notes: list[str],
) -> tuple[ChunkIndex | None, int, Descriptor | None]:
    """The chunk index to read ``files`` with: (index, bytes fetched, its descriptor).

    First the one the manifest names (covered by the manifest digest). Else, with
    ``referrers``, an index referrer (``modelreg index REF``), used only when its
    blob matches the referrer and every file it lists has the manifest's size and
    digest; it is unanchored (the manifest digest does not cover it), which the
    notes say. Without a usable index the notes say files are verified whole.
    """
    named = index_descriptor_from_annotations(manifest.annotations)
    load = functools.partial(
        _load_index,
        target,
        store=place.store,
        chunk_store=place.chunk_store,
        source_is_store=place.source_is_store,
    )
    if named is not None:
        try:
            index, fetched = load(named)
        except NotFoundError:
            warn(
                f"the chunk index {named.digest} named by {reference} is not in "
                f"{target.name}; reading it blob by blob "
                "(each file is fetched whole and verified)"
            )
            notes.append(f"chunk index missing: {_WHOLE_BLOBS}")
            return None, 0, named
        return index, fetched, named
    if not files:
        return None, 0, None
    found = None
    if referrers:
        try:
            found = find_chunk_index_referrer(target, desc)
        except ModelRegError as exc:
            warn(f"could not list the chunk index referrers of {reference}: {exc.message}")
    if found is None:
        notes.append(f"no chunk index: {_WHOLE_BLOBS} (`modelreg index REF` adds one)")
        return None, 0, None
    ref_desc, index_desc = found
    try:
        index, fetched = load(index_desc)
        _check_index(index, files)
    except ModelRegError as exc:
        warn(
            f"the chunk index referrer {ref_desc.digest} of {reference} was refused: {exc.message}"
        )
        notes.append(f"chunk index refused: {_WHOLE_BLOBS}")
        return None, 0, None
    notes.append(
        f"chunk index from referrer {ref_desc.digest}, which the manifest digest does not "
        "cover: chunks are verified against it (chunk_index_referrers=True: the registry "
        "is trusted)"
    )
    return index, fetched, index_desc


def _check_index(index: ChunkIndex, files: list[ModelFile]) -> None:
    """An index that is not covered by the manifest must agree with it on every file."""
    for f in files:
        fc = index.get(f.path)
        if fc is not None and (fc.size, fc.digest) != (f.size, f.digest):
            raise FormatError(
                f"it describes {f.path!r} as {fc.size} bytes with digest {fc.digest}, the "
                f"manifest as {f.size} bytes with digest {f.digest}"
            )


def _fetch_manifest(target: ReadOnlyTarget, desc: Descriptor) -> Manifest:
    return fetch_manifest(
        target,
        desc,
        expected="a model manifest",
        hint="open one of its manifests by digest (see `modelreg inspect`)",
    )


def open_model(
    client_or_target: Client | ReadOnlyTarget,
    ref: str,
    *,
    cache: LayoutStore | str | os.PathLike[str] | None = None,
    verify: Verifier | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    readahead: int = DEFAULT_READAHEAD,
    memory: int = DEFAULT_MEMORY,
    max_request: int = DEFAULT_MAX_REQUEST,
    chunk_cache: bool = True,
    on_warning: Callable[[str], None] | None = None,
    chunk_index_referrers: bool = False,
) -> ModelHandle:
    """Open a model for lazy, verified reading.

    ``client_or_target``: a :class:`modelreg.Client` (``ref`` is any reference it
    resolves: registry, local store, ``oci:DIR``) or a target (``ref`` is a tag or
    digest in it). ``cache``: the local OCI store used as cache (default: the
    client's store, else ``$MODELREG_HOME/store``); verified chunks go to its
    ``modelreg-chunks/`` directory unless ``chunk_cache=False``. ``verify``: called
    as ``verify(target, manifest_descriptor)`` before anything else is read; raise
    to refuse. ``concurrency``: parallel Range requests. ``readahead``: bytes
    fetched ahead of sequential readers (0 disables). ``memory``: bytes of
    verified chunks kept in memory. ``max_request``: largest single Range request.
    ``chunk_index_referrers``: when the manifest names no chunk index, use one
    stored as a referrer (``modelreg index REF``). Off by default: the manifest
    digest does not cover such an index, so a registry that forged both the index
    and the bytes would have them "verified" chunk by chunk; without it, every
    blob is verified whole. Turn it on where the registry is trusted (or the
    referrer is signed and checked through ``verify``). ``handle.notes`` says
    which verification applies.
    """
    if concurrency < 1 or max_request < 1 or readahead < 0 or memory < 0:
        raise InvalidInputError(
            "concurrency and max_request must be positive, readahead and memory non-negative"
        )
    from modelreg.client import Client

    store: LayoutStore
    target: ReadOnlyTarget
    own_settings: settings.Settings
    if isinstance(client_or_target, Client):
        client = client_or_target
        own_settings = client.settings
        ref_obj, target, desc = client.resolve(ref)
        reference = str(ref_obj.with_digest(desc.digest))
        if on_warning is None:
            on_warning = client.options.on_warning
        if cache is None:
            store = client.store
        else:
            store = cache if isinstance(cache, LayoutStore) else LayoutStore(Path(cache))
    else:
        target = client_or_target
        desc = target.resolve(ref)
        reference = f"{target.name}@{desc.digest}"
        own_settings = settings.Settings.from_env()
        if cache is None:
            store = LayoutStore(own_settings.store_dir)
        else:
            store = cache if isinstance(cache, LayoutStore) else LayoutStore(Path(cache))
    if verify is not None:
        verify(target, desc)
    warn = on_warning or (lambda _m: None)
    source_is_store = isinstance(target, LayoutTarget) and (
        target.store.root.resolve() == store.root.resolve()
    )
    manifest = _fetch_manifest(target, desc)
    files, pull_only, notes = model_files(manifest, read_config(target, manifest))
    chunk_store = (
        ChunkStore.from_env(store.root / CHUNK_STORE_DIR, own_settings) if chunk_cache else None
    )
    index: ChunkIndex | None = None
    index_bytes = 0
    index, index_bytes, index_desc = _discover_index(
        target,
        desc,
        manifest,
        files,
        _IndexPlace(store, chunk_store, source_is_store),
        reference=reference,
        referrers=chunk_index_referrers,
        warn=warn,
        notes=notes,
    )
    engine = Engine(
        target,
        files,
        index,
        store=store,
        chunk_store=chunk_store,
        concurrency=concurrency,
        max_request=max_request,
        memory=memory,
        source_is_store=source_is_store,
        on_warning=warn,
    )
    return ModelHandle(
        reference=reference,
        target=target,
        descriptor=desc,
        manifest=manifest,
        files=files,
        notes=notes,
        pull_only=pull_only,
        index=index,
        index_descriptor=index_desc,
        engine=engine,
        readahead=readahead,
        index_bytes=index_bytes,
    )
