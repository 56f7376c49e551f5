"""A streaming HTTP(S) proxy that counts blob bytes and can hold blob requests.

Two uses in the cache tests (``test_nginx_cache.py``):

* **the upstream as everyone sees it**: TLS, in front of a TLS Distribution registry,
  serving the registry's own certificate (so its CA still verifies), passing
  credentials through. Every byte of a blob GET it relays is counted: that is the
  upstream's egress, whether the cache or a node asked.
* **a barrier in front of the cache**: plain HTTP; blob GETs wait until ``parties``
  of them for the same digest have arrived, then all go on together, so the cache
  meets a truly concurrent cold miss, whatever the machine's speed.

``hold`` (a callable taking the digest) runs before a blob GET is forwarded: the
upstream proxy uses it to keep the cache's first fetch from finishing until the
barrier has passed every node's request to the cache.
"""

from __future__ import annotations

import http.client
import re
import ssl
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from tests.listeners import HOP_BY_HOP as _HOP
from tests.listeners import ForwardingHandler, ServedInThread

_BLOB = re.compile(r"/blobs/(sha256:[0-9a-f]{64})")
WAIT_LIMIT = 60.0
"""Longest a held request waits (a safety net: a broken test fails, it does not hang)."""


class MeteringProxy(ServedInThread):
    def __init__(
        self,
        target_port: int,
        *,
        target_ca: Path | None = None,
        serve_cert: tuple[Path, Path] | None = None,
    ) -> None:
        self.target_port = target_port
        self.target_ca = target_ca
        self.hold: Callable[[str], None] | None = None
        self.parties = 0
        """With more than 0: blob GETs wait until this many for their digest arrived."""
        self.blob_bytes: Counter[str] = Counter()
        self.blob_gets: Counter[str] = Counter()
        self.forwarded: Counter[str] = Counter()
        self.waits_expired = 0
        self._cond = threading.Condition()
        proxy = self

        class Handler(ForwardingHandler):
            def forward(self) -> None:
                proxy._handle(self)

        super().__init__(Handler)
        if serve_cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*serve_cert)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)

    def total_blob_bytes(self) -> int:
        with self._cond:
            return sum(self.blob_bytes.values())

    def wait_forwarded(self, digest: str, count: int) -> None:
        """Block until ``count`` blob GETs for ``digest`` have been passed on."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.forwarded[digest] >= count, WAIT_LIMIT):
                self.waits_expired += 1

    def _connection(self) -> http.client.HTTPConnection:
        if self.target_ca is None:
            return http.client.HTTPConnection("127.0.0.1", self.target_port, timeout=120)
        context = ssl.create_default_context(cafile=str(self.target_ca))
        return http.client.HTTPSConnection(
            "127.0.0.1", self.target_port, timeout=120, context=context
        )

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        match = _BLOB.search(handler.path)
        digest = match.group(1) if match and handler.command == "GET" else None
        if digest is not None:
            with self._cond:
                self.blob_gets[digest] += 1
                self._cond.notify_all()
                if self.parties and not self._cond.wait_for(
                    lambda: self.blob_gets[digest] >= self.parties, WAIT_LIMIT
                ):
                    self.waits_expired += 1
            if self.hold is not None:
                self.hold(digest)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP}
        conn = self._connection()
        try:
            conn.request(handler.command, handler.path, body=body, headers=headers)
            if digest is not None:
                with self._cond:
                    self.forwarded[digest] += 1
                    self._cond.notify_all()
            response = conn.getresponse()
            handler.send_response(response.status)
            declared = response.getheader("Content-Length")
            for key, value in response.getheaders():
                if key.lower() not in _HOP:
                    handler.send_header(key, value)
            data = b""
            if declared is None and handler.command != "HEAD":
                data = response.read()
                handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            if handler.command == "HEAD":
                return
            if data:
                self._relay(handler, digest, data)
            while chunk := response.read(1 << 16):
                self._relay(handler, digest, chunk)
        except OSError:
            handler.close_connection = True
        finally:
            conn.close()

    def _relay(self, handler: BaseHTTPRequestHandler, digest: str | None, chunk: bytes) -> None:
        handler.wfile.write(chunk)
        if digest is not None:
            with self._cond:
                self.blob_bytes[digest] += len(chunk)

    def _close(self) -> None:
        with self._cond:  # held requests go on: the server can then shut down
            self.parties = 0
            self._cond.notify_all()
        self.hold = None
        super()._close()
