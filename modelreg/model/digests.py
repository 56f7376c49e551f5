"""File digests computed once per content: a cache keyed on (path, size, mtime, inode).

Hashing a 4 GiB weight file costs seconds; a second push of an unchanged
directory must not pay it again. The cache is a small SQLite database under the
state directory, safe for concurrent processes (WAL, short transactions). A
stale entry cannot be served: any change of size, mtime (ns), inode or device
misses.

Split files (:mod:`modelreg.model.split`) are cached the same way, keyed also on
their span list: :meth:`DigestCache.split_digests` returns the part digests and
the whole-file digest computed in one pass, and records the whole-file digest
for :meth:`DigestCache.digest` too.

Chunk tables ride the same pass. The chunk index of :mod:`modelreg.lazy` needs
the digest of every fixed-size chunk of every file; reading a 4 GiB file a
second time for it would double the disk cost of a cold push. So the digest
loop can feed a :class:`ChunkHasher` with the very blocks it hashes (the
whole-file SHA-256 on a helper thread, the chunk digests on the reading thread:
two passes on two cores, one read), and the resulting :class:`ChunkTable` is
cached next to the digest, keyed on the same file identity plus the
:class:`ChunkGeometry` (chunk size, head region and chunk digest algorithm), so a
warm push reads nothing for the index either.

Chunk digests are BLAKE3-256 for new indexes (:data:`DEFAULT_CHUNK_ALGORITHM`);
indexes written before are SHA-256 and stay readable. BLAKE3 costs about a
quarter of SHA-256's CPU here (0.16 against 0.6-0.8 s per GiB), which is what
verified lazy reads and a cold push pay per byte; its 128-bit collision
resistance is SHA-256's. Whole-file digests stay SHA-256 (OCI requires it).
:func:`chunk_hasher` and :func:`new_chunk_hash` are the one place that maps an
algorithm name to code; both release the GIL on large inputs. This module knows the geometry
only as numbers: choosing it (and encoding the index) is :mod:`modelreg.lazy`'s
business, a layer above.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, Protocol

from modelreg.content._sqlite import SqliteCache
from modelreg.content.copies import FileIdentity
from modelreg.model import split
from modelreg.oci.digest import Digest, Hasher

__all__ = [
    "CHUNK_ALGORITHMS",
    "DEFAULT_CHUNK_ALGORITHM",
    "ChunkGeometry",
    "ChunkHasher",
    "ChunkTable",
    "DigestCache",
    "chunk_hasher",
    "hash_file",
    "hash_file_with_chunks",
    "new_chunk_hash",
]

_BLOCK = 8 * 1024 * 1024

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS digests (path TEXT, dev INTEGER, ino INTEGER, "
    "size INTEGER, mtime_ns INTEGER, algorithm TEXT, digest TEXT, "
    "PRIMARY KEY (path, algorithm))",
    "CREATE TABLE IF NOT EXISTS parts (path TEXT, algorithm TEXT, spans TEXT, "
    "dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER, whole TEXT, "
    "digests TEXT, PRIMARY KEY (path, algorithm, spans))",
    "CREATE TABLE IF NOT EXISTS chunks (path TEXT, geometry TEXT, dev INTEGER, "
    "ino INTEGER, size INTEGER, mtime_ns INTEGER, digests BLOB, "
    "PRIMARY KEY (path, geometry))",
)
_CHUNK_DIGEST = 32

CHUNK_ALGORITHMS: Final = ("blake3", "sha256")
"""Chunk digest algorithms a chunk index may name (both give 32-byte digests)."""
DEFAULT_CHUNK_ALGORITHM: Final = "blake3"
"""What new chunk indexes use; ``sha256`` indexes (written before) are still read."""

Bytes = bytes | bytearray | memoryview


class ChunkHash(Protocol):
    """An incremental chunk digest (what :func:`new_chunk_hash` returns)."""

    def update(self, data: Bytes, /) -> object: ...

    def digest(self) -> bytes: ...

    def hexdigest(self) -> str: ...


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in CHUNK_ALGORITHMS:
        raise ValueError(f"unknown chunk digest algorithm {algorithm!r}")


def new_chunk_hash(algorithm: str) -> ChunkHash:
    """An empty incremental hasher of ``algorithm`` (one of :data:`CHUNK_ALGORITHMS`)."""
    _check_algorithm(algorithm)
    if algorithm == "blake3":
        from blake3 import blake3  # imported on first use: the CLI starts without it

        return blake3()  # max_threads 1: callers hash on threads of their own
    return hashlib.sha256()


def _blake3_digest(data: Bytes) -> bytes:
    from blake3 import blake3

    return blake3(data).digest()


def _sha256_digest(data: Bytes) -> bytes:
    return hashlib.sha256(data).digest()


def chunk_hasher(algorithm: str) -> Callable[[Bytes], bytes]:
    """``data -> 32-byte digest`` for ``algorithm``; unknown names raise ValueError
    (parsers check the name first and raise their own error)."""
    _check_algorithm(algorithm)
    return _blake3_digest if algorithm == "blake3" else _sha256_digest


@dataclass(frozen=True, slots=True)
class ChunkGeometry:
    """How a file is cut: every ``chunk_size`` bytes over ``[0, head)``, then again
    every ``chunk_size`` bytes from ``head`` to the end (``head`` 0: plain chunks),
    and how each chunk is digested (``algorithm``)."""

    chunk_size: int
    head: int = 0
    algorithm: str = DEFAULT_CHUNK_ALGORITHM

    def __post_init__(self) -> None:
        if self.chunk_size <= 0 or self.head < 0:
            raise ValueError(f"invalid chunk geometry {self!r}")
        _check_algorithm(self.algorithm)

    @property
    def key(self) -> str:
        # the algorithm is part of the cache key: a SHA-256 table cached by an older
        # modelreg is never served as a BLAKE3 one
        return f"{self.algorithm}:{self.chunk_size}:{self.head}"

    def count(self, size: int) -> int:
        c = self.chunk_size
        head = min(self.head, size)
        return -(-head // c) + -(-(size - head) // c)


@dataclass(frozen=True, slots=True)
class ChunkTable:
    """The digest (``geometry.algorithm``) of every chunk of a file, 32 raw bytes
    each, in file order."""

    geometry: ChunkGeometry
    size: int
    digests: bytes

    @property
    def count(self) -> int:
        return len(self.digests) // _CHUNK_DIGEST


class ChunkHasher:
    """Fed a file's bytes in order (blocks of any size), hashes each chunk of it."""

    def __init__(self, geometry: ChunkGeometry) -> None:
        self.geometry = geometry
        self._pos = 0
        self._start = 0
        self._hasher = new_chunk_hash(geometry.algorithm)
        self._out = bytearray()

    def _boundary(self) -> int:
        c, head, pos = self.geometry.chunk_size, self.geometry.head, self._pos
        if pos < head:
            return min(head, (pos // c + 1) * c)
        return head + ((pos - head) // c + 1) * c

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            boundary = self._boundary()
            take = min(len(view), boundary - self._pos)
            self._hasher.update(view[:take])
            self._pos += take
            view = view[take:]
            if self._pos == boundary:
                self._out += self._hasher.digest()
                self._hasher = new_chunk_hash(self.geometry.algorithm)
                self._start = self._pos

    def finish(self) -> ChunkTable:
        """The table of everything fed so far (the file's end closes the last chunk)."""
        if self._pos > self._start:
            self._out += self._hasher.digest()
            self._hasher = new_chunk_hash(self.geometry.algorithm)
            self._start = self._pos
        return ChunkTable(self.geometry, self._pos, bytes(self._out))


def hash_file(path: str | os.PathLike[str], algorithm: str = "sha256") -> tuple[Digest, int]:
    """Stream a file through the hasher; returns (digest, size)."""
    hasher = Hasher(algorithm)
    buf = bytearray(_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            hasher.update(view[:n])
    return hasher.digest(), hasher.size


def hash_file_with_chunks(
    path: str | os.PathLike[str], geometry: ChunkGeometry, algorithm: str = "sha256"
) -> tuple[Digest, int, ChunkTable]:
    """One read of a file: (digest, size, chunk table).

    The whole-file digest is computed on a helper thread while the next block is
    read and its chunks hashed here (hashlib and blake3 release the GIL): on two cores this
    costs about one hashing pass. Two buffers alternate, so a block is never
    overwritten while the helper still hashes it.
    """
    hasher = Hasher(algorithm)
    chunks = ChunkHasher(geometry)
    buffers = (bytearray(_BLOCK), bytearray(_BLOCK))
    turn = 0
    pending: Future[None] | None = None
    with (
        open(path, "rb", buffering=0) as f,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="hash") as pool,
    ):
        while True:
            buf = buffers[turn]
            turn ^= 1
            n = f.readinto(buf)
            if pending is not None:
                pending.result()
                pending = None
            if not n:
                break
            block = memoryview(buf)[:n]
            pending = pool.submit(hasher.update, block)
            chunks.update(block)
        if pending is not None:
            pending.result()
    return hasher.digest(), hasher.size, chunks.finish()


def _hash_spans(
    real: str,
    spans: Sequence[split.Span],
    algorithm: str,
    on_span: Callable[[int, Digest], None] | None,
    reference: tuple[str, list[Digest]] | None,
    chunks: ChunkHasher | None,
) -> tuple[Digest, list[Digest]]:
    if chunks is None:
        whole, parts, _ = split.hash_spans(real, spans, algorithm, on_span, reference)
    else:
        whole, parts, _ = split.hash_spans(
            real, spans, algorithm, on_span, reference, tap=chunks.update
        )
    return whole, parts


_Ident = tuple[int, int, int, int]


def _file_state(path: str | os.PathLike[str]) -> tuple[str, os.stat_result, _Ident]:
    """The real path of ``path``, its stat, and the key the cache records it under (device,
    inode, size, mtime): a digest is answered from the cache only for that very state."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return real, st, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _unchanged(real: str, before: os.stat_result) -> bool:
    """Whether ``real`` still has the size and mtime it had before it was hashed: only
    then may its digest be remembered for that state."""
    after = os.stat(real)
    return (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


class DigestCache(SqliteCache):
    """Remembers file digests by identity; thread-safe."""

    SCHEMA = _SCHEMA

    def digest(
        self,
        path: str | os.PathLike[str],
        algorithm: str = "sha256",
        before_hash: Callable[[int], None] | None = None,
    ) -> tuple[Digest, int]:
        """(digest, size) of a file, from the cache or by reading it once.

        ``before_hash(size)`` is called when the digest is not cached, just before
        the file is read (e.g. to start sending it while it is hashed).
        """
        real, st, ident = _file_state(path)
        cached = self._cached_digest(real, algorithm, ident)
        if cached is not None:
            return cached, st.st_size
        if before_hash is not None:
            before_hash(st.st_size)
        digest, size = hash_file(real, algorithm)
        if _unchanged(real, st):
            self._store_digest(real, algorithm, ident, digest)
        return digest, size

    def cached(
        self,
        path: str | os.PathLike[str],
        geometry: ChunkGeometry | None = None,
        algorithm: str = "sha256",
    ) -> bool:
        """Whether :meth:`digest` (with ``geometry``: :meth:`digest_with_chunks`) would
        answer for the file as it is now without reading it."""
        real, _, ident = _file_state(path)
        if geometry is not None and self._cached_table(real, geometry, ident) is None:
            return False
        return self._cached_digest(real, algorithm, ident) is not None

    def digest_with_chunks(
        self,
        path: str | os.PathLike[str],
        geometry: ChunkGeometry,
        algorithm: str = "sha256",
        before_hash: Callable[[int], None] | None = None,
    ) -> tuple[Digest, int, ChunkTable]:
        """(digest, size, chunk table) of a file, from the cache or one read pass.

        Nothing is read when both the digest and a table of this geometry are
        cached for the file as it is now. Otherwise the file is read once for both
        (``before_hash(size)`` first, as for :meth:`digest`) and both are recorded.
        """
        real, st, ident = _file_state(path)
        table = self._cached_table(real, geometry, ident)
        if table is not None:
            cached = self._cached_digest(real, algorithm, ident)
            if cached is not None:
                return cached, st.st_size, table
        if before_hash is not None:
            before_hash(st.st_size)
        digest, size, table = hash_file_with_chunks(real, geometry, algorithm)
        if _unchanged(real, st):
            self._store_digest(real, algorithm, ident, digest)
            self._store_table(real, ident, table)
        return digest, size, table

    def _cached_digest(self, real: str, algorithm: str, ident: _Ident) -> Digest | None:
        """The recorded digest of ``real`` if it was recorded for this very file state."""
        rows = self._db.select(
            "SELECT dev, ino, size, mtime_ns, digest FROM digests WHERE path = ? AND algorithm = ?",
            (real, algorithm),
        )
        row = rows[0] if rows else None
        if row is None or tuple(row[:4]) != ident:
            return None
        return Digest.parse(row[4])

    def _store_digest(self, real: str, algorithm: str, ident: _Ident, digest: Digest) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?, ?)",
            (real, *ident, algorithm, str(digest)),
        )

    def _cached_table(self, real: str, geometry: ChunkGeometry, ident: _Ident) -> ChunkTable | None:
        rows = self._db.select(
            "SELECT dev, ino, size, mtime_ns, digests FROM chunks WHERE path = ? AND geometry = ?",
            (real, geometry.key),
        )
        row = rows[0] if rows else None
        if row is None or tuple(row[:4]) != ident or not isinstance(row[4], bytes):
            return None
        table = ChunkTable(geometry, ident[2], row[4])
        if len(row[4]) != geometry.count(ident[2]) * _CHUNK_DIGEST:
            return None  # damaged: recompute
        return table

    def _store_table(self, real: str, ident: _Ident, table: ChunkTable) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?)",
            (real, table.geometry.key, *ident, table.digests),
        )

    def split_digests(
        self,
        path: str | os.PathLike[str],
        spans: Sequence[split.Span],
        algorithm: str = "sha256",
        on_span: Callable[[int, Digest], None] | None = None,
    ) -> tuple[Digest, list[Digest]]:
        """(whole-file digest, one digest per span), from the cache or one read pass.

        ``on_span(index, digest)`` is called for each span as soon as its digest is known.
        """
        whole, parts, _ = self.split_digests_with_chunks(path, spans, None, algorithm, on_span)
        return whole, parts

    def split_digests_with_chunks(
        self,
        path: str | os.PathLike[str],
        spans: Sequence[split.Span],
        geometry: ChunkGeometry | None,
        algorithm: str = "sha256",
        on_span: Callable[[int, Digest], None] | None = None,
    ) -> tuple[Digest, list[Digest], ChunkTable | None]:
        """:meth:`split_digests` plus, with ``geometry``, the whole file's chunk table
        computed in the same read pass (or from the cache: then nothing is read)."""
        real, st, ident = _file_state(path)
        key = split.spans_key(spans)
        rows = self._db.select(
            "SELECT dev, ino, size, mtime_ns, whole, digests FROM parts "
            "WHERE path = ? AND algorithm = ? AND spans = ?",
            (real, algorithm, key),
        )
        row = rows[0] if rows else None
        table = self._cached_table(real, geometry, ident) if geometry is not None else None
        if row is not None and tuple(row[:4]) == ident and (geometry is None or table is not None):
            cached: list[Digest] = []
            with contextlib.suppress(ValueError, TypeError):
                cached = [Digest.parse(d) for d in row[5].split(",")]
            if len(cached) == len(spans):
                if on_span is not None:
                    for index, digest in enumerate(cached):
                        on_span(index, digest)
                return Digest.parse(row[4]), cached, table
        reference = self._reference(real, key, algorithm, len(spans))
        ref = (reference[0], reference[1]) if reference is not None else None
        chunks = ChunkHasher(geometry) if geometry is not None else None
        whole, parts = _hash_spans(real, spans, algorithm, on_span, ref, chunks)
        if reference is not None and not self._still(reference[0], reference[2]):
            # the reference changed while it was compared: trust nothing from it
            chunks = ChunkHasher(geometry) if geometry is not None else None
            whole, parts = _hash_spans(real, spans, algorithm, None, None, chunks)
        table = chunks.finish() if chunks is not None else None
        after = os.stat(real)
        unchanged = (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
        if unchanged:
            self._db.execute(
                "INSERT OR REPLACE INTO parts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (real, algorithm, key, *ident, str(whole), ",".join(map(str, parts))),
            )
            self._store_digest(real, algorithm, ident, whole)
            if table is not None:
                self._store_table(real, ident, table)
        return whole, parts, table

    def _reference(
        self, real: str, key: str, algorithm: str, count: int
    ) -> tuple[str, list[Digest], _Ident] | None:
        """Another file hashed with the same spans and unchanged since (a previous
        checkpoint): its span digests let :func:`split.hash_spans` skip equal spans."""
        rows = self._db.select(
            "SELECT path, dev, ino, size, mtime_ns, digests FROM parts "
            "WHERE algorithm = ? AND spans = ? AND path != ? ORDER BY rowid DESC LIMIT 8",
            (algorithm, key, real),
        )
        for path, *ident, joined in rows:
            identity = (ident[0], ident[1], ident[2], ident[3])
            if not self._still(path, identity):
                continue
            with contextlib.suppress(ValueError, TypeError):
                digests = [Digest.parse(d) for d in joined.split(",")]
                if len(digests) == count:
                    return path, digests, identity
        return None

    @staticmethod
    def _still(path: str, identity: _Ident) -> bool:
        return FileIdentity.of_path(path) == FileIdentity(*identity)
