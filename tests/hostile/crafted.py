"""A hostile registry for the hostile-input suite: serves whatever bytes a test crafts.

A real Distribution registry refuses to store a manifest that lies about its digest, a
blob whose bytes differ from its name, or an archive layer with a device file in a
wrong place it would still serve happily; it never trickles, redirects credentials to
another host or sends a malformed auth challenge on demand. This server does exactly
what the test asks, on loopback, with the distribution-spec read API around it:

* ``GET/HEAD /v2/``: 200, or the configured auth challenge;
* ``GET/HEAD /v2/<repo>/manifests/<tag|digest>`` and ``/v2/<repo>/blobs/<digest>``:
  the stored bytes, served as stored (a test may store bytes under a digest they do
  not hash to);
* anything else: a route the test registered with :meth:`CraftedRegistry.route`, or 404
  with a distribution-style error body.

Every request is recorded in :attr:`CraftedRegistry.requests` (method, path, headers),
so tests can count what a client asked for and check which headers it sent where.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from tests.listeners import ServedInThread

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
MODEL_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"


def docker_login(monkeypatch: pytest.MonkeyPatch, directory: Path, host: str, auth: bytes) -> None:
    """A docker config under ``directory`` holding ``auth`` (``user:password``) for ``host``,
    the one modelreg reads for the rest of the test."""
    config = directory / "docker"
    config.mkdir()
    encoded = base64.b64encode(auth).decode()
    (config / "config.json").write_text(json.dumps({"auths": {host: {"auth": encoded}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Reply:
    """What a route answers; ``body`` may be bytes or chunks, sent ``delay`` s apart."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""
    delay: float = 0.0
    cut: bool = False
    """Close the connection after the body: with a ``Content-Length`` promising more,
    a connection cut mid-body."""


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]


Route = Callable[["Seen"], Reply]


@dataclass
class _Object:
    body: bytes
    media_type: str


class CraftedRegistry(ServedInThread):
    """A loopback registry serving crafted content; use as a context manager."""

    def __init__(self) -> None:
        self._manifests: dict[tuple[str, str], _Object] = {}
        self._blobs: dict[tuple[str, str], bytes] = {}
        self._routes: list[tuple[str, re.Pattern[str], Route]] = []
        self._lock = threading.Lock()
        self.requests: list[Seen] = []
        self.challenge: str | None = None
        """A ``WWW-Authenticate`` value: when set, requests without Authorization get 401."""
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                registry._handle(self, "GET")

            def do_HEAD(self) -> None:
                registry._handle(self, "HEAD")

            def do_PUT(self) -> None:
                registry._handle(self, "PUT")

            def do_POST(self) -> None:
                registry._handle(self, "POST")

            def do_PATCH(self) -> None:
                registry._handle(self, "PATCH")

        super().__init__(Handler)

    # -- what the test stores -------------------------------------------------------

    def blob(self, repo: str, data: bytes, *, digest: str | None = None) -> str:
        """Store ``data`` under ``digest`` (default: its true digest); returns the digest."""
        name = digest or sha256(data)
        with self._lock:
            self._blobs[(repo, name)] = data
        return name

    def manifest(
        self,
        repo: str,
        body: bytes,
        *,
        tag: str | None = None,
        media_type: str = OCI_MANIFEST,
        digest: str | None = None,
    ) -> str:
        """Store a manifest under its digest (or a lying ``digest``) and ``tag``."""
        name = digest or sha256(body)
        obj = _Object(body, media_type)
        with self._lock:
            self._manifests[(repo, name)] = obj
            if tag is not None:
                self._manifests[(repo, tag)] = obj
        return name

    def model(
        self,
        repo: str,
        tag: str,
        layers: list[tuple[str, bytes, dict[str, str]]],
        *,
        config: bytes | None = None,
        annotations: dict[str, str] | None = None,
    ) -> str:
        """A ModelPack-shaped manifest over ``layers`` (media type, bytes, annotations)."""
        config = config if config is not None else _minimal_config(layers)
        document: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": MODEL_ARTIFACT,
            "config": {
                "mediaType": MODEL_CONFIG,
                "digest": self.blob(repo, config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": media_type,
                    "digest": self.blob(repo, data),
                    "size": len(data),
                    "annotations": notes,
                }
                for media_type, data, notes in layers
            ],
        }
        if annotations:
            document["annotations"] = annotations
        return self.manifest(repo, json.dumps(document).encode(), tag=tag)

    def route(self, method: str, pattern: str, answer: Route) -> None:
        """Answer ``method`` on paths matching ``pattern`` (full match) with ``answer``."""
        self._routes.append((method, re.compile(pattern), answer))

    def count(self, method: str, pattern: str) -> int:
        rx = re.compile(pattern)
        return sum(1 for s in self.requests if s.method == method and rx.fullmatch(s.path))

    # -- serving --------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        seen = Seen(method, h.path, {k.lower(): v for k, v in h.headers.items()})
        with self._lock:
            self.requests.append(seen)
        length = int(h.headers.get("Content-Length") or 0)
        if length:
            h.rfile.read(length)
        reply = self._answer(seen)
        try:
            self._send(h, method, reply)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _answer(self, seen: Seen) -> Reply:
        for method, rx, answer in self._routes:
            same = method == seen.method or (method == "GET" and seen.method == "HEAD")
            if same and rx.fullmatch(seen.path):
                return answer(seen)
        if self.challenge is not None and "authorization" not in seen.headers:
            return Reply(401, {"WWW-Authenticate": self.challenge}, _error("UNAUTHORIZED"))
        path = seen.path.split("?", 1)[0]
        if path == "/v2/":
            return Reply(200, {"Content-Type": "application/json"}, b"{}")
        m = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", path)
        if m is None:
            return Reply(404, {}, _error("NAME_UNKNOWN"))
        repo, kind, ref = m.groups()
        with self._lock:
            if kind == "manifests":
                obj = self._manifests.get((repo, ref))
                if obj is None:
                    return Reply(404, {}, _error("MANIFEST_UNKNOWN"))
                digest = ref if ref.startswith("sha256:") else sha256(obj.body)
                headers = {"Content-Type": obj.media_type, "Docker-Content-Digest": digest}
                return Reply(200, headers, obj.body)
            data = self._blobs.get((repo, ref))
        if data is None:
            return Reply(404, {}, _error("BLOB_UNKNOWN"))
        return Reply(200, {"Content-Type": "application/octet-stream"}, data)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, method: str, reply: Reply) -> None:
        chunks = [reply.body] if isinstance(reply.body, bytes) else list(reply.body)
        h.send_response(reply.status)
        headers = dict(reply.headers)
        if "Content-Length" not in headers:
            headers["Content-Length"] = str(sum(len(c) for c in chunks))
        for name, value in headers.items():
            h.send_header(name, value)
        h.end_headers()
        if method == "HEAD":
            return
        for chunk in chunks:
            if reply.delay:
                time.sleep(reply.delay)
            h.wfile.write(chunk)
            h.wfile.flush()
        if reply.cut:
            h.close_connection = True


def _error(code: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": code.lower()}]}).encode()


def _minimal_config(layers: list[tuple[str, bytes, dict[str, str]]]) -> bytes:
    diff_ids = [sha256(data) for _, data, _ in layers]
    document = {
        "descriptor": {"name": "hostile"},
        "config": {},
        "modelfs": {"type": "layers", "diffIds": diff_ids},
    }
    return json.dumps(document).encode()
