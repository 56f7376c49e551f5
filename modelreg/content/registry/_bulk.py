"""A lean HTTP/1.1 GET for bulk blob bytes, on :mod:`http.client`.

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
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Iterator
from typing import Final

import httpx

from modelreg.content.registry.deadlines import bounded_response_class

__all__ = ["BulkStream", "send"]

_ITER_BLOCK: Final = 64 * 1024


class BulkStream(httpx.SyncByteStream):
    """The body of a :mod:`http.client` response, readable straight into a buffer."""

    def __init__(
        self,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        request: httpx.Request,
    ) -> None:
        self._connection = connection
        self._response = response
        self._request = request
        self._received = 0

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
        try:
            self._response.close()
        finally:
            self._connection.close()


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


def send(
    request: httpx.Request, *, ssl_context: ssl.SSLContext | None, timeout: float
) -> httpx.Response:
    """Send a body-less request; the response body is left unread (a :class:`BulkStream`)."""
    url = request.url
    connection = _connection(url, ssl_context, timeout)
    try:
        try:
            connection.connect()
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        if connection.sock is not None:
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            connection.putrequest(
                request.method,
                url.raw_path.decode("ascii"),
                skip_host=True,
                skip_accept_encoding=True,
            )
            for name, value in request.headers.raw:
                connection.putheader(name.decode("latin-1"), value.decode("latin-1"))
            connection.endheaders()
            response = connection.getresponse()
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
        except http.client.RemoteDisconnected as exc:
            raise httpx.RemoteProtocolError(
                str(exc) or "server disconnected", request=request
            ) from exc
        except http.client.HTTPException as exc:
            raise httpx.RemoteProtocolError(
                str(exc) or type(exc).__name__, request=request
            ) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
    except BaseException:
        connection.close()
        raise
    return httpx.Response(
        response.status,
        headers=response.getheaders(),
        stream=BulkStream(connection, response, request),
        request=request,
    )
