"""Where blobs were last seen: (registry, repository) per digest.

A push to a new repository of a registry that already holds the model's blobs in
another repository can mount them instead of uploading them again. The copy
engine asks :meth:`BlobLocations.candidates` for repositories to mount from;
transfers record what they saw. Stored in a small SQLite database next to the
digest cache; an unusable database only disables the hint.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable

from modelreg.content._sqlite import SqliteCache

__all__ = ["BlobLocations"]

_MAX_CANDIDATES = 3

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS locations (registry TEXT, repository TEXT, "
    "digest TEXT, seen REAL, PRIMARY KEY (registry, digest, repository))",
)


class BlobLocations(SqliteCache):
    SCHEMA = _SCHEMA

    def record(self, registry: str, repository: str, digests: Iterable[str]) -> None:
        now = time.time()
        rows = [(registry, repository, d, now) for d in digests]
        with self._db.lock, contextlib.suppress(sqlite3.Error):
            db = self._db.connection()
            if db is not None and rows:
                db.executemany("INSERT OR REPLACE INTO locations VALUES (?, ?, ?, ?)", rows)

    def candidates(self, registry: str, digest: str, exclude: str | None = None) -> list[str]:
        rows = self._db.select(
            "SELECT repository FROM locations WHERE registry = ? AND digest = ? "
            "ORDER BY seen DESC LIMIT ?",
            (registry, digest, _MAX_CANDIDATES + 1),
        )
        return [r[0] for r in rows if r[0] != exclude][:_MAX_CANDIDATES]
