"""An HTTP proxy in front of a real registry, for faults the registry will not produce.

Modes:

* ``"pass"``: forward everything unchanged (and count response body bytes);
* ``"flip"``: flip one byte in the middle of every ``206 Partial Content`` body
  (a tampered Range response); with ``flip_whole=True`` also in ``200`` blob bodies;
* ``"strip-range"``: drop the ``Range`` header from requests, so the registry
  answers 200 with the whole blob (a registry that ignores Range).

Bodies are buffered (test blobs are small). ``log`` records every request as
``(method, path, range header, status, body bytes sent)``.

:class:`ProxyProcess` runs the same proxy in a child process. Use it when the code
under test can block the test process while holding the GIL, e.g. ``mmap`` page
faults on a FUSE mount served through the proxy (a proxy thread in the blocked
process could never answer: deadlock).
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from tests.listeners import HOP_BY_HOP as _HOP
from tests.listeners import ForwardingHandler, ServedInThread

Mode = Literal["pass", "flip", "strip-range"]


@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    range: str | None
    status: int
    body_bytes: int


class LazyProxy(ServedInThread):
    def __init__(
        self,
        upstream_port: int,
        mode: Mode = "pass",
        *,
        flip_whole: bool = False,
        log_file: Path | None = None,
        flip_only: str | None = None,
        flip_above: int = 0,
    ):
        self.upstream_port = upstream_port
        self.log_file = log_file
        self.mode: Mode = mode
        self.flip_whole = flip_whole
        self.flip_only = flip_only
        """With ``"flip"``: flip only blobs whose path contains this (a digest)."""
        self.flip_above = flip_above
        """With ``"flip"``: flip only bodies longer than this many bytes."""
        self.log: list[Logged] = []
        self.flips = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(ForwardingHandler):
            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in _HOP and k.lower() != "host"
                }
                rng = self.headers.get("Range")
                if proxy.mode == "strip-range":
                    headers = {k: v for k, v in headers.items() if k.lower() != "range"}
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                try:
                    headers["Host"] = f"127.0.0.1:{proxy.upstream_port}"
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read() if self.command != "HEAD" else b""
                    status = resp.status
                    out_headers = [
                        (k, v)
                        for k, v in resp.getheaders()
                        if k.lower() not in _HOP and k.lower() != "content-length"
                    ]
                    declared = resp.getheader("Content-Length")
                finally:
                    conn.close()
                is_blob = "/blobs/sha256:" in self.path and self.command == "GET"
                if (
                    data
                    and is_blob
                    and proxy.mode == "flip"
                    and (proxy.flip_only is None or proxy.flip_only in self.path)
                    and len(data) > proxy.flip_above
                    and (status == 206 or (status == 200 and proxy.flip_whole))
                ):
                    mutable = bytearray(data)
                    mutable[len(mutable) // 2] ^= 0xFF
                    data = bytes(mutable)
                    with proxy._lock:
                        proxy.flips += 1
                self.send_response(status)
                for k, v in out_headers:
                    self.send_header(k, v)
                if self.command == "HEAD":
                    self.send_header("Content-Length", declared or "0")
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data:
                    self.wfile.write(data)
                entry = Logged(self.command, self.path, rng, status, len(data))
                with proxy._lock:
                    proxy.log.append(entry)
                    if proxy.log_file is not None:
                        with open(proxy.log_file, "a", encoding="utf-8") as f:
                            f.write(json.dumps(asdict(entry)) + "\n")

        super().__init__(Handler)

    def blob_bytes(self) -> int:
        """Body bytes of blob GETs sent to the client so far."""
        with self._lock:
            return sum(e.body_bytes for e in self.log if "/blobs/" in e.path and e.method == "GET")

    def blob_requests(self) -> list[Logged]:
        with self._lock:
            return [e for e in self.log if "/blobs/" in e.path and e.method == "GET"]

    def reset(self) -> None:
        with self._lock:
            self.log.clear()
            self.flips = 0


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGTERM when the test process dies (Linux), so a
    killed test run leaves no proxy or mount behind."""
    import ctypes
    import signal

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ProxyProcess:
    """:class:`LazyProxy` in a child process; the log is shared through a JSONL file."""

    def __init__(self, upstream_port: int, mode: Mode, log_file: Path) -> None:
        self.log_file = log_file
        self._offset = 0
        root = Path(__file__).resolve().parents[2]
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.lazy_proxy",
                str(upstream_port),
                mode,
                str(log_file),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=root,
            preexec_fn=die_with_parent,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self._proc.kill()
            raise RuntimeError(f"proxy did not start: {line!r}")
        self.port = int(line)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _entries(self) -> list[Logged]:
        try:
            text = self.log_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        lines = text[self._offset :].splitlines()
        return [Logged(**json.loads(line)) for line in lines if line.strip()]

    def reset(self) -> None:
        try:
            self._offset = len(self.log_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self._offset = 0

    def blob_requests(self) -> list[Logged]:
        return [e for e in self._entries() if "/blobs/" in e.path and e.method == "GET"]

    def __enter__(self) -> ProxyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("upstream_port", type=int)
    parser.add_argument("mode", choices=["pass", "flip", "strip-range"])
    parser.add_argument("log_file", type=Path)
    args = parser.parse_args()
    proxy = LazyProxy(args.upstream_port, args.mode, log_file=args.log_file)
    with proxy:
        sys.stdout.write(f"{proxy.port}\n")
        sys.stdout.flush()
        threading.Event().wait()


if __name__ == "__main__":
    main()
