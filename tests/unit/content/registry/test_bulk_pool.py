"""The bulk path's keep-alive pool: reuse only after a whole body, bounded, thread-safe,
a dead idle connection replaced transparently, closed with its owner."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest

from modelreg.content.base import read_into
from modelreg.content.registry import _bulk
from modelreg.content.registry.deadlines import DocumentDeadline, active

BLOB = bytes(range(256)) * 4096  # 1 MiB


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    connections = 0
    lock = threading.Lock()
    close_after_response = False  # drop the connection without saying so
    say_close = False  # answer with "Connection: close"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        start, end = 0, len(BLOB) - 1
        ranged = self.headers.get("Range")
        if ranged:
            a, b = ranged.removeprefix("bytes=").split("-")
            start, end = int(a), int(b)
        body = BLOB[start : end + 1]
        self.send_response(206 if ranged else 200)
        self.send_header("Content-Length", str(len(body)))
        if self.server.say_close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        if self.server.close_after_response:
            self.close_connection = True


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def pool() -> Iterator[_bulk.BulkPool]:
    p = _bulk.BulkPool()
    yield p
    p.close()


def _get(srv: _Server, pool: _bulk.BulkPool, start: int, n: int, read: int | None = None) -> bytes:
    url = f"http://127.0.0.1:{srv.server_address[1]}/blob"
    request = httpx.Request("GET", url, headers={"Range": f"bytes={start}-{start + n - 1}"})
    response = _bulk.send(request, ssl_context=None, timeout=10, pool=pool)
    stream = response.stream
    assert isinstance(stream, _bulk.BulkStream)
    out = bytearray(n if read is None else read)
    got = read_into(stream, out)
    response.close()
    return bytes(out[:got])


def test_connection_is_reused_after_a_whole_body(server, pool):
    for k in range(5):
        assert _get(server, pool, k * 1000, 5000) == BLOB[k * 1000 : k * 1000 + 5000]
    assert server.connections == 1
    assert pool.opened == 1 and pool.reused == 4
    pool.close()
    assert pool.idle() == 0


def test_a_body_closed_early_closes_its_connection(server, pool):
    assert _get(server, pool, 0, 500_000, read=1000) == BLOB[:1000]
    assert pool.idle() == 0  # not reusable: the rest of the body is still on the wire
    assert _get(server, pool, 0, 100) == BLOB[:100]
    assert server.connections == 2


def test_server_asking_to_close_is_not_pooled(server, pool):
    server.say_close = True
    # the body outlives the connection object (http.client hands the socket to the response)
    assert _get(server, pool, 0, 500_000) == BLOB[:500_000]
    assert _get(server, pool, 0, 100) == BLOB[:100]
    assert pool.idle() == 0 and server.connections == 2


def test_an_idle_connection_the_server_dropped_is_replaced(server, pool, monkeypatch):
    server.close_after_response = True
    assert _get(server, pool, 0, 100) == BLOB[:100]
    # the pool cannot always see the close (a race): pretend it looks fine
    monkeypatch.setattr(_bulk, "_usable", lambda connection: True)
    assert _get(server, pool, 100, 100) == BLOB[100:200]  # sent again on a new one
    assert server.connections == 2


def test_pool_is_bounded_thread_safe_and_closed_with_its_owner(server):
    pool = _bulk.BulkPool(max_idle=2)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for j in range(10):
                off = (k * 10 + j) * 4096
                assert _get(server, pool, off, 4096) == BLOB[off : off + 4096]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert pool.idle() <= 2
    assert server.connections < 60  # kept alive, not one per request
    pool.close()
    assert pool.idle() == 0
    # a response finished after the close does not go back into the pool
    url = f"http://127.0.0.1:{server.server_address[1]}/blob"
    response = _bulk.send(httpx.Request("GET", url), ssl_context=None, timeout=10, pool=pool)
    response.read()
    response.close()
    assert pool.idle() == 0


def test_reused_connection_reads_under_the_active_deadline(server, pool):
    _get(server, pool, 0, 100)
    deadline = DocumentDeadline(30.0, "127.0.0.1", "test")
    with active(deadline):
        assert _get(server, pool, 0, 200_000) == BLOB[:200_000]
    assert pool.reused == 1
