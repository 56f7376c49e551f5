"""The webhook's HTTP/1.1 server: an asyncio protocol over httptools (llhttp), nothing else.

Why not uvicorn + Starlette (what the webhook used before issue 20): profiled at 50 and
500 keep-alive TLS connections on 2 cores (bench/RESULTS.md, issue 20), h11's pure-Python
parser and asyncio's pure-Python TLS layer took half the server's CPU, Starlette's
middleware stack another third, and every answer left in two TLS records and two
``send`` calls (headers, then body). An admission webhook needs one request shape
(a JSON POST, a few GETs), so this module is the little it needs:

* **arrival time**: each request carries the monotonic time its first bytes were parsed
  (:attr:`HttpRequest.arrival`): the budget runs from there, so a request that waited
  behind others gets less time, never more;
* **one write per answer**: status line, headers and body leave in one ``write``;
* **limits**: request line + headers (``max_header``), body (``max_body``, 413 and close:
  the rest of an oversized body is never read), a request must arrive whole within
  ``request_timeout`` (a slow-loris client is dropped), an idle keep-alive connection is
  closed after ``keepalive_timeout``, at most ``max_pipelined`` requests queued on one
  connection, and a connection whose client does not read its answers is not read
  either (the transport's write buffer high-water mark pauses reading);
* **in order**: requests on one connection are answered in the order they came
  (HTTP/1.1 pipelining), one at a time; connections are independent of each other.

Parsing is llhttp's (through httptools): strict about Content-Length and
Transfer-Encoding conflicts, which are refused with 400 and the connection closed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, cast

import httptools  # type: ignore[import-not-found,unused-ignore]

__all__ = ["Handler", "HttpLimits", "HttpRequest", "HttpResponse", "HttpServer"]

log = logging.getLogger("modelreg.webhook")

REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    """The path without the query string."""
    headers: dict[str, str]
    """Lower-case names; a repeated header keeps its last value."""
    body: bytes
    arrival: float
    """``time.monotonic()`` when the request's first bytes were parsed."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    content_type: str = "application/json"
    close: bool = False

    def encode(self, keep_alive: bool) -> bytes:
        head = (
            f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Unknown')}\r\n"
            f"content-type: {self.content_type}\r\ncontent-length: {len(self.body)}\r\n"
        )
        if not keep_alive:
            head += "connection: close\r\n"
        return (head + "\r\n").encode("latin-1") + self.body


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


@dataclass(frozen=True)
class HttpLimits:
    max_body: int = 3 * 1024 * 1024
    max_header: int = 64 * 1024
    request_timeout: float = 10.0
    keepalive_timeout: float = 30.0
    max_pipelined: int = 8


def _plain(status: int, text: str) -> HttpResponse:
    return HttpResponse(status, text.encode(), "text/plain; charset=utf-8", close=True)


class _Connection(asyncio.Protocol):
    """One client connection: parse, queue, answer in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: collections.deque[tuple[HttpRequest, bool]] = collections.deque()
        self.worker: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.header_bytes = 0
        self.body: list[bytes] = []
        self.body_size = 0
        self.arrival = 0.0
        self.in_message = False

    # ------------------------------------------------------------ asyncio side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)
        self._arm(self.limits.keepalive_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True
        self._disarm()
        if self.worker is not None and not self.worker.done():
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(_plain(400, "protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            # httptools re-raises what a callback raised as a parser error, the original
            # in ``__context__``: a limit refused by a callback has its own answer
            refused = exc.__context__
            if isinstance(refused, _Refused):
                self._fail(refused.response)
            else:
                self._fail(_plain(400, f"malformed HTTP request: {str(exc)[:80]}"))

    def pause_writing(self) -> None:
        # a client that sends requests and does not read the answers stops being read:
        # answers never pile up in memory faster than it takes them
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        # the client is done sending: answer what is queued, then close
        if self.worker is None or self.worker.done():
            self._close()
        else:
            self.closing = True
        return None

    # ---------------------------------------------------------- parser callbacks
    def on_message_begin(self) -> None:
        self._reset()
        self.in_message = True
        self.arrival = time.monotonic()
        self._arm(self.limits.request_timeout)

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.limits.max_body:
            raise _Refused(_plain(413, f"body over the {self.limits.max_body}-byte limit"))

    def on_body(self, chunk: bytes) -> None:
        self.body_size += len(chunk)
        if self.body_size > self.limits.max_body:
            raise _Refused(_plain(413, f"body over the {self.limits.max_body}-byte limit"))
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        self.in_message = False
        if len(self.queue) >= self.limits.max_pipelined:
            raise _Refused(_plain(503, "too many pipelined requests"))
        url = self.url.decode("latin-1")
        request = HttpRequest(
            method=self.parser.get_method().decode("latin-1"),
            path=url.split("?", 1)[0],
            headers=self.headers,
            body=b"".join(self.body),
            arrival=self.arrival,
        )
        self.queue.append((request, bool(self.parser.should_keep_alive())))
        self._disarm()
        if self.worker is None or self.worker.done():
            self.worker = self.loop.create_task(self._answer_queue())

    def _count(self, n: int) -> None:
        self.header_bytes += n
        if self.header_bytes > self.limits.max_header:
            raise _Refused(_plain(431, "request line and headers over the limit"))

    # ------------------------------------------------------------------ answers
    async def _answer_queue(self) -> None:
        while self.queue and self.transport is not None and not self.transport.is_closing():
            request, keep_alive = self.queue.popleft()
            self.server.in_flight += 1
            try:
                response = await self.server.handler(request)
            except asyncio.CancelledError:
                raise
            except Exception:  # the handler fails closed itself; this is the last guard
                log.exception("%s %s: unhandled error", request.method, request.path)
                response = _plain(500, "internal error")
            finally:
                self.server.in_flight -= 1
            keep_alive = keep_alive and not response.close and not self.server.draining
            self.transport.write(response.encode(keep_alive))
            if not keep_alive:
                self._close()
                return
        if self.closing:
            self._close()
        elif not self.in_message:
            self._arm(self.limits.keepalive_timeout)

    def _fail(self, response: HttpResponse) -> None:
        """Answer a request that cannot be parsed or accepted, then close."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response.encode(keep_alive=False))
        self._close()

    def _close(self) -> None:
        self.closing = True
        self._disarm()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def close_if_idle(self) -> None:
        if not self.in_message and not self.queue and (self.worker is None or self.worker.done()):
            self._close()

    # ------------------------------------------------------------------- timers
    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        self.timer = None
        if self.in_message:
            self._fail(_plain(408, "request not received in time"))
        elif not self.queue and (self.worker is None or self.worker.done()):
            self._close()  # idle keep-alive connection


class _Refused(Exception):
    """Raised from a parser callback: answer ``response`` and close the connection."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(response.status)
        self.response = response


@dataclass
class HttpServer:
    """Serve ``handler`` on ``host:port`` (TLS when ``ssl_context`` is given)."""

    handler: Handler
    limits: HttpLimits = field(default_factory=HttpLimits)
    loop: asyncio.AbstractEventLoop = field(init=False)
    connections: set[_Connection] = field(default_factory=set, init=False)
    in_flight: int = field(default=0, init=False)
    draining: bool = field(default=False, init=False)
    """Set while shutting down: answers carry ``connection: close``."""
    _server: asyncio.Server | None = field(default=None, init=False)

    async def start(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> asyncio.Server:
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(
            lambda: _Connection(self),
            host,
            port,
            ssl=ssl_context,
            backlog=2048,
            ssl_handshake_timeout=self.limits.request_timeout if ssl_context else None,
            reuse_address=True,
        )
        return self._server

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting, answer what is in flight (up to ``timeout``), close the rest."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close_if_idle()
        end = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < end:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn._close()
