"""The SQLite helper behind the copies, locations and digest caches
(``modelreg.content._sqlite``): how a database is opened, and how an unusable one
degrades to None instead of failing."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelreg.content._sqlite import LazyDatabase, open_db

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER)",
    "CREATE INDEX IF NOT EXISTS t_v ON t (v)",
)


@contextlib.contextmanager
def opened(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection by ``open_db`` that must open, closed at the end."""
    conn = open_db(path, SCHEMA)
    assert conn is not None
    try:
        yield conn
    finally:
        conn.close()


def in_thread(fn: Callable[[], object]) -> object:
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    assert len(out) == 1, "the thread failed"
    return out[0]


def test_creates_the_file_and_the_schema(tmp_path):
    path = tmp_path / "x.sqlite"
    with opened(path) as conn:
        assert path.is_file()
        rows = conn.execute("SELECT type, name FROM sqlite_master ORDER BY name").fetchall()
        assert ("table", "t") in rows
        assert ("index", "t_v") in rows


def test_reopening_keeps_rows_and_schema(tmp_path):
    path = tmp_path / "x.sqlite"
    with opened(path) as conn:
        conn.execute("INSERT INTO t VALUES ('a', 1)")
    with opened(path) as conn:  # the schema again: IF NOT EXISTS, no error
        assert conn.execute("SELECT k, v FROM t").fetchall() == [("a", 1)]


def test_wal_autocommit_busy_timeout_and_any_thread(tmp_path):
    path = tmp_path / "x.sqlite"
    with opened(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA busy_timeout").fetchone() == (30000,)
        assert conn.isolation_level is None
        conn.execute("INSERT INTO t VALUES ('a', 1)")
        assert not conn.in_transaction  # autocommit: nothing left open
        assert Path(f"{path}-wal").exists()
        # check_same_thread=False: the same connection from another thread
        assert in_thread(lambda: conn.execute("SELECT v FROM t").fetchone()) == (1,)
    # WAL is a property of the file: a plain connection finds it too
    plain = sqlite3.connect(path)
    try:
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        plain.close()


def test_a_connection_in_another_thread_sees_committed_rows(tmp_path):
    path = tmp_path / "x.sqlite"

    def read() -> object:
        with opened(path) as reader:
            return reader.execute("SELECT k, v FROM t ORDER BY k").fetchall()

    with opened(path) as writer:
        writer.execute("INSERT INTO t VALUES ('a', 1)")
        assert in_thread(read) == [("a", 1)]
        writer.execute("BEGIN")
        writer.execute("INSERT INTO t VALUES ('b', 2)")
        assert in_thread(read) == [("a", 1)]  # not committed yet: not seen
        writer.execute("COMMIT")
        assert in_thread(read) == [("a", 1), ("b", 2)]


def test_another_process_sees_committed_rows_and_its_rows_are_seen(tmp_path):
    path = tmp_path / "x.sqlite"
    with opened(path) as conn:
        conn.execute("INSERT INTO t VALUES ('a', 1)")
        script = (
            "import sqlite3, sys\n"
            "c = sqlite3.connect(sys.argv[1], timeout=30)\n"
            "print(c.execute('SELECT k, v FROM t').fetchall())\n"
            "c.execute(\"INSERT INTO t VALUES ('b', 2)\")\n"
            "c.commit()\n"
            "c.close()\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert done.stdout.strip() == "[('a', 1)]"
        assert conn.execute("SELECT k, v FROM t ORDER BY k").fetchall() == [("a", 1), ("b", 2)]


def test_a_corrupt_file_gives_none_and_is_left_alone(tmp_path):
    path = tmp_path / "x.sqlite"
    garbage = b"this is not an SQLite database " * 200
    path.write_bytes(garbage)
    assert open_db(path, SCHEMA) is None
    assert path.read_bytes() == garbage


def test_a_missing_directory_gives_none_and_is_not_created(tmp_path):
    path = tmp_path / "missing" / "x.sqlite"
    assert open_db(path, SCHEMA) is None
    assert not path.parent.exists()


def test_a_directory_in_place_of_the_file_gives_none(tmp_path):
    (tmp_path / "x.sqlite").mkdir()
    assert open_db(tmp_path / "x.sqlite", SCHEMA) is None


CANNOT_SWITCH = 98


def _exit_code_as_nobody(fn: Callable[[], int]) -> int:
    """``fn()`` run in a forked child as user nobody (65534): its exit code."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = CANNOT_SWITCH
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            code = 99  # fn raised
            code = fn()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_a_read_only_directory_gives_none_and_no_file():
    # not tmp_path: its parents are private to the user, and root must hand the
    # directory to another user for it to be read-only
    with tempfile.TemporaryDirectory() as top:
        ro = Path(top) / "ro"
        ro.mkdir()
        path = ro / "x.sqlite"
        os.chmod(top, 0o755)
        ro.chmod(0o555)
        try:
            if os.geteuid() != 0:
                assert open_db(path, SCHEMA) is None
            else:  # root writes anywhere: try as nobody
                code = _exit_code_as_nobody(lambda: 0 if open_db(path, SCHEMA) is None else 1)
                if code == CANNOT_SWITCH:
                    pytest.skip("cannot switch to user nobody here")
                assert code == 0
            assert not path.exists()
        finally:
            ro.chmod(0o755)


def test_a_failing_schema_gives_none_and_closes_the_connection(tmp_path, monkeypatch):
    connections: list[sqlite3.Connection] = []
    connect = sqlite3.connect

    def spy(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)  # type: ignore[arg-type]
        connections.append(conn)
        return conn

    monkeypatch.setattr(sqlite3, "connect", spy)
    bad = (*SCHEMA, "CREATE TABLE t (k)")  # no IF NOT EXISTS: t is there already
    assert open_db(tmp_path / "x.sqlite", bad) is None
    assert len(connections) == 1
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        connections[0].execute("SELECT 1")


# ------------------------------------------------------------------ LazyDatabase


def test_lazy_database_opens_on_first_use_and_after_close(tmp_path):
    path = tmp_path / "x.sqlite"
    db = LazyDatabase(path, SCHEMA)
    assert not path.exists()
    with db.lock:
        conn = db.connection()
        assert conn is not None
        assert db.connection() is conn  # one connection, kept
        conn.execute("INSERT INTO t VALUES ('a', 1)")
    db.close()
    db.close()  # twice is fine
    with db.lock:
        again = db.connection()
        assert again is not None and again is not conn
        assert again.execute("SELECT k, v FROM t").fetchall() == [("a", 1)]
    db.close()


@pytest.mark.parametrize("path", [None, ""])
def test_lazy_database_without_a_path_is_none(path):
    db = LazyDatabase(path, SCHEMA)
    with db.lock:
        assert db.connection() is None
    db.close()


def test_lazy_database_that_failed_to_open_stays_off(tmp_path):
    path = tmp_path / "x.sqlite"
    path.mkdir()
    db = LazyDatabase(path, SCHEMA)
    with db.lock:
        assert db.connection() is None
    path.rmdir()  # usable now, but the cache stays off for this object
    with db.lock:
        assert db.connection() is None
    assert not path.exists()
    db.close()
