"""The small SQLite database behind each cache that remembers hints between runs.

:mod:`modelreg.content.copies`, :mod:`modelreg.content.locations` and
:mod:`modelreg.model.digests` open theirs the same way: WAL (safe across processes),
autocommit, a 30 s busy timeout, usable from any thread under one lock, the schema
created if missing. What they keep is a hint, never the truth, so a database that
cannot be opened (missing or read-only directory, read-only or corrupt file, a
directory in its place) disables the cache for the life of the object instead of
failing the caller.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from modelreg._closing import Closing

__all__ = ["LazyDatabase", "SqliteCache", "open_db"]

BUSY_TIMEOUT = 30.0
"""Seconds a statement waits for another connection's lock before failing."""


def open_db(path: str | os.PathLike[str], schema: Iterable[str]) -> sqlite3.Connection | None:
    """Connect to the database at ``path``, switch it to WAL and run ``schema``.

    The file is created if missing, its directory never (the caller makes it). The
    connection is in autocommit mode (``isolation_level=None``: ``BEGIN`` is the
    caller's), waits :data:`BUSY_TIMEOUT` for locks, and may be used from any thread
    (``check_same_thread=False``: the caller serialises its use). ``schema`` is run
    statement by statement, so it must be idempotent (``CREATE ... IF NOT EXISTS``).

    None, with nothing left open, when any step fails with :class:`sqlite3.Error`.
    """
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in schema:
            conn.execute(statement)
    except sqlite3.Error:
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        return None
    return conn


class LazyDatabase:
    """One cache's database, opened by :func:`open_db` on first use.

    Hold :attr:`lock` around :meth:`connection` and every use of what it returns.
    """

    def __init__(self, path: str | os.PathLike[str] | None, schema: Iterable[str]) -> None:
        self._path = Path(path) if path else None
        self._schema = tuple(schema)
        self._conn: sqlite3.Connection | None = None
        self.lock = threading.Lock()

    def connection(self) -> sqlite3.Connection | None:
        """The open connection; None without a path, and for good once opening failed."""
        if self._path is None:
            return None
        if self._conn is None:
            self._conn = open_db(self._path, self._schema)
            if self._conn is None:
                self._path = None  # an unusable cache is no cache, never an error
        return self._conn

    def select(self, sql: str, args: Sequence[object]) -> list[Any]:
        """The rows one query returns; none when there is no usable database or the
        query fails: a cache that cannot answer knows nothing, it is never an error."""
        with self.lock, contextlib.suppress(sqlite3.Error):
            db = self.connection()
            if db is None:
                return []
            return db.execute(sql, args).fetchall()
        return []

    def execute(self, sql: str, args: Sequence[object]) -> None:
        """Run one statement, when there is a usable database; a failure is ignored as
        :meth:`select` ignores it (the cache then holds a little more than it should)."""
        with self.lock, contextlib.suppress(sqlite3.Error):
            db = self.connection()
            if db is not None:
                db.execute(sql, args)

    def close(self) -> None:
        """Close the connection (a later :meth:`connection` opens it again)."""
        with self.lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class SqliteCache(Closing):
    """A cache kept in a :class:`LazyDatabase` of its own, created with the subclass's
    ``SCHEMA``; closing it (or leaving its ``with`` block) closes the connection."""

    SCHEMA: ClassVar[tuple[str, ...]] = ()

    def __init__(self, db_path: str | os.PathLike[str] | None) -> None:
        self._db = LazyDatabase(db_path, self.SCHEMA)

    def close(self) -> None:
        self._db.close()
