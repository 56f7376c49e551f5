"""SqliteCache: a cache's database made with its SCHEMA, closed by close() or ``with``."""

from __future__ import annotations

from pathlib import Path

from modelreg.content._sqlite import SqliteCache


class _Cache(SqliteCache):
    SCHEMA = ("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY)",)

    def put(self, key: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO t VALUES (?)", (key,))

    def keys(self) -> list[str]:
        return [row[0] for row in self._db.select("SELECT k FROM t ORDER BY k", ())]


def test_schema_is_created_and_with_closes_the_connection(tmp_path: Path) -> None:
    with _Cache(tmp_path / "c.db") as cache:
        cache.put("b")
        cache.put("a")
        assert cache.keys() == ["a", "b"]
        db = cache._db
    assert db._conn is None  # closed at the end of the block
    with _Cache(tmp_path / "c.db") as again:
        assert again.keys() == ["a", "b"]


def test_without_a_path_it_remembers_nothing() -> None:
    cache = _Cache(None)
    cache.put("a")
    assert cache.keys() == []
    cache.close()
