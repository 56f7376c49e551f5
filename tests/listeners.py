"""Loopback servers for tests: a port that accepts connections and never says a word (a
hung registry, for tests of timeouts and budgets), and an HTTP server run from a thread."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


@contextlib.contextmanager
def silent_listener(backlog: int = 16) -> Iterator[int]:
    """The port of a listener that accepts up to ``backlog`` pending connections, holds
    every one it accepts open and never answers; all are closed when the block ends."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def close_quietly(*socks: socket.socket) -> None:
    """Shut down and close each socket (the relay's other thread then sees the end),
    whatever state the peer already left it in."""
    for s in socks:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            s.close()


class _RunsInThread:
    """Runs ``self._thread`` while the ``with`` block runs; :meth:`_close` ends it."""

    _thread: threading.Thread

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        raise NotImplementedError


class ServedInThread(_RunsInThread):
    """An HTTP server on a loopback port, served from a thread while the ``with`` block
    runs; a subclass passes its request handler class."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class AcceptingInThread(_RunsInThread):
    """A raw TCP listener on a loopback port (for faults no HTTP server makes): while the
    ``with`` block runs, a thread hands every connection to :meth:`connected`."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def connected(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed: the block ended
                return
            self.connected(conn)

    def _close(self) -> None:
        self._stop.set()
        self._listener.close()


HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers a proxy must not forward (RFC 9110 7.6.1)."""


class ForwardingHandler(BaseHTTPRequestHandler):
    """A quiet HTTP/1.1 request handler that hands every method to :meth:`forward`
    (the tests' proxies)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def forward(self) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        self.forward()

    do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = do_GET
