"""Total-time bounds on registry requests, enforced at every socket read and write.

The idle timeout (``timeout``, ``$MODELREG_TIMEOUT``) only catches a registry that
goes silent; one that sends a byte every half second never trips it, and a 4 MiB
manifest at that rate takes weeks. So every request is also under one of two bounds:

* **document deadline** (``document_deadline``, ``$MODELREG_DOCUMENT_DEADLINE``,
  default 60 s or the idle timeout if larger): a fixed total time for everything
  read whole into memory (manifests, indexes, configs and other blobs under
  :data:`SMALL_BODY`, token answers, referrers and tag lists) and for the status
  line and headers of every request, blobs included (a server can trickle headers
  too). One deadline covers the whole logical operation: every retry, auth round
  and the body, so retries never multiply it.
* **throughput floor** (``min_throughput`` bytes/s averaged over ``throughput_window``
  seconds, ``$MODELREG_MIN_THROUGHPUT`` / ``$MODELREG_THROUGHPUT_WINDOW``, default
  1024 B/s over 30 s): for blob bodies, downloaded or uploaded. Only time spent
  waiting on the socket counts, so a slow disk on our side never trips it. A blob
  that stops entirely is the idle timeout's case; one that trickles is the floor's.
  After an upload's last byte the floor turns into a deadline for the registry's
  answer (it may verify the blob first).

Mechanism: the bound of the operation in progress is held in a context variable
(:func:`active`, set by the client around ``send`` and by the body readers around
each read). The socket layers consult it before and after every ``recv``/``send``:
the httpx path through :class:`BoundedTransport` (an httpcore network backend whose
streams clamp each read's timeout to the time left), the bulk path through
:func:`bounded_response_class` (a raw socket reader under :mod:`http.client`,
which sets the socket's timeout only when it changes: once per response while the
bound is further than the idle timeout, at every read only once it is nearer).
A tripped bound raises :class:`BoundExceeded`; it is final (never retried or
resumed: the bound is the budget of the whole operation) and becomes a
:class:`~modelreg.errors.TransferTooSlowError` naming the bound, the host, what was
being fetched and the setting to raise.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import socket
import ssl
import time
import typing
from collections import deque
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Final

import httpcore
import httpx

from modelreg.errors import TransferTooSlowError

__all__ = [
    "DEFAULT_DOCUMENT_DEADLINE",
    "DEFAULT_MIN_THROUGHPUT",
    "DEFAULT_THROUGHPUT_WINDOW",
    "SMALL_BODY",
    "BoundExceeded",
    "BoundedTransport",
    "DocumentDeadline",
    "ThroughputFloor",
    "TransferBound",
    "active",
    "bounded_response_class",
    "current",
]

DEFAULT_DOCUMENT_DEADLINE: Final = 60.0
DEFAULT_MIN_THROUGHPUT: Final = 1024.0
DEFAULT_THROUGHPUT_WINDOW: Final = 30.0
SMALL_BODY: Final = 256 * 1024
"""Blobs up to this size are read under the document deadline (too short to average)."""
_WRITE_PIECE: Final = 64 * 1024
"""Uploads are written in pieces this large so the floor is checked between them."""

_SocketOptions = Iterable[
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
]
_current: ContextVar[TransferBound | None] = ContextVar("modelreg_transfer_bound", default=None)


def _where(url: httpx.URL | None) -> str:
    # No query: upload and storage URLs can carry signatures.
    if url is None:
        return ""
    return f" ({url.scheme}://{url.netloc.decode('ascii', 'replace')}{url.path})"


class TransferBound:
    """The total-time budget of one operation; see the module docstring."""

    kind = ""

    def __init__(self, host: str, what: str, url: httpx.URL | None = None) -> None:
        self.host = host
        self.what = what
        self.url = url
        self.tripped = False

    def read_timeout(self, idle: float | None) -> float | None:
        """The timeout for the next socket operation; raises once the bound is spent."""
        return idle

    def waited(self, seconds: float, n: int) -> None:
        """Account a socket operation that took ``seconds`` and moved ``n`` bytes."""

    def exceeded(self) -> BoundExceeded:
        self.tripped = True
        return BoundExceeded(self)

    def error(self) -> TransferTooSlowError:
        raise NotImplementedError


class DocumentDeadline(TransferBound):
    """A fixed total time from creation (across retries, auth rounds and the body)."""

    kind = "document deadline"

    def __init__(self, seconds: float, host: str, what: str, url: httpx.URL | None = None) -> None:
        super().__init__(host, what, url)
        self.seconds = seconds
        self.started = time.monotonic()
        self.deadline = self.started + seconds

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check(self) -> None:
        if self.remaining() <= 0:
            raise self.exceeded()

    def read_timeout(self, idle: float | None) -> float | None:
        left = self.remaining()
        if left <= 0:
            raise self.exceeded()
        return left if idle is None else min(idle, left)

    def error(self) -> TransferTooSlowError:
        return TransferTooSlowError(
            f"{self.host} did not finish answering within the {self.seconds:g} s total "
            f"deadline for a document, while trying to {self.what}{_where(self.url)}",
            hint=(
                "the registry trickles its answer or is very slow; if it is only slow, raise "
                "the deadline with $MODELREG_DOCUMENT_DEADLINE (seconds; "
                "RemoteOptions.document_deadline)"
            ),
            bound="document-deadline",
        )


class ThroughputFloor(TransferBound):
    """At least ``rate`` bytes/s averaged over the last ``window`` seconds of waiting.

    With ``expected`` (an upload's body size), once that many bytes went out the
    floor becomes a deadline of ``then`` seconds for the answer.
    """

    kind = "throughput floor"

    def __init__(
        self,
        rate: float,
        window: float,
        host: str,
        what: str,
        url: httpx.URL | None = None,
        *,
        expected: int | None = None,
        then: float = DEFAULT_DOCUMENT_DEADLINE,
    ) -> None:
        super().__init__(host, what, url)
        self.rate = rate
        self.window = window
        self.busy = 0.0
        """Seconds spent waiting on the socket so far (the floor's clock)."""
        self.total = 0
        self._samples: deque[tuple[float, int]] = deque([(0.0, 0)])
        self._expected = expected
        self._then = then
        self._tail: DocumentDeadline | None = None

    def read_timeout(self, idle: float | None) -> float | None:
        if self._tail is not None:
            return self._tail.read_timeout(idle)
        return idle

    def waited(self, seconds: float, n: int) -> None:
        self.busy += seconds
        self.total += n
        if self._tail is not None:
            self._tail.check()
            return
        if self._expected is not None and self.total >= self._expected:
            self._tail = DocumentDeadline(self._then, self.host, self.what, self.url)
            return
        samples = self._samples
        if self.busy - samples[-1][0] >= self.window / 64:
            samples.append((self.busy, self.total))
        start = self.busy - self.window
        if start < 0:
            return
        # the latest sample at or before the window's start (older ones are not needed)
        while len(samples) > 1 and samples[1][0] <= start:
            samples.popleft()
        if self.total - samples[0][1] < self.rate * self.window:
            raise self.exceeded()

    def error(self) -> TransferTooSlowError:
        if self._tail is not None and self._tail.tripped:
            error = self._tail.error()
            return TransferTooSlowError(
                f"{self.host} received the whole body but did not answer within "
                f"{self._then:g} s, while trying to {self.what}{_where(self.url)}",
                hint=error.hint,
                bound="document-deadline",
            )
        return TransferTooSlowError(
            f"the transfer with {self.host} fell below the throughput floor of "
            f"{self.rate:g} bytes/s averaged over {self.window:g} s ({self.total} bytes in "
            f"{self.busy:.1f} s), while trying to {self.what}{_where(self.url)}",
            hint=(
                "the registry trickles the data or the link is very slow; if it is only slow, "
                "lower $MODELREG_MIN_THROUGHPUT (bytes/s) or lengthen "
                "$MODELREG_THROUGHPUT_WINDOW (seconds) (RemoteOptions.min_throughput, "
                "throughput_window)"
            ),
            bound="throughput-floor",
        )


class BoundExceeded(httpx.ReadTimeout):
    """A transfer bound was spent; final, never retried (see the module docstring)."""

    def __init__(self, bound: TransferBound) -> None:
        super().__init__(f"{bound.kind} exceeded")
        self.bound = bound


def current() -> TransferBound | None:
    return _current.get()


def _connect_timeout(timeout: float | None) -> float | None:
    """The timeout of a connection step (TCP connect, TLS handshake) under the current
    bound: no more than the bound has left, so a stalled handshake is a spent deadline."""
    bound = current()
    return timeout if bound is None else bound.read_timeout(timeout)


@contextlib.contextmanager
def active(bound: TransferBound | None) -> Iterator[None]:
    """Make ``bound`` the one the socket layers enforce, for this thread, inside the block."""
    token = _current.set(bound)
    try:
        yield
    finally:
        _current.reset(token)


def _timed_read(
    bound: TransferBound | None, idle: float | None, read: typing.Callable[[float | None], int]
) -> int:
    """Run one socket read under ``bound``: clamp its timeout, account its time and bytes."""
    if bound is None:
        return read(idle)
    timeout = bound.read_timeout(idle)
    began = time.monotonic()
    try:
        n = read(timeout)
    except (TimeoutError, httpcore.ReadTimeout, httpcore.WriteTimeout) as exc:
        bound.waited(time.monotonic() - began, 0)
        if isinstance(bound, DocumentDeadline) and bound.remaining() <= 0:
            raise bound.exceeded() from exc
        raise
    bound.waited(time.monotonic() - began, n)
    return n


# --------------------------------------------------------------------------- httpx path


class _BoundedStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        out = b""

        def once(t: float | None) -> int:
            nonlocal out
            out = self._stream.read(max_bytes, t)
            return len(out)

        _timed_read(current(), timeout, once)
        return out

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        bound = current()
        if bound is None:
            self._stream.write(buffer, timeout)
            return
        view = memoryview(buffer)
        for start in range(0, len(view), _WRITE_PIECE):
            piece = bytes(view[start : start + _WRITE_PIECE])

            def once(t: float | None, piece: bytes = piece) -> int:
                self._stream.write(piece, t)
                return len(piece)

            _timed_read(bound, timeout, once)

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _connect_timeout(timeout)
        return _BoundedStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class _BoundedBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: _SocketOptions | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _connect_timeout(timeout)
        stream = self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _BoundedStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: _SocketOptions | None = None,
    ) -> httpcore.NetworkStream:
        return _BoundedStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


# httpcore's exceptions as the httpx ones the client translates (most specific first)
_MAPPED: Final[tuple[tuple[type[Exception], type[httpx.TransportError]], ...]] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _httpx_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except BoundExceeded:
        raise
    except Exception as exc:
        for source, target in _MAPPED:
            if isinstance(exc, source):
                raise target(str(exc) or type(exc).__name__, request=request) from exc
        raise


class _Body(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes], request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors(self._request):
            yield from self._stream

    def close(self) -> None:
        if isinstance(self._stream, _Closable):
            self._stream.close()


@typing.runtime_checkable
class _Closable(typing.Protocol):
    def close(self) -> None: ...


class BoundedTransport(httpx.BaseTransport):
    """httpx over an httpcore pool whose sockets honour the active :class:`TransferBound`.

    Used for direct connections; requests that go through an environment proxy use
    httpx's own transport and are bounded between body reads only.
    """

    def __init__(self, *, ssl_context: ssl.SSLContext, limits: httpx.Limits) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_BoundedBackend(),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors(request):
            response = self._pool.handle_request(core_request)
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream, request),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


# --------------------------------------------------------------------------- bulk path


class _RawSocket(io.RawIOBase):
    """The socket under :mod:`http.client`'s buffered reader, one bounded ``recv`` a call.

    It holds the socket open while the response reads it, the way ``sock.makefile``
    does (through a makefile of its own, closed with it): http.client closes its
    connection (and the socket) as soon as a response says ``Connection: close``, before
    the body was read."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self._hold = sock.makefile("rb", buffering=0)
        self._idle = sock.gettimeout()
        self._armed = self._idle
        """The timeout set on the socket now: changed (a syscall) only when the next
        read needs another one, i.e. the idle timeout while the bound is far, the time
        left once a deadline is nearer than that."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        sock = self._sock

        def once(t: float | None) -> int:
            if t != self._armed:
                sock.settimeout(t)
                self._armed = t
            return sock.recv_into(buffer)

        return _timed_read(current(), self._idle, once)

    def close(self) -> None:
        try:
            self._hold.close()
        finally:
            super().close()


class _SocketFile:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def makefile(self, mode: str) -> io.BufferedReader:
        assert mode == "rb"
        return io.BufferedReader(_RawSocket(self._sock))


class _BoundedResponse(http.client.HTTPResponse):
    def __init__(
        self,
        sock: socket.socket,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        # HTTPResponse only calls sock.makefile("rb"): hand it a reader that checks the bound
        super().__init__(_SocketFile(sock), debuglevel, method, url)  # type: ignore[arg-type]


def bounded_response_class() -> type[http.client.HTTPResponse]:
    """The :class:`http.client.HTTPResponse` class whose reads honour the active bound."""
    return _BoundedResponse
