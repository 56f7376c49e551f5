"""Verified files that hold a blob's bytes: the cache's memory of pulled output files.

``pull --cache-mode reference`` (and ``auto`` where the filesystem cannot reflink)
writes each downloaded byte once, into the output file, and instead of a second
copy in the cache records where those verified bytes now live: blob digest ->
(path, offset, length) plus the file's identity (device, inode, size, mtime in
ns) when it was recorded. A later pull that needs the blob opens the file, checks
the identity, and copies the range while verifying every byte against the
descriptor; an entry whose file is gone or changed is forgotten.

An identity that still matches is only a hint, never a proof: the bytes are
always verified. Stored in a small SQLite database next to the digest cache
(WAL, safe across processes); an unusable database only disables the memory.
"""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from modelreg.content._sqlite import SqliteCache

__all__ = ["Copies", "Copy", "FileIdentity"]

_MAX_CANDIDATES = 4

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS copies (digest TEXT NOT NULL, path BLOB NOT NULL, "
    "offset INTEGER NOT NULL, length INTEGER NOT NULL, dev INTEGER, ino INTEGER, "
    "size INTEGER, mtime_ns INTEGER, seen REAL, "
    "PRIMARY KEY (digest, path, offset))",
    "CREATE INDEX IF NOT EXISTS copies_path ON copies (path)",
)


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """What must not change for a remembered file to be worth reading."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    @classmethod
    def of_path(cls, path: str | os.PathLike[str]) -> FileIdentity | None:
        """The file's identity now, or None if it cannot be stat'ed."""
        try:
            return cls.of(os.stat(path))
        except OSError:
            return None


@dataclass(frozen=True, slots=True)
class Copy:
    """``length`` bytes at ``offset`` of the file at ``path`` were verified to be ``digest``."""

    digest: str
    path: str
    offset: int
    length: int
    identity: FileIdentity

    @classmethod
    def of_file(cls, digest: str, path: str | os.PathLike[str], offset: int, length: int) -> Copy:
        """Describe a range of an existing file by its current identity (its real path)."""
        real = os.path.realpath(path)
        return cls(digest, real, offset, length, FileIdentity.of(os.stat(real)))

    def open(self) -> io.RawIOBase | None:
        """A stream over the range, or None when the file is gone, not a regular file, or
        its identity changed since it was recorded (the caller forgets the entry)."""
        try:
            # O_NONBLOCK: a FIFO put in the file's place must not hang the pull
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return None
        if (
            not stat.S_ISREG(st.st_mode)
            or FileIdentity.of(st) != self.identity
            or self.offset + self.length > st.st_size
        ):
            os.close(fd)
            return None
        return _RangeReader(fd, self.offset, self.length)


class _RangeReader(io.RawIOBase):
    """Reads ``length`` bytes at ``offset`` of an open file descriptor (owned), then EOF."""

    def __init__(self, fd: int, offset: int, length: int) -> None:
        super().__init__()
        self._fd = fd
        self._pos = offset
        self._end = offset + length

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    @property
    def position(self) -> int:
        """Where the next read starts in the file."""
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._end - self._pos)
        if want <= 0:
            return 0
        try:
            n = os.preadv(self._fd, [view[:want]], self._pos)
        except OSError:
            return 0  # unreadable counts as short: the verifying reader reports it
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class Copies(SqliteCache):
    """Blob digest -> verified ranges of files on this machine; thread-safe."""

    SCHEMA = _SCHEMA

    def record(self, copies: Iterable[Copy]) -> None:
        """Remember verified ranges; older entries for the same paths with another
        identity (a file pulled again in the same place) are dropped."""
        rows = list(copies)
        if not rows:
            return
        now = time.time()
        with self._db.lock, contextlib.suppress(sqlite3.Error):
            db = self._db.connection()
            if db is None:
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                for path, i in {(c.path, c.identity) for c in rows}:
                    db.execute(
                        "DELETE FROM copies WHERE path = ? AND NOT "
                        "(dev = ? AND ino = ? AND size = ? AND mtime_ns = ?)",
                        (os.fsencode(path), i.dev, i.ino, i.size, i.mtime_ns),
                    )
                db.executemany(
                    "INSERT OR REPLACE INTO copies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            c.digest,
                            os.fsencode(c.path),
                            c.offset,
                            c.length,
                            c.identity.dev,
                            c.identity.ino,
                            c.identity.size,
                            c.identity.mtime_ns,
                            now,
                        )
                        for c in rows
                    ],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def candidates(self, digest: str, length: int) -> list[Copy]:
        """Remembered ranges holding ``digest`` (``length`` bytes), most recent first."""
        rows = self._db.select(
            "SELECT path, offset, dev, ino, size, mtime_ns FROM copies "
            "WHERE digest = ? AND length = ? ORDER BY seen DESC LIMIT ?",
            (digest, length, _MAX_CANDIDATES),
        )
        return [
            Copy(digest, os.fsdecode(p), off, length, FileIdentity(dev, ino, size, mt))
            for p, off, dev, ino, size, mt in rows
        ]

    def usable(self, digest: str, length: int) -> Iterator[tuple[Copy, io.RawIOBase]]:
        """Open each remembered range in turn (the caller closes it); entries whose file
        is gone or changed are forgotten on the way."""
        for copy in self.candidates(digest, length):
            f = copy.open()
            if f is None:
                self.forget_file(copy)
                continue
            yield copy, f

    def forget(self, copy: Copy) -> None:
        """Drop one entry (its bytes did not verify)."""
        self._db.execute(
            "DELETE FROM copies WHERE digest = ? AND path = ? AND offset = ?",
            (copy.digest, os.fsencode(copy.path), copy.offset),
        )

    def forget_file(self, copy: Copy) -> None:
        """Drop every entry recorded for ``copy``'s file with ``copy``'s identity (the file
        is gone or changed, so none of them can hold)."""
        i = copy.identity
        self._db.execute(
            "DELETE FROM copies WHERE path = ? AND dev = ? AND ino = ? AND size = ? "
            "AND mtime_ns = ?",
            (os.fsencode(copy.path), i.dev, i.ino, i.size, i.mtime_ns),
        )

    def prune(self, *, dry_run: bool = False) -> int:
        """Forget every entry whose file is gone or changed; how many (would) go."""
        with self._db.lock, contextlib.suppress(sqlite3.Error):
            db = self._db.connection()
            if db is None:
                return 0
            files = db.execute(
                "SELECT DISTINCT path, dev, ino, size, mtime_ns FROM copies"
            ).fetchall()
            stale = []
            for raw, dev, ino, size, mtime_ns in files:
                try:
                    now = FileIdentity.of(os.stat(os.fsdecode(raw)))
                except OSError:
                    now = None
                if now != FileIdentity(dev, ino, size, mtime_ns):
                    stale.append((raw, dev, ino, size, mtime_ns))
            count = 0
            for row in stale:
                if dry_run:
                    count += db.execute(
                        "SELECT COUNT(*) FROM copies WHERE path = ? AND dev = ? AND ino = ? "
                        "AND size = ? AND mtime_ns = ?",
                        row,
                    ).fetchone()[0]
                else:
                    count += db.execute(
                        "DELETE FROM copies WHERE path = ? AND dev = ? AND ino = ? "
                        "AND size = ? AND mtime_ns = ?",
                        row,
                    ).rowcount
            return count
        return 0
