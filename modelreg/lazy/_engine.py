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

Chunks being fetched are shared: a read that needs a chunk another thread is
already fetching waits for that fetch instead of starting another.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

from modelreg.content.base import CHUNK, RangeReader, ReadOnlyTarget
from modelreg.content.layout import LayoutStore
from modelreg.errors import FormatError, IntegrityError, ModelRegError, NotFoundError
from modelreg.lazy._cache import ChunkStore, MemoryLRU
from modelreg.lazy._files import ModelFile
from modelreg.lazy.chunkindex import ChunkIndex, FileChunks
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_REQUEST",
    "DEFAULT_MEMORY",
    "DEFAULT_READAHEAD",
    "Engine",
    "EngineStats",
    "SequentialDetector",
    "host_ignores_range",
]

DEFAULT_CONCURRENCY: Final = 4
DEFAULT_MAX_REQUEST: Final = 16 * 1024 * 1024
DEFAULT_MEMORY: Final = 128 * 1024 * 1024
DEFAULT_READAHEAD: Final = 64 * 1024 * 1024
READAHEAD_TRIGGER: Final = 4 * 1024 * 1024


def host_ignores_range(target: ReadOnlyTarget) -> bool:
    """Whether ``target``'s server was seen ignoring Range (remembered by its registry
    client, so by every repository of that host reached through it)."""
    return isinstance(target, RangeReader) and target.supports_range is False


class EngineStats:
    """Counters of where the bytes served came from; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.remote_bytes = 0
        """Bytes asked of the remote target (ranges and whole blobs)."""
        self.remote_requests = 0
        self.whole_blobs = 0
        self.chunks_fetched = 0
        self.chunks_from_disk = 0
        self.chunks_from_memory = 0
        self.integrity_failures = 0

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


@dataclass(frozen=True, slots=True)
class _Run:
    file: ModelFile
    chunks: FileChunks
    indexes: tuple[int, ...]


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
        self._warn = on_warning or (lambda _m: None)
        self._pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="lazy")
        self._lock = threading.Lock()
        self._inflight: dict[bytes, Future[bytes]] = {}
        self._inflight_bytes = 0
        self._blob_locks: dict[Digest, threading.Lock] = {}
        self._verified_blobs: set[Digest] = set()
        self._fds: dict[Digest, int] = {}
        self._closed = False
        self._chunks: dict[str, FileChunks] = {}
        for f in files:
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
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:  # runs cancelled before they started: release their waiters
            pending = list(self._inflight.values())
            self._inflight.clear()
            self._inflight_bytes = 0
        for fut in pending:
            if not fut.done():
                fut.set_exception(ModelRegError("the lazy reader was closed"))
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def chunks_of(self, file: ModelFile) -> FileChunks | None:
        return self._chunks.get(file.path)

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
        data = self._get_chunks(file, fc, span, wait=True)
        end = offset + length
        for i in span:
            start, stop = fc.bounds(i)
            lo = max(start, offset)
            hi = min(stop, end)
            out[lo - offset : hi - offset] = memoryview(data[i])[lo - start : hi - start]
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
            if self._inflight_bytes >= budget:
                return
        with contextlib.suppress(ModelRegError):
            self._get_chunks(file, fc, fc.span(offset, length), wait=False)

    def chunk_bytes(self, file: ModelFile, indexes: Sequence[int]) -> dict[int, bytes]:
        """Verified bytes of the given chunks (fetching what is missing, in parallel)."""
        fc = self._chunks.get(file.path)
        if fc is None:
            raise FormatError(f"{file.path!r} has no chunk index")
        return self._get_chunks(file, fc, indexes, wait=True)

    # ------------------------------------------------------------------ chunked
    def _get_chunks(
        self, file: ModelFile, fc: FileChunks, indexes: Iterable[int], *, wait: bool
    ) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        waits: dict[int, Future[bytes]] = {}
        missing: list[int] = []
        for i in indexes:
            digest = fc.digest_of(i)
            data = self.memory.get(digest)
            if data is not None:
                self.stats.add(chunks_from_memory=1)
                found[i] = data
                continue
            with self._lock:
                fut = self._inflight.get(digest)
            if fut is not None:
                waits[i] = fut
                continue
            if not wait:
                # prefetch: skip chunks already on disk without reading them
                if self._on_disk(file, fc, i, digest):
                    continue
            else:
                data = self._load_local(file, fc, i, digest)
                if data is not None:
                    found[i] = data
                    continue
            with self._lock:
                fut = self._inflight.get(digest)
                if fut is None:
                    # A fetch may have completed since the first look: it stores the chunk
                    # before it drops its in-flight entry, so this check cannot miss it.
                    data = self.memory.get(digest)
                    if data is not None:
                        self.stats.add(chunks_from_memory=1)
                        found[i] = data
                        continue
                    fut = Future()
                    self._inflight[digest] = fut
                    start, stop = fc.bounds(i)
                    self._inflight_bytes += stop - start
                    missing.append(i)
            waits[i] = fut
        for run in self._plan(file, fc, missing):
            self._submit(run)
        if wait:
            for i, fut in waits.items():
                found[i] = fut.result()
        return found

    def _plan(self, file: ModelFile, fc: FileChunks, missing: list[int]) -> list[_Run]:
        runs: list[_Run] = []
        current: list[int] = []
        size = 0
        for i in sorted(missing):
            start, stop = fc.bounds(i)
            if current and (i != current[-1] + 1 or size + (stop - start) > self.max_request):
                runs.append(_Run(file, fc, tuple(current)))
                current, size = [], 0
            current.append(i)
            size += stop - start
        if current:
            runs.append(_Run(file, fc, tuple(current)))
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
                fut = self._inflight.pop(digest, None)
                start, stop = run.chunks.bounds(i)
                self._inflight_bytes -= stop - start
                if fut is not None and not fut.done():
                    fut.set_exception(exc)

    def _fetch_run(self, run: _Run) -> None:
        fc = run.chunks
        try:
            first, _ = fc.bounds(run.indexes[0])
            _, last = fc.bounds(run.indexes[-1])
            data = self._fetch_range(run.file, first, last - first)
            view = memoryview(data)
            verified: list[tuple[int, bytes, bytes]] = []
            for i in run.indexes:
                start, stop = fc.bounds(i)
                piece = view[start - first : stop - first]
                digest = fc.digest_of(i)
                if hashlib.sha256(piece).digest() != digest:
                    self.stats.add(integrity_failures=1)
                    raise IntegrityError(
                        f"{run.file.path!r}: bytes {start}-{stop - 1} (chunk {i}) from "
                        f"{_where(self.target)} hash to "
                        f"sha256:{hashlib.sha256(piece).hexdigest()}, the chunk index "
                        f"says sha256:{digest.hex()}",
                        hint="the registry or something on the way serves tampered or corrupt "
                        "bytes; nothing from this response was cached or returned",
                    )
                verified.append((i, digest, bytes(piece)))
        except BaseException as exc:
            self._fail(run, exc)
            return
        self.stats.add(chunks_fetched=len(verified))
        for _i, digest, chunk in verified:
            if self.chunk_store is not None:
                self.chunk_store.put(digest, chunk)
            self.memory.put(digest, chunk)
        with self._lock:
            for i, digest, chunk in verified:
                fut = self._inflight.pop(digest, None)
                start, stop = fc.bounds(i)
                self._inflight_bytes -= stop - start
                if fut is not None and not fut.done():
                    fut.set_result(chunk)

    def _on_disk(self, file: ModelFile, fc: FileChunks, i: int, digest: bytes) -> bool:
        if self.chunk_store is not None and self.chunk_store.has(digest):
            return True
        start, stop = fc.bounds(i)
        pieces = file.segments_for(start, stop - start)
        return all(self.store.has_blob(seg.desc.digest) for seg, _, _ in pieces)

    def _load_local(self, file: ModelFile, fc: FileChunks, i: int, digest: bytes) -> bytes | None:
        start, stop = fc.bounds(i)
        if self.chunk_store is not None:
            data = self.chunk_store.get(digest, stop - start)
            if data is not None:
                self.stats.add(chunks_from_disk=1)
                self.memory.put(digest, data)
                return data
        pieces = file.segments_for(start, stop - start)
        if not all(self.store.has_blob(seg.desc.digest) for seg, _, _ in pieces):
            return None
        try:
            data = b"".join(self._pread_blob(seg.desc, boff, n) for seg, boff, n in pieces)
        except OSError:
            return None
        if hashlib.sha256(data).digest() != digest:
            # A cached blob that no longer matches: never serve it, fetch again.
            self._warn(f"cached blob for {file.path!r} is corrupt; fetching the chunk again")
            return None
        self.stats.add(chunks_from_disk=1)
        self.memory.put(digest, data)
        return data

    # ------------------------------------------------------------------ transport
    def _fetch_range(self, file: ModelFile, offset: int, length: int) -> bytes:
        parts: list[bytes] = []
        for seg, boff, n in file.segments_for(offset, length):
            if self.source_is_store or host_ignores_range(self.target):
                self._ensure_blob(seg.desc, verify=False)
                parts.append(self._pread_blob(seg.desc, boff, n))
                continue
            data = self.target.fetch_range(seg.desc, boff, n)
            self.stats.add(remote_bytes=n, remote_requests=1)
            if len(data) != n:
                raise IntegrityError(
                    f"{_where(self.target)} returned {len(data)} bytes for a range of {n} of "
                    f"blob {seg.desc.digest}",
                    hint="the registry's range support is broken; nothing was used",
                )
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

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
            with (
                self.target.fetch(desc) as reader,
                self.store.ingest(desc, verified_by=reader) as writer,
            ):
                buf = bytearray(CHUNK)
                view = memoryview(buf)
                while n := reader.readinto(buf):
                    writer.write(view[:n])
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
