"""The webhook's HTTP/1.1 layer (modelreg.webhook.http) over a real loopback socket.

Plain TCP (TLS is the integration suite's job in test_webhook.py): limits answered with
their status and the connection closed, pipelined requests answered in order, request
smuggling shapes refused, arrival stamped before the handler runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from modelreg.webhook.http import HttpLimits, HttpRequest, HttpResponse, HttpServer

LIMITS = HttpLimits(max_body=1000, max_header=2000, request_timeout=5, keepalive_timeout=5)


async def _echo(request: HttpRequest) -> HttpResponse:
    assert request.arrival <= time.monotonic()
    return HttpResponse(200, f"{request.method} {request.path} {len(request.body)}".encode())


def exchange(
    raw: bytes, handler: Callable[[HttpRequest], Awaitable[HttpResponse]] = _echo
) -> bytes:
    """Send ``raw`` on one connection; everything the server sends until it closes (or
    goes quiet for a second)."""

    async def main() -> bytes:
        server = HttpServer(handler, LIMITS)
        await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(raw)
        chunks = []
        try:
            while data := await asyncio.wait_for(reader.read(65536), timeout=1.0):
                chunks.append(data)
        except TimeoutError:
            pass
        writer.close()
        await server.shutdown(timeout=1)
        return b"".join(chunks)

    return asyncio.run(main())


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )


def test_one_answer_one_write_keep_alive() -> None:
    out = exchange(post("/validate?timeout=10s", b"{}"))
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 16" in head and b"connection: close" not in head
    assert body == b"POST /validate 2"  # the query string is not part of the path
    assert out.count(b"HTTP/1.1") == 1


def test_pipelined_requests_are_answered_in_order() -> None:
    out = exchange(post("/a", b"1") + post("/b", b"22") + post("/c", b"333"))
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in out.split(b"HTTP/1.1 200 OK")[1:]]
    assert bodies == [b"POST /a 1", b"POST /b 2", b"POST /c 3"]


def test_oversized_body_refused_before_it_is_read() -> None:
    out = exchange(
        b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"x" * 10
    )
    assert out.startswith(b"HTTP/1.1 413 ") and b"connection: close" in out


def test_oversized_chunked_body_refused() -> None:
    chunk = b"x" * 600
    body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(3)) + b"0\r\n\r\n"
    raw = b"POST /v HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    assert exchange(raw).startswith(b"HTTP/1.1 413 ")


def test_oversized_headers_refused() -> None:
    out = exchange(post("/v", b"", extra="X-Big: " + "a" * 3000 + "\r\n"))
    assert out.startswith(b"HTTP/1.1 431 ")


def test_smuggling_shapes_and_garbage_are_400() -> None:
    both = b"POST /v HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert exchange(both + b"0\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert exchange(b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    upgrade = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    assert exchange(upgrade).startswith(b"HTTP/1.1 400 ")


def test_a_failing_handler_is_a_500_and_the_connection_closes() -> None:
    async def broken(request: HttpRequest) -> HttpResponse:
        raise RuntimeError("boom")

    out = exchange(post("/v", b"{}") + post("/v", b"{}"), broken)
    assert out.startswith(b"HTTP/1.1 500 ") and out.count(b"HTTP/1.1") == 1
    assert b"boom" not in out
