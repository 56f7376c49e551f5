"""A lean HTTP/1.1 GET for bulk blob bytes, on :mod:`http.client`, over kept-alive connections.

httpx parses a body in 64 KiB events through several layers; on loopback that
costs 2-4x the CPU of the transfer itself (measured: ~1.5 s of CPU per GiB
against ~0.35 s for ``http.client``, whose ``readinto`` lands socket data
directly in the caller's buffer). Bulk blob downloads therefore go through this
module when no proxy applies and no custom transport was given; everything else
(auth, retries, redirects, error mapping) stays in the client, which sees an
ordinary :class:`httpx.Response` whose stream is a :class:`BulkStream`.

Failures are raised as httpx exceptions so the client translates them once. The
socket is read through :func:`~modelreg.content.registry.deadlines.bounded_response_class`,
so transfer bounds hold on this path too (``readinto`` of a buffered reader would
otherwise wait for the whole buffer, however slowly it fills).

Connection pool
===============

Lazy reads and ``load`` send many Range requests (16 MiB each); a new TCP (and
TLS) connection per request cost a handshake, a fresh congestion window and a
server-side accept each time. Each registry client owns one :class:`BulkPool`;
its rules:

* keyed by scheme, host and port: a redirect to a storage host gets its own
  connections, and the client's TLS settings (CA files, client certificates,
  ``--insecure``) are the pool's, since a pool belongs to one client (mirrors
  are clients of their own, with pools of their own);
* a connection goes back to the pool only after its response body was read to
  the end (``Content-Length`` reached) and the server did not ask to close it;
  a response closed early (an error, a cancelled read, a short body) closes its
  connection, so no stray bytes can be read as the next response;
* bounded: at most ``max_idle`` idle connections per key (the extra ones are
  closed); connections in use are not counted (the callers' own concurrency
  bounds those); an idle connection older than ``idle_expiry`` seconds, or one
  that became readable while idle (the server closed it or sent junk), is closed
  instead of reused;
* a request on a reused connection that fails before any status line arrives
  (the server closed it while idle: the usual keep-alive race) is sent once more
  on a new connection; a GET has no side effect, and nothing was read yet;
* thread-safe (one lock around the idle lists); :meth:`BulkPool.close` (called by
  the client's ``close``) closes the idle connections, and those in use are closed
  when their response is, instead of being returned;
* deadlines are untouched: the connect runs under the caller's idle timeout, and
  every response (new or reused connection) reads through the bounded response
  class, under the transfer bound active for that request.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Final

import httpx

from modelreg.content.registry.deadlines import bounded_response_class

__all__ = ["DEFAULT_IDLE_EXPIRY", "DEFAULT_MAX_IDLE", "BulkPool", "BulkStream", "send"]

_ITER_BLOCK: Final = 64 * 1024
DEFAULT_MAX_IDLE: Final = 8
"""Idle connections kept per scheme/host/port."""
DEFAULT_IDLE_EXPIRY: Final = 30.0
"""Seconds an idle connection may wait for reuse (servers close idle ones after a while)."""

_Key = tuple[str, str, int]


class BulkPool:
    """Kept-alive :mod:`http.client` connections of one registry client (see module notes)."""

    def __init__(
        self, *, max_idle: int = DEFAULT_MAX_IDLE, idle_expiry: float = DEFAULT_IDLE_EXPIRY
    ) -> None:
        self.max_idle = max(0, max_idle)
        self.idle_expiry = idle_expiry
        self._idle: dict[_Key, deque[tuple[float, http.client.HTTPConnection]]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.opened = 0
        """Connections opened through this pool (for tests and benchmarks)."""
        self.reused = 0
        """Requests sent on a kept-alive connection."""

    def take(self, key: _Key) -> http.client.HTTPConnection | None:
        """An idle connection for ``key`` that still looks usable, or None."""
        now = time.monotonic()
        stale: list[http.client.HTTPConnection] = []
        found = None
        with self._lock:
            idle = self._idle.get(key)
            while idle:
                since, connection = idle.pop()  # most recently used first
                if now - since > self.idle_expiry or not _usable(connection):
                    stale.append(connection)
                    continue
                found = connection
                self.reused += 1
                break
        for connection in stale:
            connection.close()
        return found

    def give(self, key: _Key, connection: http.client.HTTPConnection) -> None:
        """Keep ``connection`` for reuse (its last response fully read), or close it."""
        with self._lock:
            if not self._closed and self.max_idle:
                idle = self._idle.setdefault(key, deque())
                idle.append((time.monotonic(), connection))
                if len(idle) <= self.max_idle:
                    return
                _, connection = idle.popleft()  # the oldest goes
        connection.close()

    def count_open(self) -> None:
        with self._lock:
            self.opened += 1

    def idle(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._idle.values())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [c for v in self._idle.values() for _, c in v]
            self._idle.clear()
        for connection in idle:
            connection.close()


def _usable(connection: http.client.HTTPConnection) -> bool:
    sock = connection.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    # an idle connection has nothing to read: readable means closed by the peer, or junk
    return not readable


class BulkStream(httpx.SyncByteStream):
    """The body of a :mod:`http.client` response, readable straight into a buffer."""

    def __init__(
        self,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        request: httpx.Request,
        pool: BulkPool | None = None,
        key: _Key | None = None,
    ) -> None:
        self._connection = connection
        self._response = response
        self._request = request
        self._received = 0
        self._pool = pool
        self._key = key
        self._complete = response.length == 0  # nothing to read (e.g. 204, HEAD)
        self._closed = False

    def readinto(self, view: memoryview) -> int:
        """Fill ``view`` as far as one read goes; 0 at the end of the body."""
        if not len(view):
            return 0
        try:
            n = self._response.readinto(view)
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "read timed out", request=self._request) from exc
        except http.client.IncompleteRead as exc:
            raise httpx.RemoteProtocolError(
                f"connection closed after {self._received} body bytes", request=self._request
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=self._request) from exc
        if n == 0:
            remaining = self._response.length
            if remaining:
                raise httpx.RemoteProtocolError(
                    f"peer closed the connection after {self._received} body bytes, "
                    f"{remaining} short of its Content-Length",
                    request=self._request,
                )
        self._received += n
        if self._response.isclosed() and self._response.length == 0:
            # http.client closes the response once Content-Length bytes were read
            self._complete = True
        return n

    def __iter__(self) -> Iterator[bytes]:
        buffer = bytearray(_ITER_BLOCK)
        view = memoryview(buffer)
        while True:
            n = self.readinto(view)
            if not n:
                return
            yield bytes(view[:n])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        reusable = (
            self._complete
            and self._pool is not None
            and self._key is not None
            and self._connection.sock is not None  # None: the server said "close"
        )
        try:
            self._response.close()
        finally:
            if reusable:
                assert self._pool is not None and self._key is not None
                self._pool.give(self._key, self._connection)
            else:
                self._connection.close()


def _key(url: httpx.URL) -> _Key:
    return (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))


def _connection(
    url: httpx.URL, ssl_context: ssl.SSLContext | None, timeout: float
) -> http.client.HTTPConnection:
    host = url.host
    connection: http.client.HTTPConnection
    if url.scheme == "https":
        connection = http.client.HTTPSConnection(
            host, url.port or 443, timeout=timeout, context=ssl_context
        )
    else:
        connection = http.client.HTTPConnection(host, url.port or 80, timeout=timeout)
    # every recv (headers and body) honours the active transfer bound (see deadlines)
    connection.response_class = bounded_response_class()
    return connection


def _connect(connection: http.client.HTTPConnection, request: httpx.Request) -> None:
    try:
        connection.connect()
    except TimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
    except (OSError, ssl.SSLError) as exc:
        raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
    if connection.sock is not None:
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _exchange(
    connection: http.client.HTTPConnection, request: httpx.Request
) -> http.client.HTTPResponse:
    """Send the request and read the status line and headers (http.client errors as-is)."""
    url = request.url
    connection.putrequest(
        request.method,
        url.raw_path.decode("ascii"),
        skip_host=True,
        skip_accept_encoding=True,
    )
    for name, value in request.headers.raw:
        connection.putheader(name.decode("latin-1"), value.decode("latin-1"))
    connection.endheaders()
    return connection.getresponse()


def _translated(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout(str(exc) or "read timed out", request=request)
    if isinstance(exc, http.client.RemoteDisconnected):
        return httpx.RemoteProtocolError(str(exc) or "server disconnected", request=request)
    if isinstance(exc, http.client.HTTPException):
        return httpx.RemoteProtocolError(str(exc) or type(exc).__name__, request=request)
    return httpx.ReadError(str(exc) or type(exc).__name__, request=request)


def send(
    request: httpx.Request,
    *,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
    pool: BulkPool | None = None,
) -> httpx.Response:
    """Send a body-less request; the response body is left unread (a :class:`BulkStream`).

    With ``pool``, a kept-alive connection is reused when one is idle, and the
    connection goes back to the pool once the body was read to its end."""
    url = request.url
    key = _key(url)
    reused = pool.take(key) if pool is not None else None
    if reused is not None:
        reused.timeout = timeout
        if reused.sock is not None:
            reused.sock.settimeout(timeout)
        try:
            response = _exchange(reused, request)
        except (http.client.RemoteDisconnected, ConnectionError, BrokenPipeError):
            # closed by the server while idle: nothing was read, send it on a new one
            reused.close()
        except BaseException as exc:
            reused.close()
            if isinstance(exc, TimeoutError | OSError | http.client.HTTPException):
                raise _translated(exc, request) from exc
            raise
        else:
            return _wrap(reused, response, request, pool, key)
    connection = _connection(url, ssl_context, timeout)
    try:
        _connect(connection, request)
        if pool is not None:
            pool.count_open()
        try:
            response = _exchange(connection, request)
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise _translated(exc, request) from exc
    except BaseException:
        connection.close()
        raise
    return _wrap(connection, response, request, pool, key)


def _wrap(
    connection: http.client.HTTPConnection,
    response: http.client.HTTPResponse,
    request: httpx.Request,
    pool: BulkPool | None,
    key: _Key,
) -> httpx.Response:
    return httpx.Response(
        response.status,
        headers=response.getheaders(),
        stream=BulkStream(connection, response, request, pool, key),
        request=request,
    )
