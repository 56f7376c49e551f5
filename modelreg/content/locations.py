"""Where blobs were last seen: (registry, repository) per digest.

A push to a new repository of a registry that already holds the model's blobs in
another repository can mount them instead of uploading them again. The copy
engine asks :meth:`BlobLocations.candidates` for repositories to mount from;
transfers record what they saw. Stored in a small SQLite database next to the
digest cache; an unusable database only disables the hint.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["BlobLocations"]

_MAX_CANDIDATES = 3


class BlobLocations:
    def __init__(self, db_path: str | os.PathLike[str] | None) -> None:
        self._path = Path(db_path) if db_path else None
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection | None:
        if self._path is None:
            return None
        if self._conn is None:
            try:
                conn = sqlite3.connect(
                    self._path, timeout=30, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS locations (registry TEXT, repository TEXT, "
                    "digest TEXT, seen REAL, PRIMARY KEY (registry, digest, repository))"
                )
            except sqlite3.Error:
                self._path = None
                return None
            self._conn = conn
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def record(self, registry: str, repository: str, digests: Iterable[str]) -> None:
        now = time.time()
        rows = [(registry, repository, d, now) for d in digests]
        with self._lock, contextlib.suppress(sqlite3.Error):
            db = self._db()
            if db is not None and rows:
                db.executemany("INSERT OR REPLACE INTO locations VALUES (?, ?, ?, ?)", rows)

    def candidates(self, registry: str, digest: str, exclude: str | None = None) -> list[str]:
        with self._lock, contextlib.suppress(sqlite3.Error):
            db = self._db()
            if db is None:
                return []
            rows = db.execute(
                "SELECT repository FROM locations WHERE registry = ? AND digest = ? "
                "ORDER BY seen DESC LIMIT ?",
                (registry, digest, _MAX_CANDIDATES + 1),
            ).fetchall()
            return [r[0] for r in rows if r[0] != exclude][:_MAX_CANDIDATES]
        return []
