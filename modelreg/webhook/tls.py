"""A server TLS context whose certificate and key are reloaded when their files change.

Kubernetes rotates a mounted Secret by swapping a symlink; cert-manager renews before
expiry. :class:`ReloadingTLS` keeps *one* :class:`ssl.SSLContext` (the one the listening
socket uses, :mod:`modelreg.webhook.http`) and calls ``load_cert_chain`` on it again
when the files' (inode, size, mtime) change: new handshakes get the new certificate,
open connections keep theirs, no restart. A half-written or mismatched pair is loaded
into a scratch context first and rejected, so the serving certificate is only ever
replaced by a valid one. :meth:`maybe_reload` runs on the event loop (between
handshakes).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from pathlib import Path

__all__ = ["ReloadingTLS", "server_context"]

log = logging.getLogger("modelreg.webhook")


def server_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _stamp(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)  # follows symlinks: a Secret update swaps ..data
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class ReloadingTLS:
    def __init__(self, cert_file: str | Path, key_file: str | Path) -> None:
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.context = server_context()
        self._lock = threading.Lock()
        self.context.load_cert_chain(self.cert_file, self.key_file)
        self.loaded = True
        """A valid pair is in the context (readiness; a rejected reload keeps it)."""
        self._stamps = (_stamp(self.cert_file), _stamp(self.key_file))
        self.reloads = 0
        self.failures = 0
        self._rejected: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None

    def changed(self) -> bool:
        try:
            return (_stamp(self.cert_file), _stamp(self.key_file)) != self._stamps
        except OSError:
            return False

    def maybe_reload(self) -> bool:
        """Reload if the files changed and form a valid pair; True when reloaded."""
        with self._lock:
            try:
                stamps = (_stamp(self.cert_file), _stamp(self.key_file))
            except OSError as exc:
                log.warning("serving certificate not readable, keeping the current one: %s", exc)
                return False
            if stamps == self._stamps or stamps == self._rejected:
                return False
            try:
                server_context().load_cert_chain(self.cert_file, self.key_file)  # validate first
                self.context.load_cert_chain(self.cert_file, self.key_file)
            except (ssl.SSLError, OSError) as exc:
                self.failures += 1
                self._rejected = stamps
                log.warning("new serving certificate rejected, keeping the current one: %s", exc)
                return False
            self._stamps = stamps
            self.reloads += 1
            log.info("serving certificate reloaded from %s", self.cert_file)
            return True
