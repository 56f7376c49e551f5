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
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Sequence

from modelreg.content._sqlite import LazyDatabase
from modelreg.content.copies import FileIdentity
from modelreg.model import split
from modelreg.oci.digest import Digest, Hasher

__all__ = ["DigestCache", "hash_file"]

_BLOCK = 8 * 1024 * 1024

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS digests (path TEXT, dev INTEGER, ino INTEGER, "
    "size INTEGER, mtime_ns INTEGER, algorithm TEXT, digest TEXT, "
    "PRIMARY KEY (path, algorithm))",
    "CREATE TABLE IF NOT EXISTS parts (path TEXT, algorithm TEXT, spans TEXT, "
    "dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER, whole TEXT, "
    "digests TEXT, PRIMARY KEY (path, algorithm, spans))",
)


def hash_file(path: str | os.PathLike[str], algorithm: str = "sha256") -> tuple[Digest, int]:
    """Stream a file through the hasher; returns (digest, size)."""
    hasher = Hasher(algorithm)
    buf = bytearray(_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            hasher.update(view[:n])
    return hasher.digest(), hasher.size


class DigestCache:
    """Remembers file digests by identity; thread-safe."""

    def __init__(self, db_path: str | os.PathLike[str] | None) -> None:
        self._db = LazyDatabase(db_path, _SCHEMA)

    def __enter__(self) -> DigestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

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
        real = os.path.realpath(path)
        st = os.stat(real)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._db.lock:
            db = self._db.connection()
            row = None
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    row = db.execute(
                        "SELECT dev, ino, size, mtime_ns, digest FROM digests "
                        "WHERE path = ? AND algorithm = ?",
                        (real, algorithm),
                    ).fetchone()
        if row is not None and tuple(row[:4]) == key:
            return Digest.parse(row[4]), st.st_size
        if before_hash is not None:
            before_hash(st.st_size)
        digest, size = hash_file(real, algorithm)
        after = os.stat(real)
        unchanged = (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
        with self._db.lock:
            db = self._db.connection()
            if db is not None and unchanged:
                with contextlib.suppress(sqlite3.Error):
                    db.execute(
                        "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (real, *key, algorithm, str(digest)),
                    )
        return digest, size

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
        real = os.path.realpath(path)
        st = os.stat(real)
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        key = split.spans_key(spans)
        with self._db.lock:
            db = self._db.connection()
            row = None
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    row = db.execute(
                        "SELECT dev, ino, size, mtime_ns, whole, digests FROM parts "
                        "WHERE path = ? AND algorithm = ? AND spans = ?",
                        (real, algorithm, key),
                    ).fetchone()
        if row is not None and tuple(row[:4]) == ident:
            cached: list[Digest] = []
            with contextlib.suppress(ValueError, TypeError):
                cached = [Digest.parse(d) for d in row[5].split(",")]
            if len(cached) == len(spans):
                if on_span is not None:
                    for index, digest in enumerate(cached):
                        on_span(index, digest)
                return Digest.parse(row[4]), cached
        reference = self._reference(real, key, algorithm, len(spans))
        ref = (reference[0], reference[1]) if reference is not None else None
        whole, parts, _ = split.hash_spans(real, spans, algorithm, on_span, ref)
        if reference is not None and not self._still(reference[0], reference[2]):
            # the reference changed while it was compared: trust nothing from it
            whole, parts, _ = split.hash_spans(real, spans, algorithm)
        after = os.stat(real)
        unchanged = (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
        with self._db.lock:
            db = self._db.connection()
            if db is not None and unchanged:
                with contextlib.suppress(sqlite3.Error):
                    db.execute(
                        "INSERT OR REPLACE INTO parts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (real, algorithm, key, *ident, str(whole), ",".join(map(str, parts))),
                    )
                    db.execute(
                        "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (real, *ident, algorithm, str(whole)),
                    )
        return whole, parts

    def _reference(
        self, real: str, key: str, algorithm: str, count: int
    ) -> tuple[str, list[Digest], tuple[int, int, int, int]] | None:
        """Another file hashed with the same spans and unchanged since (a previous
        checkpoint): its span digests let :func:`split.hash_spans` skip equal spans."""
        with self._db.lock:
            db = self._db.connection()
            rows: list[tuple[str, int, int, int, int, str]] = []
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    rows = db.execute(
                        "SELECT path, dev, ino, size, mtime_ns, digests FROM parts "
                        "WHERE algorithm = ? AND spans = ? AND path != ? ORDER BY rowid DESC "
                        "LIMIT 8",
                        (algorithm, key, real),
                    ).fetchall()
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
    def _still(path: str, identity: tuple[int, int, int, int]) -> bool:
        return FileIdentity.of_path(path) == FileIdentity(*identity)
