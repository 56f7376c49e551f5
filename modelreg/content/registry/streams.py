"""Reading response bodies: in large blocks, capped, and resumable after a cut.

:class:`ResponseReader` is the raw stream under a blob's
:class:`~modelreg.content.base.VerifyingReader`. Each ``readinto`` fills the
caller's buffer as far as the body allows (callers read 1-8 MiB at a time), so
the per-call cost is paid per block, not per network packet. When the connection
breaks mid-body it reopens the blob at the current offset (``Range``) a bounded
number of times; the verifying reader above still hashes every byte, so a resumed
transfer is checked exactly like an uninterrupted one.

Each read runs under the reader's transfer bound (a throughput floor for a blob,
the document deadline for a small one; see
:mod:`~modelreg.content.registry.deadlines`), made active for the socket layer
around the read. A spent bound is not a cut connection: it is raised, never
resumed, and a resume's reads stay under the same bound, so resumes cannot
stretch it. :func:`read_capped` also checks the active deadline between chunks,
which bounds document bodies even where the socket layer is not ours (a proxy).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Final

import httpx

from modelreg.content.registry._bulk import BulkStream
from modelreg.content.registry.deadlines import (
    BoundExceeded,
    DocumentDeadline,
    TransferBound,
    active,
    current,
)
from modelreg.errors import ModelRegError, SizeLimitError

__all__ = ["ResponseReader", "iter_raw", "read_capped"]

_SKIP_BLOCK: Final = 1024 * 1024

Reopen = Callable[[int, int], tuple[httpx.Response, int]]
"""``reopen(delivered, attempt)`` -> (response, skip): a new response for the rest of the
body after ``delivered`` bytes, and how many leading bytes of it to discard (non-zero
when the registry ignored ``Range`` and sent everything again)."""


def iter_raw(response: httpx.Response) -> Iterator[bytes]:
    """The undecoded body, also for responses whose content was already loaded."""
    try:
        content = response.content
    except httpx.ResponseNotRead:
        return response.iter_raw()
    return iter([content])


class ResponseReader(io.RawIOBase):
    """A streamed response body as a raw binary stream that fills whole buffers."""

    def __init__(
        self,
        response: httpx.Response,
        *,
        on_bytes: Callable[[int], None],
        translate: Callable[[httpx.TransportError, int], ModelRegError],
        reopen: Reopen | None = None,
        max_resumes: int = 0,
        skip: int = 0,
        bound: TransferBound | None = None,
    ) -> None:
        super().__init__()
        self._bound = bound
        self._response = response
        self._on_bytes = on_bytes
        self._translate = translate
        self._reopen = reopen
        self._max_resumes = max_resumes
        self._resumes = 0
        self._chunks: Iterator[bytes] | None = None
        self._pending = memoryview(b"")
        self._skip = skip
        self.offset = 0
        """Bytes delivered to the caller so far."""

    def readable(self) -> bool:
        return True

    @property
    def resumes(self) -> int:
        return self._resumes

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        with active(self._bound):
            return self._fill(memoryview(buffer).cast("B"))

    def _fill(self, view: memoryview) -> int:
        total = 0
        while total < len(view):
            try:
                n = self._read_some(view[total:])
            except httpx.TransportError as exc:
                self._resume(exc)
                continue
            if n == 0:
                break
            total += n
            self.offset += n
        return total

    def _raw(self, view: memoryview) -> int:
        stream = self._response.stream
        if isinstance(stream, BulkStream):
            n = stream.readinto(view)
            if n:
                self._on_bytes(n)
            return n
        if not self._pending:
            if self._chunks is None:
                self._chunks = iter_raw(self._response)
            for chunk in self._chunks:
                if chunk:
                    self._pending = memoryview(chunk)
                    break
            else:
                return 0
            self._on_bytes(len(self._pending))
        k = min(len(view), len(self._pending))
        view[:k] = self._pending[:k]
        self._pending = self._pending[k:]
        return k

    def _read_some(self, view: memoryview) -> int:
        while self._skip:
            scratch = memoryview(bytearray(min(self._skip, _SKIP_BLOCK)))
            n = self._raw(scratch)
            if n == 0:
                return 0
            self._skip -= n
        return self._raw(view)

    def _resume(self, exc: httpx.TransportError) -> None:
        final = isinstance(exc, BoundExceeded)
        if final or self._reopen is None or self._resumes >= self._max_resumes:
            raise self._translate(exc, self._resumes + 1) from exc
        self._resumes += 1
        self._response.close()
        self._chunks = None
        self._pending = memoryview(b"")
        self._response, self._skip = self._reopen(self.offset, self._resumes)

    def close(self) -> None:
        try:
            self._response.close()
        finally:
            super().close()


def read_capped(response: httpx.Response, cap: int, *, what: str) -> bytes:
    """Read a (decoded) body whole, refusing more than ``cap`` bytes.

    A declared ``Content-Length`` over the cap is refused before reading; a body
    that runs past it is refused at the first byte over. The response is closed.
    """
    try:
        declared = response.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > cap:
            raise SizeLimitError(
                f"{what} declares {int(declared)} bytes, over the {cap}-byte limit",
                hint="refused before reading; this is not content modelreg will load into memory",
            )
        out = bytearray()
        bound = current()
        for chunk in response.iter_bytes():
            if isinstance(bound, DocumentDeadline):
                bound.check()
            out += chunk
            if len(out) > cap:
                raise SizeLimitError(
                    f"{what} is over the {cap}-byte limit",
                    hint="refused after reading the first bytes over the limit",
                )
        return bytes(out)
    finally:
        response.close()
