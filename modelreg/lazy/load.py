"""Streaming load: a model's tensors from a registry straight into memory, verified.

What an inference server does after a pull (read every tensor into memory),
without the pull: ``load`` lists the tensors from the file headers, allocates
the memory each selected tensor will live in, and has the lazy engine
(:meth:`~modelreg.lazy._engine.Engine.fill`) read concurrent Range requests
straight into it. No byte goes to disk and there is no intermediate copy: the
registry target reads the socket into the tensor's own buffer.

Memory
======

One buffer per tensor (per shard with ``tensor_parallel``), allocated before
its bytes are requested: NumPy arrays own theirs; with ``framework="torch"``
the buffer *is* a ``torch.uint8`` tensor's storage and the tensor handed out is
a dtype view of it (``Tensor.view(dtype).reshape(shape)``: no copy). Bytes of a
fetched chunk that no selected tensor holds (a tensor left out, another rank's
columns) go to scratch buffers that live only while their request is checked.
Peak memory is the selected tensors plus ``concurrency`` requests of scratch at
most; a consumer of :func:`iter_load` that drops each tensor after use keeps
only what it holds.

Verification
============

A tensor is handed out only after every byte it holds was verified:

* with a chunk index, per chunk: each request covers whole chunks, every chunk
  is hashed (on the worker that fetched it) against the index the manifest
  covers, and a tensor is released when all the requests covering it passed;
* without one, per blob: the blob's requests are hashed in order as they
  arrive and released together once the whole blob matched its digest, so the
  first array is handed out only after the whole blob was read and verified
  (``tensor_parallel`` and ``tensors=`` then save memory, not transfer). The
  header, read once unverified to plan, is read again as part of the blob and
  must be byte-identical to what was planned from.

After a failure nothing more is handed out: :func:`iter_load` raises the
:class:`~modelreg.errors.IntegrityError` and stops; :func:`load` returns nothing.

Tensor parallelism
==================

``tensor_parallel=(rank, world)`` loads only rank ``rank``'s shard of each split
tensor. The split dimension comes from ``split`` (a mapping name -> dim, or a
callable ``TensorRef -> dim``; None means replicated, loaded whole); by default
2-D tensors are split along dim 0 (rows) and every other tensor is replicated.
Shards follow ``numpy.array_split``: the first ``size % world`` ranks get one
more. A row shard is one contiguous range; a shard along dim ``d > 0`` is one
range per index of the leading dims. Only the chunks covering the shard are
fetched, so a row shard moves its own bytes plus at most a chunk at each end;
a column shard of a tensor whose rows are shorter than a chunk still moves
(nearly) the whole tensor, since a chunk can only be verified whole.
"""

from __future__ import annotations

import fnmatch
import mmap
import os
import queue
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from modelreg.content.base import ReadOnlyTarget
from modelreg.errors import (
    FormatError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    UnsupportedError,
)
from modelreg.lazy._engine import FillRequest
from modelreg.lazy._files import ModelFile
from modelreg.lazy._tensors import numpy_dtype, require_numpy
from modelreg.lazy.handle import ModelHandle, TensorRef, Verifier, open_model
from modelreg.model.formats import GGUFLimits, ModelFileInfo, parse_gguf, parse_safetensors

if TYPE_CHECKING:
    from modelreg.client import Client

__all__ = [
    "DEFAULT_LOAD_CONCURRENCY",
    "DEFAULT_LOAD_MAX_REQUEST",
    "Framework",
    "SplitSpec",
    "TensorSelector",
    "iter_load",
    "load_model",
]

Framework = Literal["numpy", "torch"]
TensorSelector = Collection[str] | Callable[[str], bool]
"""Tensor names to load, or a predicate on the name."""
SplitSpec = Mapping[str, int | None] | Callable[[TensorRef], int | None]
"""The dimension along which a tensor is split across ranks; None: replicated."""

DEFAULT_LOAD_CONCURRENCY: Final = 4
"""Measured on 2 vCPU: 8 parallel requests were slower than 4 (the registry shares the cores)."""
DEFAULT_LOAD_MAX_REQUEST: Final = 64 * 1024 * 1024
"""Bytes per Range request of a load. Larger than lazy reads' 16 MiB: a load wants every
byte, and each request costs the client about a millisecond of Python and Distribution more
(4 GiB: 3.5-3.8 s in 64 MiB requests against 4.75 s in 16 MiB ones, the registry's CPU
2.4-2.5 s against 3.5 s; 256 MiB gained nothing more). Scratch for bytes no selected tensor
holds is at most ``concurrency`` such requests."""
_HEADER_MEMORY: Final = 8 * 1024 * 1024
_MAPPED_FROM: Final = 1024 * 1024
"""NumPy tensors this large or larger get a mapping of their own (see _allocate)."""
_FORMATS: Final = {".safetensors": "safetensors", ".gguf": "gguf"}


def _torch_dtype(torch: Any, dtype: str) -> Any:
    """The torch dtype of a safetensors/GGUF dtype name, or None."""
    return {
        "F64": torch.float64,
        "F32": torch.float32,
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "I64": torch.int64,
        "I32": torch.int32,
        "I16": torch.int16,
        "I8": torch.int8,
        "U8": torch.uint8,
        "U16": torch.uint16,
        "U32": torch.uint32,
        "U64": torch.uint64,
        "BOOL": torch.bool,
        "C64": torch.complex64,
        "F8_E4M3": torch.float8_e4m3fn,
        "F8_E5M2": torch.float8_e5m2,
    }.get(dtype)


@dataclass
class _Planned:
    """One tensor (or shard) to load: where its bytes are and where they go."""

    name: str
    file: ModelFile
    shape: tuple[int, ...]
    pieces: list[tuple[int, int]]
    """``(file offset, length)`` ranges, in order; their concatenation is the tensor."""
    nbytes: int
    make: Callable[[Any], Any]
    """Buffer -> the array handed out (a view, no copy)."""
    buffer: Any = None
    waiting: int = 0
    requests: list[FillRequest] = field(default_factory=list)


class _PrefixSource:
    """A RangeSource over a blob's first bytes, read unverified for planning only.

    It grows one contiguous prefix, so everything a parser looked at is
    ``prefix``; the caller checks it against the verified bytes later."""

    def __init__(self, handle: ModelHandle, file: ModelFile) -> None:
        self._handle = handle
        self._file = file
        self.prefix = bytearray()

    @property
    def size(self) -> int:
        return self._file.size

    def read_at(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self._file.size)
        if end > len(self.prefix):
            want = min(self._file.size, max(end, 2 * len(self.prefix), 64 * 1024))
            engine = self._handle._engine
            more = bytearray(want - len(self.prefix))
            engine._fetch_into(self._file, len(self.prefix), [memoryview(more)])
            self.prefix += more
        return bytes(self.prefix[offset:end])


def _format(path: str) -> str | None:
    return _FORMATS.get(os.path.splitext(path)[1].lower())


def _split_bounds(size: int, rank: int, world: int) -> tuple[int, int]:
    base, extra = divmod(size, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def _shard(
    ref: TensorRef, dim: int | None, tp: tuple[int, int] | None
) -> tuple[tuple[int, ...], list[tuple[int, int]]]:
    """The shape and file ranges of this rank's part of ``ref``."""
    numel = 1
    for d in ref.shape:
        numel *= d
    if tp is None or dim is None or numel == 0:
        return ref.shape, [(ref.offset, ref.nbytes)]
    if not -len(ref.shape) <= dim < len(ref.shape):
        raise InvalidInputError(
            f"tensor {ref.name!r} of shape {list(ref.shape)} has no dimension {dim} to split"
        )
    dim %= len(ref.shape)
    itemsize = ref.nbytes // numel
    outer = 1
    for d in ref.shape[:dim]:
        outer *= d
    inner = itemsize
    for d in ref.shape[dim + 1 :]:
        inner *= d
    size = ref.shape[dim]
    lo, hi = _split_bounds(size, *tp)
    shape = (*ref.shape[:dim], hi - lo, *ref.shape[dim + 1 :])
    if hi == lo:
        return shape, []
    row = size * inner
    pieces = [(ref.offset + o * row + lo * inner, (hi - lo) * inner) for o in range(outer)]
    if dim == 0 or (lo == 0 and hi == size):
        pieces = [(pieces[0][0], sum(n for _, n in pieces))]
    return shape, pieces


class _Loader:
    def __init__(
        self,
        handle: ModelHandle,
        *,
        framework: Framework,
        device: str,
        files: Collection[str] | None,
        tensors: TensorSelector | None,
        tensor_parallel: tuple[int, int] | None,
        split: SplitSpec | None,
    ) -> None:
        if framework not in ("numpy", "torch"):
            raise InvalidInputError(f"framework must be 'numpy' or 'torch', not {framework!r}")
        if framework == "numpy" and device != "cpu":
            raise InvalidInputError("NumPy arrays live on the CPU: device must be 'cpu'")
        if tensor_parallel is not None:
            rank, world = tensor_parallel
            if world < 1 or not 0 <= rank < world:
                raise InvalidInputError(
                    f"tensor_parallel=(rank, world) needs 0 <= rank < world, not {tensor_parallel}"
                )
        self.handle = handle
        self.framework = framework
        self.device = device
        self.files = files
        self.tensors = tensors
        self.tp = tensor_parallel
        self.split = split
        self.prefixes: dict[str, bytearray] = {}
        self.header_views: dict[str, Any] = {}
        self.order: list[str] = []
        self.torch: Any = None
        if framework == "torch":
            from modelreg._extras import require

            self.torch = require("torch", "torch", "modelreg.load(framework='torch')")

    # ------------------------------------------------------------------ planning
    def _selected_files(self) -> list[ModelFile]:
        paths = [f.path for f in self.handle.files if _format(f.path) is not None]
        if self.files is not None:
            globs = [self.files] if isinstance(self.files, str) else list(self.files)
            paths = [p for p in paths if any(fnmatch.fnmatchcase(p, g) for g in globs)]
            if not paths:
                raise NotFoundError(
                    f"no safetensors or GGUF file of {self.handle.reference} matches "
                    f"{', '.join(globs)}",
                    hint="list the files with `modelreg open`/handle.files",
                )
        return [self.handle.model_file(p) for p in paths]

    def _refs(self, f: ModelFile) -> list[TensorRef]:
        if self.handle._engine.chunks_of(f) is not None:
            return self.handle.tensors(f.path)
        fmt = _format(f.path)
        assert fmt is not None
        source = _PrefixSource(self.handle, f)
        info: ModelFileInfo
        if fmt == "safetensors":
            info = parse_safetensors(source, name=f.path)
        else:
            info = parse_gguf(source, name=f.path, limits=GGUFLimits())
            version = source.read_at(4, 4)
            raw = int.from_bytes(version, "little")
            self.handle._big_endian[f.path] = raw != 0 and raw & 0xFFFF == 0
        # what decided the plan: the header (the data section starts after it)
        self.prefixes[f.path] = source.prefix[: info.header_size]
        return [
            TensorRef(t.name, f.path, fmt, t.dtype, t.shape, t.offset, t.nbytes)
            for t in sorted(info.tensors, key=lambda t: (t.offset, t.name))
        ]

    def _wanted(self, refs: list[TensorRef]) -> list[TensorRef]:
        if self.tensors is None:
            return refs
        if callable(self.tensors):
            pick = self.tensors
            return [r for r in refs if pick(r.name)]
        names = {self.tensors} if isinstance(self.tensors, str) else set(self.tensors)
        return [r for r in refs if r.name in names]

    def _dim(self, ref: TensorRef) -> int | None:
        if self.split is None:
            return 0 if len(ref.shape) == 2 else None
        if callable(self.split):
            return self.split(ref)
        if ref.name in self.split:
            return self.split[ref.name]
        return 0 if len(ref.shape) == 2 else None

    def _maker(self, ref: TensorRef, shape: tuple[int, ...]) -> Callable[[Any], Any]:
        if self.framework == "torch":
            dtype = _torch_dtype(self.torch, ref.dtype)
            if dtype is None or (ref.format == "gguf" and ref.dtype not in ("F32", "F16", "F64")):
                raise UnsupportedError(
                    f"tensor {ref.name!r} is {ref.dtype}: no torch dtype holds it",
                    hint="leave it out with tensors=, or load it with framework='numpy'",
                )
            if self.handle._big_endian.get(ref.file, False):
                raise UnsupportedError(f"{ref.file!r} is a big-endian GGUF file; torch is not")
            device = self.device

            def make_torch(buf: Any) -> Any:
                tensor = buf.view(dtype).reshape(shape)
                return tensor if device == "cpu" else tensor.to(device)

            return make_torch
        np_dtype = numpy_dtype(
            ref.format, ref.dtype, big_endian=self.handle._big_endian.get(ref.file, False)
        )
        return lambda buf: buf.view(np_dtype).reshape(shape)

    def _allocate(self, nbytes: int) -> tuple[Any, memoryview]:
        if self.torch is not None:
            buf = self.torch.empty(nbytes, dtype=self.torch.uint8)
            return buf, memoryview(buf.numpy()).cast("B")
        np = require_numpy()
        if nbytes < _MAPPED_FROM or not hasattr(mmap, "MAP_PRIVATE"):  # not on Windows
            arr = np.empty(nbytes, dtype=np.uint8)
            return arr, memoryview(arr).cast("B")
        # Large tensors live in an anonymous mapping of their own rather than NumPy's
        # allocation: NumPy advises transparent huge pages on big arrays, and with the
        # common `defrag=madvise` setting each fault may then compact memory directly
        # (1.1-1.6 s of system time per GiB measured here, against 0.3-0.45 s for a
        # private anonymous mapping; a shared one is shmem, 0.6 s). torch's allocator
        # does not advise huge pages (0.4 s). The array owns the mapping (its
        # ``base``); it is unmapped when the array goes away, like any NumPy buffer.
        region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        arr = np.frombuffer(region, dtype=np.uint8)
        return arr, memoryview(region).cast("B")

    def plan(self) -> list[_Planned]:
        chosen: list[_Planned] = []
        seen: set[str] = set()
        per_file: list[tuple[ModelFile, list[TensorRef]]] = []
        for f in self._selected_files():
            refs = self._wanted(self._refs(f))
            per_file.append((f, refs))
            for r in refs:
                if r.name in seen:
                    raise FormatError(
                        f"tensor {r.name!r} is in more than one file of {self.handle.reference}",
                        hint="choose one file with files=",
                    )
                seen.add(r.name)
        if self.tensors is not None and not callable(self.tensors):
            names = {self.tensors} if isinstance(self.tensors, str) else set(self.tensors)
            missing = sorted(names - seen)
            if missing:
                raise NotFoundError(
                    f"{self.handle.reference} has no tensor {', '.join(map(repr, missing[:5]))}",
                    hint="list them with modelreg.open(REF).tensors()",
                )
        for f, refs in per_file:
            for r in refs:
                shape, pieces = _shard(r, self._dim(r), self.tp)
                chosen.append(
                    _Planned(
                        r.name, f, shape, pieces, sum(n for _, n in pieces), self._maker(r, shape)
                    )
                )
        return chosen

    # ------------------------------------------------------------------ fetching
    def run(self) -> Iterator[tuple[str, Any]]:
        planned = self.plan()
        self.order = [p.name for p in planned]
        by_file: dict[str, list[_Extent]] = {}
        for p in planned:
            p.buffer, view = self._allocate(p.nbytes)
            position = 0
            extents = by_file.setdefault(p.file.path, [])
            for offset, n in p.pieces:
                extents.append(_Extent(offset, view[position : position + n], p))
                position += n
        ready: queue.SimpleQueue[_Planned | BaseException] = queue.SimpleQueue()
        lock = threading.Lock()
        engine = self.handle._engine
        files = {p.file.path: p.file for p in planned}
        requests: list[FillRequest] = []
        for path, extents in by_file.items():
            f = files[path]
            dests = [(e.offset, e.view) for e in extents]
            prefix = self.prefixes.get(path)
            if prefix is not None:
                # verified with the blob, then compared with what was planned from
                hbuf = bytearray(len(prefix))
                self.header_views[path] = hbuf
                dests.append((0, memoryview(hbuf)))
            reqs = engine.fill(f, dests)
            requests.extend(reqs)
            for e in extents:
                if prefix is not None:  # whole-blob verification: wait for the file
                    e.owner.requests.extend(reqs)
                    continue
                e.owner.requests.extend(
                    r for r in reqs if r.start < e.offset + len(e.view) and r.stop > e.offset
                )
        for p in planned:
            unique = {id(r): r for r in p.requests}
            p.requests = list(unique.values())
            p.waiting = len(p.requests)
            if p.waiting == 0:
                ready.put(p)
        for p in planned:
            for r in p.requests:
                r.done.add_done_callback(_callback(p, ready, lock))
        delivered = 0
        checked: set[str] = set()
        try:
            while delivered < len(planned):
                item = ready.get()
                if isinstance(item, BaseException):
                    raise item
                path = item.file.path
                if path in self.prefixes and path not in checked:
                    self._check_header(path)
                    checked.add(path)
                delivered += 1
                out = item.make(item.buffer)
                item.buffer = None
                yield item.name, out
        finally:
            for r in requests:
                r.done.cancel()

    def _check_header(self, path: str) -> None:
        # every tensor of a file without a chunk index waits for the whole blob(s), so
        # the header bytes are verified by now
        if bytes(self.header_views[path]) != bytes(self.prefixes[path]):
            raise IntegrityError(
                f"the header of {path!r} read for planning differs from the verified blob",
                hint="the registry served different bytes for the same range; nothing was "
                "handed out from this file",
            )


@dataclass
class _Extent:
    offset: int
    view: memoryview
    owner: _Planned


def _callback(
    p: _Planned, ready: queue.SimpleQueue[_Planned | BaseException], lock: threading.Lock
) -> Callable[[Any], None]:
    def done(fut: Any) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        with lock:
            if exc is not None:
                p.waiting = -1
                ready.put(exc)
                return
            if p.waiting <= 0:
                return
            p.waiting -= 1
            if p.waiting == 0:
                ready.put(p)

    return done


def iter_load(
    client_or_target: Client | ReadOnlyTarget,
    ref: str,
    *,
    framework: Framework = "numpy",
    device: str = "cpu",
    files: Collection[str] | None = None,
    tensors: TensorSelector | None = None,
    tensor_parallel: tuple[int, int] | None = None,
    split: SplitSpec | None = None,
    concurrency: int = DEFAULT_LOAD_CONCURRENCY,
    max_request: int = DEFAULT_LOAD_MAX_REQUEST,
    verify: Verifier | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> Iterator[tuple[str, Any]]:
    """Yield ``(name, array)`` as each selected tensor is fetched and verified.

    ``files``: globs on file paths (default: every safetensors and GGUF file).
    ``tensors``: names, or a predicate on the name. ``tensor_parallel=(rank,
    world)`` with ``split`` (see the module docstring). ``concurrency``: parallel
    Range requests; ``max_request``: bytes per request. ``verify`` runs before the
    manifest is read. Tensors arrive in completion order, each exactly once.
    """
    yield from _load(
        client_or_target,
        ref,
        _LoadArgs(framework, device, files, tensors, tensor_parallel, split),
        concurrency=concurrency,
        max_request=max_request,
        verify=verify,
        on_warning=on_warning,
        order=None,
    )


def load_model(
    client_or_target: Client | ReadOnlyTarget,
    ref: str,
    *,
    framework: Framework = "numpy",
    device: str = "cpu",
    files: Collection[str] | None = None,
    tensors: TensorSelector | None = None,
    tensor_parallel: tuple[int, int] | None = None,
    split: SplitSpec | None = None,
    concurrency: int = DEFAULT_LOAD_CONCURRENCY,
    max_request: int = DEFAULT_LOAD_MAX_REQUEST,
    verify: Verifier | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every selected tensor as ``{name: array}`` in file order (see :func:`iter_load`)."""
    order: list[str] = []
    got = dict(
        _load(
            client_or_target,
            ref,
            _LoadArgs(framework, device, files, tensors, tensor_parallel, split),
            concurrency=concurrency,
            max_request=max_request,
            verify=verify,
            on_warning=on_warning,
            order=order,
        )
    )
    return {name: got[name] for name in order}


@dataclass(frozen=True)
class _LoadArgs:
    framework: Framework
    device: str
    files: Collection[str] | None
    tensors: TensorSelector | None
    tensor_parallel: tuple[int, int] | None
    split: SplitSpec | None


def _load(
    client_or_target: Client | ReadOnlyTarget,
    ref: str,
    args: _LoadArgs,
    *,
    concurrency: int,
    max_request: int,
    verify: Verifier | None,
    on_warning: Callable[[str], None] | None,
    order: list[str] | None,
) -> Iterator[tuple[str, Any]]:
    if concurrency < 1 or max_request < 1:
        raise InvalidInputError("concurrency and max_request must be positive")
    handle = open_model(
        client_or_target,
        ref,
        verify=verify,
        concurrency=concurrency,
        readahead=0,
        memory=_HEADER_MEMORY,
        max_request=max_request,
        chunk_cache=False,
        on_warning=on_warning,
    )
    with handle:
        loader = _Loader(
            handle,
            framework=args.framework,
            device=args.device,
            files=args.files,
            tensors=args.tensors,
            tensor_parallel=args.tensor_parallel,
            split=args.split,
        )
        items = loader.run()
        first = next(items, None)
        if order is not None:
            order.extend(loader.order)
        if first is not None:
            yield first
            yield from items
