"""Sequential streams: one long Range request that a sequential reader consumes in place.

Why
===

The engine's read path sends a Range request per read (or per run of missing
chunks) and hands it to a worker. For several threads each reading a file
sequentially in large pieces, each request costs about a millisecond of Python on
the client (build, send, parse the answer, wake the reader) and more on the
registry (Distribution looks up the repository link and opens the blob for every
request): at 4 GiB read by four threads in 8 MiB reads, the registry's CPU was
2.9-3.6 s for the engine's 512 requests against 1.7-2.0 s for four long ones,
on a machine where the client and the registry share two cores. A stream sends
one request per window (:data:`STREAM_WINDOW`) and reads it as the reader asks;
the kernel's socket buffer is its read-ahead.

When
====

:meth:`~modelreg.lazy._engine.Engine.open_stream` decides: only for a file with a
chunk index, on a target that streams (:class:`~modelreg.content.base.RangeStreamer`,
not one that picks a mirror per request), when the blob is not in the local store,
and only once at least ``concurrency`` readers read sequentially. Fewer readers
keep the read path: it splits one reader's reads over ``concurrency`` parallel
requests, which matters where one connection is slow (object stores behind a
registry's redirect often cap a connection's throughput). A reader that seeks
drops its stream (:class:`~modelreg.lazy.handle.LazyFile`).

How a read is served
====================

* A chunk that fits whole in what is left of the reader's buffer is received
  straight into it and hashed there (no copy, nothing allocated).
* The read then ends on a chunk boundary rather than start a chunk it cannot
  finish: a raw read may return fewer bytes than asked, and the next read starts
  on a boundary, so after the first read every chunk lands in the reader's buffer.
* A chunk that does not fit (a buffer smaller than a chunk, a read that starts
  inside one) goes through the stream's one scratch buffer: received, verified,
  then copied out over as many reads as it takes. The scratch is never handed
  out, so it is reused with no zero fill.
* A chunk in the engine's memory cache (verified; e.g. the edge of an unaligned
  read the read path served before the stream began) is copied from there. One
  being fetched or in the disk chunk store ends the streamed part of the read; a
  read that got nothing from the stream returns None and the caller uses the
  engine's read path.

Every chunk is hashed against the chunk index before a byte of it is returned. A
chunk that fails wipes what it wrote into the reader's buffer, drops the body and
raises :class:`~modelreg.errors.IntegrityError`; verified chunks go to the disk
chunk store like fetched ones. A body covers ``[offset, offset + window)`` of one
blob segment; a chunk straddling a window's (or a segment's) end is read from two
bodies. A cut connection is resumed by the body itself (the target's
:class:`~modelreg.content.registry.streams.ResponseReader`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from modelreg.content.base import RangeBody, RangeStreamer, read_into
from modelreg.errors import IntegrityError
from modelreg.lazy._cache import ChunkStore, MemoryLRU
from modelreg.lazy._files import ModelFile, Segment
from modelreg.lazy.chunkindex import FileChunks

if TYPE_CHECKING:
    from modelreg.lazy._engine import EngineStats

__all__ = ["STREAM_WINDOW", "SequentialStream"]

STREAM_WINDOW: Final = 256 * 1024 * 1024
"""Bytes one request of a stream asks for (at most; a segment's end comes first)."""


class SequentialStream:
    """One reader's stream over one file; used by one thread at a time (its reader)."""

    def __init__(
        self,
        *,
        target: RangeStreamer,
        file: ModelFile,
        chunks: FileChunks,
        position: int,
        stats: EngineStats,
        memory: MemoryLRU,
        chunk_store: ChunkStore | None,
        busy: Callable[[FileChunks, int], bool],
        where: str,
        window: int = STREAM_WINDOW,
        on_close: Callable[[SequentialStream], None] | None = None,
    ) -> None:
        self.position = position
        """Where the reader's next read is expected (a read elsewhere is a seek)."""
        self._target = target
        self._file = file
        self._chunks = chunks
        self._stats = stats
        self._memory = memory
        self._chunk_store = chunk_store
        self._busy = busy
        self._where = where
        self._window = max(1, window)
        self._on_close = on_close
        self._body: RangeBody | None = None
        self._segment: Segment | None = None
        self._at = 0
        """Offset in the segment's blob of the body's next byte."""
        self._end = 0
        """Offset in the segment's blob where the body ends."""
        self._scratch: bytearray | None = None
        self._held = -1
        """The chunk verified in the scratch buffer, -1 for none."""
        self.closed = False

    def readinto(self, pos: int, out: memoryview) -> int | None:
        """Verified file bytes from ``pos`` into ``out``: how many (ending on a chunk
        boundary unless ``out`` ends inside the chunk at hand), or None when the first
        chunk needed is the engine's to serve (see the module doc)."""
        fc = self._chunks
        size = self._file.size
        n = 0
        while n < len(out) and pos < size:
            i = fc.index_of(pos)
            start, stop = fc.bounds(i)
            room = len(out) - n
            if i != self._held:
                if n and stop - start > room:
                    break  # end on a chunk boundary: the next read starts on one
                cached = self._memory.get(fc.digest_of(i))
                if cached is not None:
                    # verified already (the read path's edge of an unaligned read)
                    k = min(stop - pos, room)
                    out[n : n + k] = memoryview(cached)[pos - start : pos - start + k]
                    n += k
                    pos += k
                    if pos == stop:
                        self._memory.discard(fc.digest_of(i))  # consumed whole
                    continue
                if self._busy(fc, i):
                    break
                if pos == start and stop - start <= room:
                    self._fetch(i, out[n : n + stop - start], theirs=True)
                    n += stop - start
                    pos = stop
                    continue
                self._fetch(i, self._scratch_for(stop - start), theirs=False)
                self._held = i
            assert self._scratch is not None
            k = min(stop - pos, room)
            out[n : n + k] = memoryview(self._scratch)[pos - start : pos - start + k]
            n += k
            pos += k
            if pos == stop:
                self._held = -1
        if n == 0 and len(out) and pos < size:
            return None
        self.position = pos
        return n

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._drop_body()
        self._scratch = None
        if self._on_close is not None:
            self._on_close(self)

    # ------------------------------------------------------------------ steps
    def _scratch_for(self, size: int) -> memoryview:
        if self._scratch is None or len(self._scratch) < size:
            self._scratch = bytearray(size)
        return memoryview(self._scratch)[:size]

    def _fetch(self, i: int, view: memoryview, *, theirs: bool) -> None:
        """Chunk ``i`` received into ``view`` and verified (``theirs``: the reader's
        buffer, wiped if anything goes wrong)."""
        fc = self._chunks
        self._held = -1  # the scratch is about to change (or the chunk goes elsewhere)
        try:
            start, _ = fc.bounds(i)
            self._receive(start, view)
            digest = fc.digest_of(i)
            got = fc.hash_chunk(view)
            if got != digest:
                self._stats.add(integrity_failures=1)
                raise IntegrityError(
                    f"{self._file.path!r}: bytes {start}-{start + len(view) - 1} (chunk {i}) "
                    f"from {self._where} hash to {fc.algorithm}:{got.hex()}, the chunk index "
                    f"says {fc.algorithm}:{digest.hex()}",
                    hint="the registry or something on the way serves tampered or corrupt "
                    "bytes; nothing of that chunk was returned",
                )
        except BaseException:
            self._drop_body()
            if theirs:
                # unverified bytes in the reader's buffer: a caller that ignores the error
                # still never sees them
                view[:] = bytes(len(view))
            raise
        self._stats.add(chunks_fetched=1)
        if self._chunk_store is not None:
            self._chunk_store.put(digest, view, algorithm=fc.algorithm)

    def _receive(self, offset: int, view: memoryview) -> None:
        """The file's bytes from ``offset`` into ``view`` (unverified), from the body,
        opening the next one where a window or a segment ends."""
        filled = 0
        for segment, boff, n in self._file.segments_for(offset, len(view)):
            got = 0
            while got < n:
                body = self._body_at(segment, boff + got, n - got)
                k = read_into(body, view[filled + got : filled + n])
                self._at += k
                if self._at >= self._end:
                    self._drop_body()  # read to its end: its connection goes back to the pool
                if k == 0:
                    raise IntegrityError(
                        f"{self._where} ended blob {segment.desc.digest} at byte "
                        f"{boff + got}, before the range it was asked for",
                        hint="the blob is shorter than its descriptor says or the transfer "
                        "was cut; nothing of that chunk was returned",
                    )
                got += k
            filled += n
        self._stats.add(remote_bytes=len(view))

    def _body_at(self, segment: Segment, boff: int, need: int) -> RangeBody:
        if self._body is not None and self._segment is segment and self._at == boff:
            return self._body
        self._drop_body()
        end = min(segment.start + segment.size, boff + max(self._window, need))
        self._body = self._target.open_range(segment.desc, boff, end - boff)
        self._segment, self._at, self._end = segment, boff, end
        self._stats.add(remote_requests=1)
        return self._body

    def _drop_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            body.close()
