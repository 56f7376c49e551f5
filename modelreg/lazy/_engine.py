"""The lazy read engine: fetch the chunks a read needs, verify each, cache, serve.

For a byte range of a file the engine finds the chunks that cover it and, for
each chunk, takes the first source that has it:

1. the memory LRU (verified chunks);
2. the chunk store on disk (hashed again on read);
3. the whole blob in the local OCI store, if an earlier pull put it there
   (the chunk is read from it and hashed);
4. the remote target: missing chunks are grouped into runs of adjacent chunks
   (one Range request per run, at most ``max_request`` bytes), the runs fetched
   in parallel on a thread pool, and every chunk of a response hashed against
   the chunk index before any of it is cached or served. A response with one
   bad chunk is discarded whole: nothing of it is cached.

Where fetched bytes land (no copy between the socket and their place):

* a chunk that lies whole inside the reader's buffer (``readinto``: sequential
  readers, ``tensor()``) is read straight into that buffer and hashed there. It
  is not kept in memory (a reader that consumed a chunk whole rarely reads it
  again; the disk chunk store, when on, still gets it). If the chunk fails its
  hash, the reader's bytes of it are wiped before the error is raised, and the
  read waits for every run writing into its buffer before returning or raising;
* a chunk read only in part (random access, the edges of an unaligned read) and
  read-ahead chunks get a buffer of their own (exactly the chunk), which the
  memory LRU keeps. A read that then consumes such a chunk whole drops it from
  the LRU; what stays is what a random-access reader will likely read again.

Coalescing: a chunk being fetched has one in-flight entry (by digest). A read
needing it joins the entry (a waiter count) and waits, whatever the fetch is
for: read-ahead, another reader's own buffer, or a random read. A read claims
all the chunks it has to fetch in one step, so concurrent reads of one range
never split it into several requests. A fetch into a
reader's buffer that others joined hands each of them a copy, made on the
fetching worker before the owner's read returns, so no waiter ever reads memory
its owner already reuses. Read-ahead that finds a chunk in flight does not join.

Read-ahead budget: bytes in flight plus read-ahead chunks no read has reached
yet (at most ``readahead``); a read reaching a chunk releases its share, and
chunks nobody reached within :data:`AHEAD_TTL` seconds (a reader that seeked
away) are dropped when the budget is full, so read-ahead never evicts what a
reader is about to use and never stalls for good.

Files without a chunk index (artifacts from other producers, older modelreg)
are verified at blob granularity: the first read of a blob fetches it whole
into the local store, verified against its layer (or part) digest, and reads
are served from there.

Registries that ignore ``Range`` (answer 200 with the whole blob) are detected
by the target (:class:`~modelreg.content.base.RangeReader`'s ``supports_range``),
which its registry client remembers for its host: from then on every blob of
that host is fetched once, whole and verified, into the local store, and chunks
are read (and still hashed) from it. Nothing is process-global: a new client
learns it again, at the cost of one whole answer.

Bytes land where they are used. A target that can (``RangeIntoReader``: the
registry target) reads a response straight into caller memory: ``fetch_range_into``
fills a list of views in turn from one request. Two callers use it:

* the chunk path above reads each run into the reader's buffer and per-chunk
  buffers, one view per chunk, in one request;
* :meth:`Engine.fill` (``modelreg.load``) reads runs directly into the caller's
  preallocated tensor buffers: a run covers whole chunks, and the bytes of a
  chunk that belong to no destination (a tensor left out, a column of another
  rank) go to a scratch buffer that lives only while the run is checked. Each
  run's future resolves once every chunk of it hashed right; without a chunk
  index the runs of a blob are hashed in blob order as they arrive (on whichever
  worker completes the next one in order) and all resolve together once the
  whole blob matched its digest, so nothing of an unverified blob is released.

Chunks are hashed with the index's algorithm (:meth:`FileChunks.hash_chunk`: BLAKE3
for new indexes, SHA-256 for older ones), on the thread that fetched them
(``blake3`` and ``hashlib`` release the GIL) and never while a response is being
read: a run is received whole, then hashed chunk by chunk. A read that waits
fetches its first run on its own thread and hands the others to the pool (a run
handed over and waited for cost two thread switches, as much GIL time as parsing
the answer); read-ahead and :meth:`Engine.fill` run on the pool. Requests go over
the registry client's kept-alive connections (``content/registry/_bulk.py``).

Sequential streams: once at least ``concurrency`` readers read sequentially,
each :class:`~modelreg.lazy.handle.LazyFile` reads through one long Range
request of its own instead of a request per read (:meth:`Engine.open_stream`;
:mod:`modelreg.lazy._stream` says when and why).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from modelreg.content.base import CHUNK, RangeReader, RangeStreamer, ReadOnlyTarget
from modelreg.content.layout import LayoutStore
from modelreg.content.refetch import checked, refetching
from modelreg.errors import FormatError, IntegrityError, ModelRegError, NotFoundError
from modelreg.lazy._cache import ChunkStore, MemoryLRU
from modelreg.lazy._files import ModelFile
from modelreg.lazy._stream import STREAM_WINDOW, SequentialStream
from modelreg.lazy.chunkindex import ChunkIndex, FileChunks
from modelreg.model.digests import new_chunk_hash
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_REQUEST",
    "DEFAULT_MEMORY",
    "DEFAULT_READAHEAD",
    "Engine",
    "EngineStats",
    "FillRequest",
    "RangeIntoReader",
    "SequentialDetector",
    "host_ignores_range",
]

DEFAULT_CONCURRENCY: Final = 4
DEFAULT_MAX_REQUEST: Final = 16 * 1024 * 1024
_CLAIM_ATTEMPTS: Final = 4
"""Looks a read takes before it claims chunks while other fetches keep landing."""
DEFAULT_MEMORY: Final = 128 * 1024 * 1024
DEFAULT_READAHEAD: Final = 64 * 1024 * 1024
READAHEAD_TRIGGER: Final = 4 * 1024 * 1024
AHEAD_TTL: Final = 10.0
"""Seconds a read-ahead chunk nobody has read yet counts against the read-ahead budget."""


@runtime_checkable
class RangeIntoReader(Protocol):
    """A target that reads a byte range straight into caller memory (no copy)."""

    def fetch_range_into(self, desc: Descriptor, offset: int, views: list[memoryview]) -> None:
        """Fill ``views`` in turn with the blob's bytes from ``offset`` (unverified)."""
        ...


@dataclass(frozen=True, slots=True)
class FillRequest:
    """One request of :meth:`Engine.fill`: file bytes ``[start, stop)``; ``done`` resolves
    (to None) once they are all verified, or fails with the reason."""

    start: int
    stop: int
    done: Future[None]


@dataclass(slots=True)
class _FillRun:
    start: int
    stop: int
    pieces: list[tuple[int, memoryview | None]]
    """``(file offset, destination)`` tiling ``[start, stop)``; None: scratch."""
    done: Future[None]


class _BlobHash:
    """In-order hashing of one blob's runs (fill without a chunk index)."""

    def __init__(self, desc: Descriptor, runs: list[_FillRun]) -> None:
        self.desc = desc
        self.runs = runs
        self.hasher = desc.digest.hasher()
        self.next = 0
        self.ready: dict[int, list[memoryview]] = {}
        self.lock = threading.Lock()
        self.failed = False
        self.hashing = False


def host_ignores_range(target: ReadOnlyTarget) -> bool:
    """Whether ``target``'s server was seen ignoring Range (remembered by its registry
    client, so by every repository of that host reached through it)."""
    return isinstance(target, RangeReader) and target.supports_range is False


class EngineStats:
    """Counters of where the bytes served came from; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.remote_bytes = 0
        """Bytes asked of the remote target (ranges and whole blobs; of a sequential
        stream, the bytes read from it)."""
        self.remote_requests = 0
        self.whole_blobs = 0
        self.chunks_fetched = 0
        self.chunks_from_disk = 0
        self.chunks_from_memory = 0
        self.integrity_failures = 0
        self.streams = 0
        """Sequential streams opened (see modelreg.lazy._stream)."""

    def add(self, **counts: int) -> None:
        with self._lock:
            for key, n in counts.items():
                setattr(self, key, getattr(self, key) + n)

    def to_dict(self) -> dict[str, int]:
        with self._lock:
            return {
                "remoteBytes": self.remote_bytes,
                "remoteRequests": self.remote_requests,
                "wholeBlobs": self.whole_blobs,
                "chunksFetched": self.chunks_fetched,
                "chunksFromDisk": self.chunks_from_disk,
                "chunksFromMemory": self.chunks_from_memory,
                "integrityFailures": self.integrity_failures,
                "streams": self.streams,
            }


class SequentialDetector:
    """Read-ahead for one reader: after ``trigger`` bytes read back to back, ask for a
    window ahead that doubles (from 8 MiB) up to ``maximum``; a seek resets it."""

    def __init__(self, maximum: int, trigger: int = READAHEAD_TRIGGER) -> None:
        self.maximum = maximum
        self.trigger = trigger
        self.next = 0
        self.run = 0
        self.window = 0

    def on_read(self, offset: int, n: int) -> tuple[int, int] | None:
        if n <= 0:
            return None
        if offset == self.next:
            self.run += n
        else:
            self.run = n
            self.window = 0
        self.next = offset + n
        if self.maximum <= 0 or self.run < self.trigger:
            return None
        self.window = min(self.maximum, max(2 * self.window, 8 * 1024 * 1024, 2 * n))
        return self.next, self.window


Chunk = bytes | bytearray
"""Verified bytes of one chunk (never changed once verified)."""


class _Pending:
    """A chunk being fetched: its future, and how many other reads wait for it.

    A chunk fetched straight into a reader's buffer resolves to None unless another
    read joined (``waiters``): then it resolves to a copy, made before the reader's
    buffer is given back, so no waiter ever reads memory its owner reuses."""

    __slots__ = ("future", "size", "waiters")

    def __init__(self, size: int) -> None:
        self.future: Future[Chunk | None] = Future()
        self.size = size
        self.waiters = 0


@dataclass(frozen=True, slots=True)
class _Run:
    file: ModelFile
    chunks: FileChunks
    indexes: tuple[int, ...]
    into: tuple[memoryview | None, ...]
    """Per chunk, the part of the reader's buffer it is fetched into (direct), or None:
    a buffer of its own, which the memory cache then keeps."""
    ahead: bool = False
    """Started by read-ahead: its chunks count against the read-ahead budget until read."""


class Engine:
    """Serves verified byte ranges of model files from cache or remote."""

    def __init__(
        self,
        target: ReadOnlyTarget,
        files: Sequence[ModelFile],
        index: ChunkIndex | None,
        *,
        store: LayoutStore,
        chunk_store: ChunkStore | None,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_request: int = DEFAULT_MAX_REQUEST,
        memory: int = DEFAULT_MEMORY,
        source_is_store: bool = False,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.target = target
        self.store = store
        self.chunk_store = chunk_store
        self.max_request = max(1, max_request)
        self.memory = MemoryLRU(memory)
        self.stats = EngineStats()
        self.source_is_store = source_is_store
        # the capabilities of the target, looked up once: an isinstance check against a
        # runtime-checkable Protocol walks its members, which showed per request
        self._into = target if isinstance(target, RangeIntoReader) else None
        self._ranged = target if isinstance(target, RangeReader) else None
        self._streamer = (
            target if isinstance(target, RangeStreamer) and target.streams_ranges else None
        )
        self.concurrency = max(1, concurrency)
        self.stream_window = STREAM_WINDOW
        self._sequential = 0
        """Readers reading sequentially right now (see open_stream)."""
        self._streams: set[SequentialStream] = set()
        self._warn = on_warning or (lambda _m: None)
        self._pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="lazy")
        self._lock = threading.Lock()
        self._inflight: dict[bytes, _Pending] = {}
        self._inflight_bytes = 0
        self._landed = 0
        """How many fetches have completed: a read that looked on disk before one landed
        looks again before it claims (see _get_chunks)."""
        self._ahead: dict[bytes, tuple[int, float]] = {}
        """Read-ahead chunks in the memory cache that no read reached yet: size, when."""
        self._ahead_bytes = 0
        self._blob_locks: dict[Digest, threading.Lock] = {}
        self._verified_blobs: set[Digest] = set()
        self._fds: dict[Digest, int] = {}
        self._closed = False
        self._chunks: dict[str, FileChunks] = {}
        for f in files:
            if f.chunks is not None:
                # a group member: one chunk, its own digest; no index decides otherwise
                self._chunks[f.path] = f.chunks
                continue
            fc = index.get(f.path) if index is not None else None
            if fc is None:
                continue
            if fc.size != f.size or fc.digest != f.digest:
                raise FormatError(
                    f"the chunk index describes {f.path!r} as {fc.size} bytes with digest "
                    f"{fc.digest}, the manifest as {f.size} bytes with digest {f.digest}",
                    hint="the artifact is inconsistent; re-push it with a current modelreg",
                )
            self._chunks[f.path] = fc

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            fds = list(self._fds.values())
            self._fds.clear()
            streams = list(self._streams)
        for stream in streams:
            stream.close()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:  # runs cancelled before they started: release their waiters
            pending = [p.future for p in self._inflight.values()]
            self._inflight.clear()
            self._inflight_bytes = 0
        for fut in pending:
            if not fut.done():
                fut.set_exception(ModelRegError("the lazy reader was closed"))
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _ignores_range(self) -> bool:
        """:func:`host_ignores_range` of the target (known to ignore it: never ranged)."""
        return self._ranged is not None and self._ranged.supports_range is False

    def chunks_of(self, file: ModelFile) -> FileChunks | None:
        return self._chunks.get(file.path)

    # ------------------------------------------------------------------ streams
    def reading_sequentially(self, on: bool) -> None:
        """A reader started (``on``) or stopped reading sequentially."""
        with self._lock:
            self._sequential += 1 if on else -1

    def open_stream(self, file: ModelFile, position: int) -> SequentialStream | None:
        """A sequential stream for a reader of ``file`` at ``position``, or None where
        the read path serves better (see :mod:`modelreg.lazy._stream` for when)."""
        fc = self._chunks.get(file.path)
        if (
            self._streamer is None
            or fc is None
            or file.grouped
            or self.source_is_store
            or self._ignores_range()
        ):
            return None
        with self._lock:
            if self._closed or self._sequential < self.concurrency:
                return None
        if self._in_store(file, 0, file.size, {}):
            return None  # an earlier pull put the blob here: the read path reads it locally
        stream = SequentialStream(
            target=self._streamer,
            file=file,
            chunks=fc,
            position=position,
            stats=self.stats,
            memory=self.memory,
            chunk_store=self.chunk_store,
            busy=self._busy,
            where=_where(self.target),
            window=self.stream_window,
            on_close=self._stream_closed,
        )
        with self._lock:
            self._streams.add(stream)
        self.stats.add(streams=1)
        return stream

    def _stream_closed(self, stream: SequentialStream) -> None:
        with self._lock:
            self._streams.discard(stream)

    def _busy(self, fc: FileChunks, i: int) -> bool:
        """Whether chunk ``i`` is the read path's to serve: being fetched (a stream would
        fetch it twice) or in the disk chunk store."""
        digest = fc.digest_of(i)
        with self._lock:
            if digest in self._inflight:
                return True
        return self.chunk_store is not None and self.chunk_store.has(digest, fc.algorithm)

    # ------------------------------------------------------------------ reads
    def read(self, file: ModelFile, offset: int, length: int) -> bytes:
        """Exactly the bytes ``[offset, offset + length)`` (clamped at EOF), verified."""
        length = max(0, min(length, file.size - offset))
        if length <= 0:
            return b""
        buf = bytearray(length)
        n = self.readinto(file, offset, memoryview(buf))
        return bytes(buf[:n])

    def readinto(self, file: ModelFile, offset: int, out: memoryview) -> int:
        """Fill ``out`` with the file's bytes from ``offset``; returns the count (0 at EOF)."""
        if offset < 0:
            raise ValueError("negative offset")
        length = max(0, min(len(out), file.size - offset))
        if length == 0:
            return 0
        fc = self._chunks.get(file.path)
        if fc is None:
            self._read_whole_blobs(file, offset, out[:length])
            return length
        span = fc.span(offset, length)
        data = self._get_chunks(file, fc, span, wait=True, into=(offset, out[:length]))
        end = offset + length
        for i in span:
            chunk = data[i]
            if chunk is None:
                continue  # fetched and verified in place
            start, stop = fc.bounds(i)
            lo = max(start, offset)
            hi = min(stop, end)
            out[lo - offset : hi - offset] = memoryview(chunk)[lo - start : hi - start]
            if lo == start and hi == stop:
                # consumed whole (sequential reading): the memory cache keeps only chunks
                # read in part, which the next read of a random-access reader needs
                self.memory.discard(fc.digest_of(i))
        return length

    def prefetch(self, file: ModelFile, offset: int, length: int, budget: int) -> None:
        """Start fetching ``[offset, offset+length)`` in the background (best effort)."""
        fc = self._chunks.get(file.path)
        length = min(length, file.size - offset)
        if length <= 0 or self._closed:
            return
        if fc is None:
            return  # whole blobs are fetched on first read; nothing to prefetch cheaply
        with self._lock:
            if self._inflight_bytes + self._ahead_bytes >= budget:
                now = time.monotonic()
                for digest, (size, landed) in list(self._ahead.items()):
                    if now - landed > AHEAD_TTL:  # a reader that moved on: let it go
                        del self._ahead[digest]
                        self._ahead_bytes -= size
                        self.memory.discard(digest)
                if self._inflight_bytes + self._ahead_bytes >= budget:
                    return
        with contextlib.suppress(ModelRegError):
            self._get_chunks(file, fc, fc.span(offset, length), wait=False)

    def chunk_bytes(self, file: ModelFile, indexes: Sequence[int]) -> dict[int, Chunk]:
        """Verified bytes of the given chunks (fetching what is missing, in parallel)."""
        fc = self._chunks.get(file.path)
        if fc is None:
            raise FormatError(f"{file.path!r} has no chunk index")
        got = self._get_chunks(file, fc, indexes, wait=True)
        return {i: c for i, c in got.items() if c is not None}

    # ------------------------------------------------------------------ fill
    def fill(self, file: ModelFile, extents: Sequence[tuple[int, memoryview]]) -> list[FillRequest]:
        """Fetch file bytes straight into ``extents`` (``(file offset, view)``, disjoint),
        on the pool, verified per chunk (chunk index) or per blob (none).

        Returns the requests: the bytes of an extent may be used once every request
        overlapping it is done without error. Nothing is cached."""
        dests = sorted(((o, v) for o, v in extents if len(v)), key=lambda e: e[0])
        fc = self._chunks.get(file.path)
        limit = None if self._ignores_range() else self.max_request
        runs: list[_FillRun] = []
        if fc is not None:
            runs = self._plan_fill(fc, dests, limit)
            jobs: list[tuple[Callable[..., None], tuple[object, ...]]] = [
                (self._fill_chunk_run, (file, fc, run)) for run in runs
            ]
        else:
            jobs = []
            for seg in file.segments:
                seg_runs = []
                step = limit or max(1, seg.desc.size)
                for pos in range(seg.offset, seg.end, step):
                    stop = min(pos + step, seg.end)
                    seg_runs.append(_FillRun(pos, stop, _pieces(dests, pos, stop), Future()))
                if not seg_runs:  # an empty blob: nothing to fetch, still check the digest
                    seg_runs.append(_FillRun(seg.offset, seg.offset, [], Future()))
                state = _BlobHash(seg.desc, seg_runs)
                jobs.extend((self._fill_blob_run, (file, state, k)) for k in range(len(seg_runs)))
                runs.extend(seg_runs)
        for fn, args in jobs:
            try:
                self._pool.submit(fn, *args)
            except RuntimeError as exc:  # pool shut down
                error = ModelRegError("the lazy reader is closed")
                for run in runs:
                    if not run.done.done():
                        run.done.set_exception(error)
                raise error from exc
        return [FillRequest(r.start, r.stop, r.done) for r in runs]

    def _plan_fill(
        self, fc: FileChunks, dests: list[tuple[int, memoryview]], limit: int | None
    ) -> list[_FillRun]:
        needed: set[int] = set()
        for offset, view in dests:
            needed.update(fc.span(offset, len(view)))
        runs: list[_FillRun] = []
        group: list[int] = []
        size = 0

        def close() -> None:
            start, stop = fc.bounds(group[0])[0], fc.bounds(group[-1])[1]
            runs.append(_FillRun(start, stop, _pieces(dests, start, stop), Future()))

        for i in sorted(needed):
            start, stop = fc.bounds(i)
            if group and (
                i != group[-1] + 1 or (limit is not None and size + stop - start > limit)
            ):
                close()
                group, size = [], 0
            group.append(i)
            size += stop - start
        if group:
            close()
        return runs

    def _fill_chunk_run(self, file: ModelFile, fc: FileChunks, run: _FillRun) -> None:
        try:
            views = _materialise(run)
            offsets = [offset for offset, _ in run.pieces]

            def check() -> None:
                for i in fc.span(run.start, run.stop - run.start):
                    start, stop = fc.bounds(i)
                    hasher = new_chunk_hash(fc.algorithm)
                    for piece in _views_in(offsets, views, start, stop):
                        hasher.update(piece)
                    if hasher.digest() != fc.digest_of(i):
                        self.stats.add(integrity_failures=1)
                        raise IntegrityError(
                            f"{file.path!r}: bytes {start}-{stop - 1} (chunk {i}) from "
                            f"{_where(self.target)} hash to {fc.algorithm}:"
                            f"{hasher.hexdigest()}, the chunk index says {fc.algorithm}:"
                            f"{fc.digest_of(i).hex()}",
                            hint="the registry or something on the way serves tampered or "
                            "corrupt bytes; no tensor holding them was handed out",
                        )

            # bytes a mirror served that fail the check: that mirror is distrusted and
            # the same views are filled again from the next source
            checked(self.target, lambda: self._fetch_into(file, run.start, views), check)
            self.stats.add(chunks_fetched=len(fc.span(run.start, run.stop - run.start)))
        except BaseException as exc:
            if not run.done.done():
                run.done.set_exception(exc)
            return
        if not run.done.done():
            run.done.set_result(None)

    def _fill_blob_run(self, file: ModelFile, state: _BlobHash, k: int) -> None:
        run = state.runs[k]
        try:
            if state.failed:
                return
            views = _materialise(run)
            self._fetch_into(file, run.start, views)
        except BaseException as exc:
            self._fail_blob(state, exc)
            return
        with state.lock:
            state.ready[k] = views
            if state.hashing:
                return  # the thread hashing this blob picks it up in order
            state.hashing = True
        while True:
            with state.lock:
                todo = state.ready.pop(state.next, None)
                if todo is None:
                    state.hashing = False
                    return
            for view in todo:
                state.hasher.update(view)
            with state.lock:
                state.next += 1
                finished = state.next == len(state.runs)
            if finished:
                self._finish_blob(file, state)
                return

    def _finish_blob(self, file: ModelFile, state: _BlobHash) -> None:
        got = state.hasher.digest()
        if state.hasher.size != state.desc.size or got != state.desc.digest:
            self.stats.add(integrity_failures=1)
            self._fail_blob(
                state,
                IntegrityError(
                    f"blob {state.desc.digest} of {file.path!r} from {_where(self.target)} "
                    f"hashes to {got}",
                    hint="the registry or something on the way serves tampered or corrupt "
                    "bytes; nothing of this blob was handed out",
                ),
            )
            return
        self.stats.add(whole_blobs=1)
        for run in state.runs:
            if not run.done.done():
                run.done.set_result(None)

    @staticmethod
    def _fail_blob(state: _BlobHash, exc: BaseException) -> None:
        state.failed = True
        for run in state.runs:
            if not run.done.done():
                run.done.set_exception(exc)

    def _fetch_into(self, file: ModelFile, offset: int, views: list[memoryview]) -> None:
        """Fill ``views`` with the file's bytes from ``offset`` (one request per blob)."""
        total = sum(len(v) for v in views)
        queue = list(reversed(views))
        for seg, boff, n in file.segments_for(offset, total):
            part: list[memoryview] = []
            need = n
            while need:
                view = queue.pop()
                if len(view) > need:
                    queue.append(view[need:])
                    view = view[:need]
                part.append(view)
                need -= len(view)
            self._range_into(seg.desc, boff, part)

    def _range_into(self, desc: Descriptor, offset: int, views: list[memoryview]) -> None:
        n = sum(len(v) for v in views)
        if self._into is not None:
            self._into.fetch_range_into(desc, offset, views)
        else:
            data = memoryview(self.target.fetch_range(desc, offset, n))
            if len(data) != n:
                raise IntegrityError(
                    f"{_where(self.target)} returned {len(data)} bytes for a range of {n} of "
                    f"blob {desc.digest}",
                    hint="the registry's range support is broken; nothing was used",
                )
            position = 0
            for view in views:
                view[:] = data[position : position + len(view)]
                position += len(view)
        self.stats.add(remote_bytes=n, remote_requests=1)

    # ------------------------------------------------------------------ chunked
    def _get_chunks(
        self,
        file: ModelFile,
        fc: FileChunks,
        indexes: Iterable[int],
        *,
        wait: bool,
        into: tuple[int, memoryview] | None = None,
    ) -> dict[int, Chunk | None]:
        """The verified chunks ``indexes`` (with ``wait``; else only start fetching them).

        With ``into`` (``(file offset, buffer)``), a missing chunk that lies whole inside
        the buffer is fetched straight into it and verified there: its entry is None."""
        found: dict[int, Chunk | None] = {}
        waits: dict[int, _Pending] = {}
        own: set[int] = set()
        missing: list[int] = []
        with self._lock:
            seen = self._landed
        unclaimed = self._look(file, fc, indexes, wait=wait, found=found, waits=waits)
        # Claim (or join) every chunk still missing in one step: two reads of the same
        # range then never split it between them (one claiming chunk 8 while the other
        # claimed 9-11: two requests for one range); the later read joins all of it.
        # A fetch that landed between the look and the claim may have put the chunk on
        # disk (a fetch into its reader's buffer keeps nothing in memory): then look
        # again rather than fetch it a second time. A bounded number of times, so a
        # stream of landings cannot keep a read from ever claiming.
        for attempt in range(_CLAIM_ATTEMPTS):
            with self._lock:
                if self._landed == seen or attempt == _CLAIM_ATTEMPTS - 1:
                    missing = self._claim(fc, unclaimed, wait=wait, found=found, waits=waits)
                    own.update(missing)
                    break
                seen = self._landed
            unclaimed = self._look(file, fc, unclaimed, wait=wait, found=found, waits=waits)
        runs = self._plan(file, fc, missing, into, ahead=not wait)
        # A read that waits fetches its first run itself: handing it to a worker and being
        # woken when it lands cost two thread switches per request, which measured as much
        # GIL time as parsing the response. The other runs go to the pool meanwhile.
        inline = runs.pop(0) if wait and runs else None
        error: BaseException | None = None
        for run in runs:
            if error is not None:
                self._fail(run, error)
                continue
            try:
                self._submit(run)
            except ModelRegError as exc:
                error = exc
        if inline is not None:
            if error is None and self._closed:
                error = ModelRegError("the lazy reader is closed")
            if error is not None:
                self._fail(inline, error)
            else:
                self._fetch_run(inline)
        if wait:
            # every future, even after a failure: a run fetching into the caller's buffer
            # must be over before the caller gets it back
            for i, pending in waits.items():
                try:
                    chunk = pending.future.result()
                except BaseException as exc:
                    error = error or exc
                    continue
                if chunk is None and i not in own:
                    # cannot happen: a joined read is always handed a copy
                    error = error or ModelRegError(f"chunk {i} of {file.path!r} was not shared")
                found[i] = chunk
        if error is not None:
            raise error
        if wait and self._ahead:
            with self._lock:
                for i in found:
                    entry = self._ahead.pop(fc.digest_of(i), None)
                    if entry is not None:
                        self._ahead_bytes -= entry[0]
        return found

    def _look(
        self,
        file: ModelFile,
        fc: FileChunks,
        indexes: Iterable[int],
        *,
        wait: bool,
        found: dict[int, Chunk | None],
        waits: dict[int, _Pending],
    ) -> list[int]:
        """First look for each chunk: memory, a fetch in flight (joined), then disk.

        Fills ``found`` and ``waits``; returns the chunks nobody has yet."""
        unclaimed: list[int] = []
        stored: dict[Digest, bool] = {}
        for i in indexes:
            digest = fc.digest_of(i)
            data = self.memory.get(digest)
            if data is not None:
                self.stats.add(chunks_from_memory=1)
                found[i] = data
                continue
            with self._lock:
                pending = self._inflight.get(digest)
                if pending is not None and wait:
                    pending.waiters += 1
            if pending is not None:
                if wait:
                    waits[i] = pending
                continue
            if not wait:
                # prefetch: skip chunks already on disk without reading them
                if self._on_disk(file, fc, i, digest, stored):
                    continue
            else:
                data = self._load_local(file, fc, i, digest, stored)
                if data is not None:
                    found[i] = data
                    continue
            unclaimed.append(i)
        return unclaimed

    def _claim(
        self,
        fc: FileChunks,
        unclaimed: list[int],
        *,
        wait: bool,
        found: dict[int, Chunk | None],
        waits: dict[int, _Pending],
    ) -> list[int]:
        """Under the lock: join each chunk in flight, else register it as this read's.

        Returns the chunks this read must fetch."""
        missing: list[int] = []
        for i in unclaimed:
            digest = fc.digest_of(i)
            pending = self._inflight.get(digest)
            if pending is None:
                # a fetch into its own buffer stores the chunk before it drops its
                # in-flight entry, so this check cannot miss one that completed
                data = self.memory.get(digest)
                if data is not None:
                    self.stats.add(chunks_from_memory=1)
                    found[i] = data
                    continue
                start, stop = fc.bounds(i)
                pending = _Pending(stop - start)
                self._inflight[digest] = pending
                self._inflight_bytes += stop - start
                missing.append(i)
            elif wait:
                pending.waiters += 1
            else:
                continue
            waits[i] = pending
        return missing

    def _plan(
        self,
        file: ModelFile,
        fc: FileChunks,
        missing: list[int],
        into: tuple[int, memoryview] | None = None,
        *,
        ahead: bool = False,
    ) -> list[_Run]:
        runs: list[_Run] = []
        current: list[int] = []
        size = 0

        def close() -> None:
            views: list[memoryview | None] = []
            for i in current:
                start, stop = fc.bounds(i)
                if into is not None and into[0] <= start and stop <= into[0] + len(into[1]):
                    views.append(into[1][start - into[0] : stop - into[0]])
                else:
                    views.append(None)
            runs.append(_Run(file, fc, tuple(current), tuple(views), ahead))

        for i in sorted(missing):
            start, stop = fc.bounds(i)
            if current and (i != current[-1] + 1 or size + (stop - start) > self.max_request):
                close()
                current, size = [], 0
            current.append(i)
            size += stop - start
        if current:
            close()
        return runs

    def _submit(self, run: _Run) -> None:
        try:
            self._pool.submit(self._fetch_run, run)
        except RuntimeError as exc:  # pool shut down
            self._fail(run, ModelRegError("the lazy reader is closed"))
            raise ModelRegError("the lazy reader is closed") from exc

    def _fail(self, run: _Run, exc: BaseException) -> None:
        with self._lock:
            for i in run.indexes:
                digest = run.chunks.digest_of(i)
                pending = self._inflight.pop(digest, None)
                if pending is None:
                    continue
                self._inflight_bytes -= pending.size
                if not pending.future.done():
                    pending.future.set_exception(exc)

    def _fetch_run(self, run: _Run) -> None:
        fc = run.chunks
        # a chunk not fetched into the reader's buffer gets a buffer of its own: what the
        # memory cache keeps is exactly that chunk, with no copy
        own: list[bytearray | None] = [
            bytearray(fc.bounds(i)[1] - fc.bounds(i)[0]) if view is None else None
            for i, view in zip(run.indexes, run.into, strict=True)
        ]
        views = [
            v if v is not None else memoryview(b or bytearray())
            for v, b in zip(run.into, own, strict=True)
        ]
        try:
            first, _ = fc.bounds(run.indexes[0])
            _, last = fc.bounds(run.indexes[-1])

            def check() -> None:
                for i, piece in zip(run.indexes, views, strict=True):
                    digest = fc.digest_of(i)
                    got = fc.hash_chunk(piece)
                    if got != digest:
                        start, stop = fc.bounds(i)
                        self.stats.add(integrity_failures=1)
                        raise IntegrityError(
                            f"{run.file.path!r}: bytes {start}-{stop - 1} (chunk {i}) from "
                            f"{_where(self.target)} hash to {fc.algorithm}:{got.hex()}, the "
                            f"chunk index says {fc.algorithm}:{digest.hex()}",
                            hint="the registry or something on the way serves tampered or "
                            "corrupt bytes; nothing from this response was cached or returned",
                        )

            # bytes a mirror served that fail the check: that mirror is distrusted and
            # the same views are filled again from the next source
            checked(
                self.target,
                lambda: self._fetch_views(run.file, first, last - first, views),
                check,
            )
        except BaseException as exc:
            for view in run.into:
                if view is not None:
                    # unverified bytes in the reader's buffer: wipe them, so a caller that
                    # ignores the error still never sees them
                    view[:] = bytes(len(view))
            self._fail(run, exc)
            return
        self.stats.add(chunks_fetched=len(run.indexes))
        for k, i in enumerate(run.indexes):
            digest = fc.digest_of(i)
            if self.chunk_store is not None:
                self.chunk_store.put(digest, views[k], algorithm=fc.algorithm)
            mine = own[k]
            if mine is not None:
                self.memory.put(digest, mine)
        landed = time.monotonic()
        with self._lock:
            self._landed += 1
            for k, i in enumerate(run.indexes):
                pending = self._inflight.pop(fc.digest_of(i), None)
                if pending is None:
                    continue
                self._inflight_bytes -= pending.size
                chunk: Chunk | None = own[k]
                if run.ahead and chunk is not None and fc.digest_of(i) not in self._ahead:
                    self._ahead[fc.digest_of(i)] = (len(chunk), landed)
                    self._ahead_bytes += len(chunk)
                if chunk is None and pending.waiters:
                    # another read joined a chunk fetched into this reader's buffer: it
                    # gets a copy now, while that buffer is still the reader's
                    chunk = bytes(views[k])
                if not pending.future.done():
                    pending.future.set_result(chunk)

    def _in_store(self, file: ModelFile, start: int, stop: int, stored: dict[Digest, bool]) -> bool:
        """Whether the local store holds every blob behind file bytes ``[start, stop)``;
        ``stored`` remembers the answers for one look (a read of many chunks of one blob
        asks the file system once, not once per chunk)."""
        for seg, _, _ in file.segments_for(start, stop - start):
            known = stored.get(seg.desc.digest)
            if known is None:
                known = stored[seg.desc.digest] = self.store.has_blob(seg.desc.digest)
            if not known:
                return False
        return True

    def _on_disk(
        self, file: ModelFile, fc: FileChunks, i: int, digest: bytes, stored: dict[Digest, bool]
    ) -> bool:
        if self.chunk_store is not None and self.chunk_store.has(digest, fc.algorithm):
            return True
        start, stop = fc.bounds(i)
        return self._in_store(file, start, stop, stored)

    def _load_local(
        self, file: ModelFile, fc: FileChunks, i: int, digest: bytes, stored: dict[Digest, bool]
    ) -> Chunk | None:
        start, stop = fc.bounds(i)
        if self.chunk_store is not None:
            data = self.chunk_store.get(digest, stop - start, algorithm=fc.algorithm)
            if data is not None:
                self.stats.add(chunks_from_disk=1)
                self.memory.put(digest, data)
                return data
        if not self._in_store(file, start, stop, stored):
            return None
        pieces = file.segments_for(start, stop - start)
        try:
            data = b"".join(self._pread_blob(seg.desc, boff, n) for seg, boff, n in pieces)
        except OSError:
            return None
        if fc.hash_chunk(data) != digest:
            # A cached blob that no longer matches: never serve it, fetch again.
            self._warn(f"cached blob for {file.path!r} is corrupt; fetching the chunk again")
            return None
        self.stats.add(chunks_from_disk=1)
        self.memory.put(digest, data)
        return data

    # ------------------------------------------------------------------ transport
    def _fetch_views(
        self, file: ModelFile, offset: int, length: int, views: list[memoryview]
    ) -> None:
        """Fill ``views`` (``length`` bytes in all) with the file's bytes from ``offset``,
        unverified: from the remote in one request per blob, or from the local blob when
        the registry ignores Range (or the source is the local store)."""
        if not (self.source_is_store or self._ignores_range()):
            self._fetch_into(file, offset, views)
            return
        queue = list(reversed(views))
        for seg, boff, n in file.segments_for(offset, length):
            self._ensure_blob(seg.desc, verify=False)
            data = memoryview(self._pread_blob(seg.desc, boff, n))
            while data:
                view = queue.pop()
                k = min(len(view), len(data))
                view[:k] = data[:k]
                data = data[k:]
                if k < len(view):
                    queue.append(view[k:])

    def _blob_lock(self, digest: Digest) -> threading.Lock:
        with self._lock:
            return self._blob_locks.setdefault(digest, threading.Lock())

    def _ensure_blob(self, desc: Descriptor, *, verify: bool) -> None:
        """Have the blob in the local store; with ``verify``, hashed whole this session."""
        with self._blob_lock(desc.digest):
            if desc.digest in self._verified_blobs:
                return
            if self.store.has_blob(desc.digest):
                if not verify:
                    return
                try:
                    with self.store.target(None).fetch(desc) as reader:
                        reader.read_to_end()
                except IntegrityError:
                    self._warn(f"cached blob {desc.digest} is corrupt; fetching it again")
                    self._close_fd(desc.digest)
                    self.store.evict(desc.digest)
                else:
                    self._verified_blobs.add(desc.digest)
                    return
            if self.source_is_store:
                raise NotFoundError(f"blob {desc.digest} is not in the local store")

            def attempt() -> None:
                # a failed read aborts the ingest: nothing of it stays in the store
                with (
                    self.target.fetch(desc) as reader,
                    self.store.ingest(desc, verified_by=reader) as writer,
                ):
                    buf = bytearray(CHUNK)
                    view = memoryview(buf)
                    while n := reader.readinto(buf):
                        writer.write(view[:n])

            refetching(attempt, what=f"blob {desc.digest}")
            self.stats.add(remote_bytes=desc.size, remote_requests=1, whole_blobs=1)
            self._verified_blobs.add(desc.digest)

    def _fd(self, digest: Digest) -> int:
        with self._lock:
            fd = self._fds.get(digest)
            if fd is not None:
                return fd
        fd = os.open(self.store.blob_path(digest), os.O_RDONLY)
        with self._lock:
            existing = self._fds.get(digest)
            if existing is not None:
                os.close(fd)
                return existing
            self._fds[digest] = fd
            return fd

    def _close_fd(self, digest: Digest) -> None:
        with self._lock:
            fd = self._fds.pop(digest, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _pread_blob(self, desc: Descriptor, offset: int, length: int) -> bytes:
        fd = self._fd(desc.digest)
        parts = []
        got = 0
        while got < length:
            data = os.pread(fd, length - got, offset + got)
            if not data:
                raise OSError(f"blob {desc.digest} in the local store is shorter than expected")
            parts.append(data)
            got += len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # ------------------------------------------------------------------ whole blobs
    def _read_whole_blobs(self, file: ModelFile, offset: int, out: memoryview) -> None:
        position = 0
        for seg, boff, n in file.segments_for(offset, len(out)):
            self._ensure_blob(seg.desc, verify=True)
            try:
                data = self._pread_blob(seg.desc, boff, n)
            except OSError as exc:
                raise IntegrityError(
                    f"blob {seg.desc.digest} of {file.path!r} changed in the local store: {exc}",
                    hint="something else modifies the cache; clear it and try again",
                ) from exc
            out[position : position + n] = data
            position += n


def _where(target: ReadOnlyTarget) -> str:
    return target.name or repr(target)


def _pieces(
    dests: list[tuple[int, memoryview]], start: int, stop: int
) -> list[tuple[int, memoryview | None]]:
    """``(offset, view)`` tiling ``[start, stop)``: slices of ``dests`` where they lie,
    ``(offset, None)`` for a gap (scratch, sized by the next piece's offset)."""

    out: list[tuple[int, memoryview | None]] = []
    position = start
    k = max(0, bisect.bisect_right([o for o, _ in dests], start) - 1)
    while k < len(dests) and position < stop:
        offset, view = dests[k]
        end = offset + len(view)
        k += 1
        if end <= position:
            continue
        if offset >= stop:
            break
        if offset > position:
            out.append((position, None))
            position = offset
        hi = min(end, stop)
        out.append((position, view[position - offset : hi - offset]))
        position = hi
    if position < stop:
        out.append((position, None))
    out.append((stop, None))  # sentinel: gives the last piece its end
    return out


def _materialise(run: _FillRun) -> list[memoryview]:
    """The views a run is read into, scratch allocated for the gaps (only while it runs)."""
    gaps = [
        (i, run.pieces[i + 1][0] - offset)
        for i, (offset, view) in enumerate(run.pieces[:-1])
        if view is None
    ]
    scratch = memoryview(bytearray(sum(n for _, n in gaps))) if gaps else None
    views: list[memoryview] = []
    position = 0
    gap_at = dict(gaps)
    for i, (_offset, view) in enumerate(run.pieces[:-1]):
        if view is None:
            n = gap_at[i]
            assert scratch is not None
            views.append(scratch[position : position + n])
            position += n
        else:
            views.append(view)
    return views


def _views_in(
    offsets: list[int], views: list[memoryview], start: int, stop: int
) -> list[memoryview]:
    """The parts of ``views`` (at file ``offsets``) that hold ``[start, stop)``."""

    out = []
    k = max(0, bisect.bisect_right(offsets, start) - 1)
    while k < len(views) and offsets[k] < stop:
        lo = max(start, offsets[k])
        hi = min(stop, offsets[k] + len(views[k]))
        if hi > lo:
            out.append(views[k][lo - offsets[k] : hi - offsets[k]])
        k += 1
    return out
