"""Hostile registries that trickle (SECURITY.md cases 3 and 23: bounded total time).

A registry that sends one byte every few tens of milliseconds never trips the idle
timeout; each test configures a tiny bound and checks that the operation ends with
a :class:`TransferTooSlowError` that names the bound it hit. Outer timeouts are hang
guards only: nothing here asserts on speed beyond "it ended and said why".
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from modelreg import Client, RemoteOptions
from modelreg.errors import TransferTooSlowError
from tests.hostile.crafted import CraftedRegistry, Reply, Seen
from tests.listeners import AcceptingInThread, ServedInThread

WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
TITLE = "org.opencontainers.image.title"
DRIP = 0.05
"""Seconds between two trickled bytes."""


def _pull(host: str, out: Path, **options: float) -> None:
    with Client(RemoteOptions(**options)) as client:  # type: ignore[arg-type]
        client.pull(f"{host}/m:v1", out, cache=False)


def _drip(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


@pytest.mark.timeout(20)
def test_trickled_manifest_hits_the_document_deadline(
    registry: CraftedRegistry, tmp_path: Path
) -> None:
    registry.model("m", "v1", [(WEIGHT, b"w", {TITLE: "w.bin"})])

    def trickle(seen: Seen) -> Reply:
        body = b'{"schemaVersion": 2, "padding": "' + b"x" * 400 + b'"}'
        return Reply(200, {"Content-Type": "application/json"}, _drip(body), delay=DRIP)

    registry.route("GET", r"/v2/m/manifests/.*", trickle)
    with pytest.raises(TransferTooSlowError) as info:
        _pull(registry.host, tmp_path / "out", document_deadline=0.5)
    assert info.value.bound == "document-deadline"
    assert "deadline" in info.value.message and registry.host in info.value.message
    assert "manifest" in info.value.message
    assert info.value.hint and "MODELREG_DOCUMENT_DEADLINE" in info.value.hint
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


class _HeaderTrickler(AcceptingInThread):
    """A raw loopback server that answers every request with headers, one byte at a time."""

    def connected(self, conn: socket.socket) -> None:
        threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                head = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"y" * 4000 + b"\r\n"
                for i in range(len(head)):
                    if self._stop.is_set():
                        return
                    conn.sendall(head[i : i + 1])
                    time.sleep(DRIP)
            except OSError:
                return


@pytest.mark.timeout(20)
def test_trickled_headers_hit_the_document_deadline(tmp_path: Path) -> None:
    with _HeaderTrickler() as server, pytest.raises(TransferTooSlowError) as info:
        _pull(server.host, tmp_path / "out", document_deadline=0.5)
    assert info.value.bound == "document-deadline"
    assert server.host in info.value.message


@pytest.mark.timeout(20)
@pytest.mark.parametrize("size", [300 * 1024, 2 * 1024 * 1024], ids=["httpx", "bulk"])
def test_trickled_blob_hits_the_throughput_floor(
    registry: CraftedRegistry, tmp_path: Path, size: int
) -> None:
    data = bytes(size)
    registry.model("m", "v1", [(WEIGHT, data, {TITLE: "w.bin"})])
    digest = registry.blob("m", data)

    def trickle(seen: Seen) -> Reply:
        # declares the whole blob, then drips: far below 1 KiB/s
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        return Reply(200, headers, _drip(bytes(400)), delay=DRIP)

    registry.route("GET", rf"/v2/m/blobs/{digest}", trickle)
    with pytest.raises(TransferTooSlowError) as info:
        _pull(
            registry.host,
            tmp_path / "out",
            min_throughput=1024,
            throughput_window=0.5,
            document_deadline=60,
        )
    assert info.value.bound == "throughput-floor"
    assert digest in info.value.message and registry.host in info.value.message
    assert info.value.hint and "MODELREG_MIN_THROUGHPUT" in info.value.hint
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.timeout(20)
def test_trickling_token_realm_hits_the_document_deadline(
    registry: CraftedRegistry, tmp_path: Path
) -> None:
    registry.model("m", "v1", [(WEIGHT, b"w", {TITLE: "w.bin"})])
    registry.challenge = f'Bearer realm="http://{registry.host}/token",service="hostile"'
    token = b'{"token": "' + b"t" * 400 + b'"}'
    registry.route("GET", r"/token(\?.*)?", lambda seen: Reply(200, {}, _drip(token), delay=DRIP))
    with pytest.raises(TransferTooSlowError) as info:
        _pull(registry.host, tmp_path / "out", document_deadline=0.5)
    assert info.value.bound == "document-deadline"
    assert "token" in info.value.message


class _SlowReader(ServedInThread):
    """A loopback registry that accepts uploads but reads their bodies at a trickle."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler

        self.bytes_read = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self, status: int, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                self._answer(200 if self.path == "/v2/" else 404)

            def do_HEAD(self) -> None:
                self._answer(404)

            def do_POST(self) -> None:
                self._answer(202, {"Location": "/v2/m/blobs/uploads/u1", "Range": "0-0"})

            def _drain_slowly(self) -> None:
                left = int(self.headers.get("Content-Length") or 0)
                while left > 0:
                    chunk = self.rfile.read(min(1024, left))
                    if not chunk:
                        return
                    left -= len(chunk)
                    owner.bytes_read += len(chunk)
                    time.sleep(DRIP)
                self._answer(201)

            do_PUT = _drain_slowly
            do_PATCH = _drain_slowly

        super().__init__(Handler)


@pytest.mark.timeout(30)
def test_registry_reading_an_upload_at_a_trickle_hits_the_throughput_floor(
    tmp_path: Path,
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    # larger than what loopback socket buffers absorb, so the writer must wait on the reader
    (model / "w.bin").write_bytes(bytes(32 * 1024 * 1024))
    options = RemoteOptions(min_throughput=1024 * 1024, throughput_window=1.0)
    with (
        _SlowReader() as server,
        Client(options) as client,
        pytest.raises(TransferTooSlowError) as info,
    ):
        client.push(model, f"{server.host}/m:v1")
    assert info.value.bound == "throughput-floor"
    assert info.value.hint and "MODELREG_MIN_THROUGHPUT" in info.value.hint
    assert server.bytes_read < 32 * 1024 * 1024
