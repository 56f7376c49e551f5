"""A loopback TCP proxy that cuts connections, for transport faults a real
registry will not produce on demand (a connection dropped mid-upload)."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.listeners import AcceptingInThread, close_quietly


class CuttingProxy(AcceptingInThread):
    """Forwards 127.0.0.1:<port> to ``upstream``; the first connection that carries more
    than ``cut_after`` bytes from the client is closed abruptly (once)."""

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cuts = 0
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def _close(self) -> None:
        super()._close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()
        for t in [self._thread, *self._threads]:
            t.join(5)

    def connected(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        with self._lock:
            self._sockets += [conn, upstream]
        state = {"sent": 0, "armed": self.cuts == 0}
        for src, dst, upload in ((conn, upstream, True), (upstream, conn, False)):
            t = threading.Thread(target=self._pump, args=(src, dst, upload, state), daemon=True)
            t.start()
            self._threads.append(t)

    def _pump(
        self, src: socket.socket, dst: socket.socket, upload: bool, state: dict[str, int]
    ) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if upload:
                    state["sent"] += len(data)
                    if state["armed"] and self.cuts == 0 and state["sent"] > self.cut_after:
                        self.cuts += 1
                        break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            close_quietly(src, dst)
