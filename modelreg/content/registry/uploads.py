"""Blob uploads: monolithic or chunked, streamed from the source, resumable.

Strategy (:class:`BlobUpload`):

* ``POST /v2/<name>/blobs/uploads/`` opens a session (retried only when the request
  never reached the server, or on 429).
* Blobs up to :data:`MONOLITHIC_MAX` (64 MiB, or the chunk size when smaller): one
  ``PUT <location>&digest=<d>`` carrying the body.
* Larger blobs: one streamed ``PATCH`` of the whole remainder (``Content-Range:
  start-end``, ``Content-Length``), or ``PATCH`` chunks of ``upload_chunk_size`` for
  registries that cap request bodies, then ``PUT <location>&digest=<d>``.
* The ``Location`` of the last answer is always the next URL (it carries state).
* The body is read from ``source(offset)`` in 4 MiB blocks with ``Content-Length``
  set: memory does not grow with the blob, and every byte handed to the socket is
  counted in ``client.stats.bytes_sent``.

Recovery: when the connection breaks, the source fails to read, or the registry
answers 5xx/429/401/416 mid-upload, the session's state is asked for (``GET
<location>`` -> ``204`` + ``Range: 0-N``) and the upload continues from ``N+1``
with ``source(N+1)``. A session the registry has dropped (404) is replaced by a
new one from byte 0, unless the blob turns out to be complete already. Attempts
without progress are bounded by the retry policy, all attempts by
:data:`MAX_RECOVERIES`. A registry that rejects the digest (``DIGEST_INVALID``)
raises :class:`~modelreg.errors.IntegrityError` and is not retried.

Transfer bounds (:mod:`~modelreg.content.registry.deadlines`): a request carrying
bytes (``PATCH``, ``PUT`` with a body) runs under a throughput floor counted at
each socket write, which after the last byte becomes a deadline for the answer
(``max(document deadline, size / 50 MB/s)`` for the ``PUT``: the registry may
hash the blob first); the body-less final ``PUT`` runs under that deadline alone.
A spent bound raises :class:`~modelreg.errors.TransferTooSlowError` and is not
recovered: the registry that trickled once gets no second window.

Distribution 2.8 quirk: a PATCH cut after some bytes reached the registry leaves
the session unusable (its ``_state`` offset no longer matches the data on disk,
and the registry answers every later request with ``BLOB_UPLOAD_INVALID``), so
on Distribution such an upload restarts from byte 0 in a new session; a cut
between chunks resumes exactly.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Final

import httpx

from modelreg.content.base import BlobSource
from modelreg.content.registry.deadlines import DocumentDeadline, TransferBound
from modelreg.content.registry.errors import sanitize
from modelreg.errors import (
    IntegrityError,
    InvalidDigestError,
    ModelRegError,
    NetworkError,
    NotFoundError,
    RegistryError,
    TransferTooSlowError,
)
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest

if TYPE_CHECKING:
    from modelreg.content.registry.target import RegistryTarget

__all__ = ["MAX_RECOVERIES", "MONOLITHIC_MAX", "BlobUpload", "PendingUpload", "SourceReadError"]

MONOLITHIC_MAX: Final = 64 * 1024 * 1024
_BODY_BLOCK: Final = 1024 * 1024
MAX_RECOVERIES: Final = 20
OCTET_STREAM: Final = "application/octet-stream"
_MIN_THROUGHPUT: Final = 50_000_000  # bytes/s assumed when the registry verifies at PUT
_RANGE_RE: Final = re.compile(r"^\s*(?:bytes[= ])?\s*(\d+)-(\d+)\s*$")
_UPLOAD_CODES: Final = frozenset({"BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"})
_RECOVERABLE_STATUSES: Final = frozenset({401, 408, 416, 429, 500, 502, 503, 504})

_log = logging.getLogger("modelreg.registry")


class SourceReadError(ModelRegError):
    """The local source of a blob failed to open or read."""


class _Complete(Exception):
    """The registry already holds the blob (an answer was lost)."""


def parse_upload_range(value: str | None, *, ambiguous_zero: bool = False) -> int | None:
    """``Range: 0-N`` -> bytes held (N+1); None when absent or malformed.

    Registries answer ``0-0`` both for an empty session and for one holding one
    byte; with ``ambiguous_zero`` that answer reads as 0 (the caller starts clean).
    """
    if not value:
        return None
    match = _RANGE_RE.match(value)
    if match is None or int(match.group(1)) != 0:
        return None
    end = int(match.group(2))
    if end == 0 and ambiguous_zero:
        return 0
    return end + 1


def with_digest(url: httpx.URL, digest: Digest) -> httpx.URL:
    """Append ``digest=`` to an upload URL without re-encoding its opaque state."""
    text = str(url)
    separator = "&" if url.query else "?"
    return httpx.URL(f"{text}{separator}digest={urllib.parse.quote(str(digest), safe='')}")


class BlobUpload:
    """One blob upload to one repository; :meth:`run` returns the bytes sent."""

    def __init__(self, target: RegistryTarget, desc: Descriptor, source: BlobSource) -> None:
        self.target = target
        self.client = target.client
        self.desc = desc
        self.source = source
        self.location: httpx.URL | None = None
        self.offset = 0
        self.sent = 0
        self.sessions = 0
        self.recoveries = 0
        self.chunk_size = self.client.upload_chunk_size
        self._what = f"upload of blob {desc.digest} to {target.name}"

    # ------------------------------------------------------------------ driver
    def run(self) -> int:
        policy = self.client.retry
        stalled = 0
        best = 0
        self._start()
        while True:
            try:
                self._transfer()
                return self.sent
            except _Complete:
                return self.sent
            except ModelRegError as exc:
                if not self._recoverable(exc):
                    self._cancel()
                    raise
                self.recoveries += 1
                stalled += 1
                if stalled >= policy.max_attempts or self.recoveries > MAX_RECOVERIES:
                    self._cancel()
                    raise self._give_up(exc) from exc
                _log.debug("%s: recovering after %s", self._what, exc.message)
                policy.sleep(policy.backoff(stalled))
                try:
                    self._recover()
                except _Complete:
                    return self.sent
                if self.offset > best:
                    best = self.offset
                    stalled = 0

    def _recoverable(self, exc: ModelRegError) -> bool:
        if isinstance(exc, IntegrityError | TransferTooSlowError):
            return False
        if isinstance(exc, SourceReadError | NetworkError):
            return True
        if isinstance(exc, RegistryError):
            if exc.code in _UPLOAD_CODES:
                return True
            return exc.status in _RECOVERABLE_STATUSES
        return False

    def _give_up(self, exc: ModelRegError) -> ModelRegError:
        message = f"the {self._what} failed after {self.recoveries} attempts: {exc.message}"
        if isinstance(exc, RegistryError):
            return type(exc)(message, hint=exc.hint, status=exc.status, code=exc.code)
        return type(exc)(message, hint=exc.hint)

    # ------------------------------------------------------------------ session
    def _start(self) -> None:
        response = self.client.request(
            "POST",
            f"/v2/{self.target.repository}/blobs/uploads/",
            scopes=self.target.push_scopes,
            what=f"start the {self._what}",
            ok=(202,),
            idempotent=False,
            repository=self.target.repository,
        )
        response.close()
        self.location = self._location(response, required=True)
        self.offset = 0
        self.sessions += 1
        minimum = response.headers.get("oci-chunk-min-length", "")
        if self.chunk_size is not None and minimum.isdigit():
            self.chunk_size = max(self.chunk_size, int(minimum))

    def _location(self, response: httpx.Response, *, required: bool) -> httpx.URL | None:
        value = response.headers.get("location")
        if not value:
            if required:
                raise RegistryError(
                    f"{self.client.host} answered a request for the {self._what} without a "
                    "Location header",
                    hint="the registry does not follow the distribution spec for uploads",
                    status=response.status_code,
                )
            return self.location
        return response.request.url.join(value)

    def _cancel(self) -> None:
        if self.location is not None:
            self.target.cancel_upload(str(self.location))

    def _recover(self) -> None:
        """Ask the registry how much it holds; continue there, or in a new session."""
        held = self._status()
        if held is None:
            if self.target.exists(self.desc):
                raise _Complete
            self._start()
            return
        if held == 0 or held > self.desc.size:
            # "Range: 0-0" cannot tell 0 bytes from 1: start clean.
            self._cancel()
            self._start()
            return
        self.offset = held

    def _status(self) -> int | None:
        assert self.location is not None
        try:
            response = self.client.request(
                "GET",
                self.location,
                scopes=self.target.push_scopes,
                what=f"check the progress of the {self._what}",
                ok=(200, 204),
                idempotent=True,
                repository=self.target.repository,
            )
        except NotFoundError:
            return None
        except RegistryError as exc:
            if exc.code in _UPLOAD_CODES or exc.status == 404:
                return None
            raise
        response.close()
        self.location = self._location(response, required=False)
        held = parse_upload_range(response.headers.get("range"), ambiguous_zero=True)
        return 0 if held is None else held

    # ------------------------------------------------------------------ transfer
    def _transfer(self) -> None:
        size = self.desc.size
        chunk = self.chunk_size
        monolithic_limit = min(MONOLITHIC_MAX, chunk) if chunk else MONOLITHIC_MAX
        if self.offset == 0 and size <= monolithic_limit:
            self._put(with_body=True)
            return
        while self.offset < size:
            end = min(size, self.offset + chunk) if chunk else size
            self._patch(self.offset, end)
        self._put(with_body=False)

    def _patch(self, start: int, end: int) -> None:
        assert self.location is not None
        what = f"send bytes {start}-{end - 1} of the {self._what}"
        response = self.client.request(
            "PATCH",
            self.location,
            bound=self.client.floor(what, self.location, expected=end - start),
            scopes=self.target.push_scopes,
            what=what,
            headers={
                "Content-Type": OCTET_STREAM,
                "Content-Range": f"{start}-{end - 1}",
                "Content-Length": str(end - start),
            },
            content=self._body(start, end),
            ok=(202, 204),
            idempotent=False,
            repository=self.target.repository,
        )
        response.close()
        self.location = self._location(response, required=False)
        held = parse_upload_range(response.headers.get("range"))
        if held is None:
            held = end
        if held > end:
            raise RegistryError(
                f"{self.client.host} claims {held} bytes of the {self._what} after receiving {end}",
                hint="the registry's upload state is inconsistent; try again",
                status=response.status_code,
            )
        self.offset = held

    def _put(self, *, with_body: bool) -> None:
        assert self.location is not None
        size = self.desc.size
        headers = {}
        content = None
        if with_body:
            headers = {"Content-Type": OCTET_STREAM, "Content-Length": str(size - self.offset)}
            content = self._body(self.offset, size)
        read_timeout = max(self.client.timeout, size / _MIN_THROUGHPUT)
        answer_within = max(self.client.document_deadline, size / _MIN_THROUGHPUT)
        url = with_digest(self.location, self.desc.digest)
        what = f"complete the {self._what}"
        bound: TransferBound
        if with_body:
            bound = self.client.floor(what, url, expected=size - self.offset, then=answer_within)
        else:
            bound = DocumentDeadline(answer_within, self.client.host, what, url)
        response = self.client.request(
            "PUT",
            url,
            bound=bound,
            scopes=self.target.push_scopes,
            what=f"complete the {self._what}",
            headers=headers,
            content=content,
            ok=(200, 201, 204),
            idempotent=False,
            timeout=httpx.Timeout(self.client.timeout, read=read_timeout),
            repository=self.target.repository,
        )
        response.close()
        stored = response.headers.get("docker-content-digest")
        if stored:
            try:
                stored_digest: Digest | None = Digest.parse(stored.strip())
            except InvalidDigestError:
                stored_digest = None
            if stored_digest is not None and stored_digest != self.desc.digest:
                raise IntegrityError(
                    f"{self.client.host} stored the blob uploaded as {self.desc.digest} under "
                    f"{stored_digest} in {self.target.name}",
                    hint="the source changed during the upload; re-create it and retry",
                )
        self.offset = size

    def _body(self, start: int, end: int) -> Generator[bytes, None, None]:
        """The source's bytes ``[start, end)`` in 1 MiB blocks, counted as sent.

        Not larger: every upload in flight holds a block or two, and blocks of 4 MiB,
        once freed, move glibc's mmap threshold so later ones fragment the heap (a push
        of 20,000 small files peaked 25 MB higher; bench/RESULTS.md, issue 18)."""
        try:
            stream = self.source(start)
        except OSError as exc:
            raise self._source_error(exc, start) from exc
        try:
            position = start
            while position < end:
                try:
                    block = stream.read(min(_BODY_BLOCK, end - position))
                except OSError as exc:
                    raise self._source_error(exc, position) from exc
                if not block:
                    raise IntegrityError(
                        f"the source of blob {self.desc.digest} ended at byte {position}; "
                        f"its descriptor declares {self.desc.size} bytes",
                        hint="the file changed after it was packed; pack it again",
                    )
                position += len(block)
                self.sent += len(block)
                self.client.stats.add_sent(len(block))
                yield block
        finally:
            stream.close()

    def _source_error(self, exc: OSError, position: int) -> SourceReadError:
        reason = sanitize(exc.strerror or str(exc) or type(exc).__name__)
        return SourceReadError(
            f"cannot read the source of blob {self.desc.digest} at byte {position}: {reason}",
            hint="check that the file is still there and readable",
        )


class _AlreadyThere(Exception):
    """Raised inside a pending upload's body when the registry turns out to hold the blob."""


class PendingUpload(BlobUpload):
    """An upload that starts before its digest is known.

    A fresh push of a big file otherwise reads it twice: once to hash it, once to
    send it. Here the bytes stream to the registry (chunked session: ``POST``,
    ``PATCH``...) while another thread hashes the same file a little ahead (the
    uploader then reads from the page cache); the final ``PUT ?digest=`` waits for
    that digest, and the registry checks the bytes against it. As soon as the
    digest is known the blob's existence is checked: if the registry already has
    it, or it can be mounted from one of the repositories ``mount_from(desc)``
    names, no further byte is sent, the session is cancelled and the push counts
    as skipped (``existed``) or ``mounted``. A digest future that fails stops the
    upload the same way and its exception is raised.
    """

    def __init__(
        self,
        target: RegistryTarget,
        media_type: str,
        size: int,
        source: BlobSource,
        digest: Future[Digest],
        mount_from: Callable[[Descriptor], Iterable[str]] | None = None,
    ) -> None:
        placeholder = Descriptor(media_type, Digest("sha256", "0" * 64), size)
        super().__init__(target, placeholder, source)
        self._future = digest
        self._mount_from = mount_from
        self._known = False
        self.existed = False
        self.mounted = False
        self._what = f"upload of a {size}-byte blob to {target.name}"

    def _learn_digest(self, wait: bool) -> bool:
        if self._known:
            return True
        if not wait and not self._future.done():
            return False
        self.desc = Descriptor(self.desc.media_type, self._future.result(), self.desc.size)
        self._what = f"upload blob {self.desc.digest} to {self.target.name}"
        self._known = True
        if self.target.exists(self.desc):
            self.existed = True
            raise _AlreadyThere
        if self._mount_from is not None:
            for repository in self._mount_from(self.desc):
                if self.target.mount(self.desc, repository):
                    self.mounted = True
                    raise _AlreadyThere
        return True

    def _transfer(self) -> None:
        # Always a session with PATCH: a monolithic PUT would need the digest first.
        while self.offset < self.desc.size:
            end = (
                min(self.desc.size, self.offset + self.chunk_size)
                if self.chunk_size
                else (self.desc.size)
            )
            self._patch(self.offset, end)
        self._learn_digest(wait=True)
        self._put(with_body=False)

    def _recover(self) -> None:
        self._learn_digest(wait=True)
        super()._recover()

    def _body(self, start: int, end: int) -> Generator[bytes, None, None]:
        # Look for the digest before taking each block: a block taken is counted as
        # sent, so it must then go out.
        blocks = super()._body(start, end)
        try:
            while True:
                self._learn_digest(wait=False)
                block = next(blocks, None)
                if block is None:
                    return
                yield block
        finally:
            blocks.close()

    def _cancel(self) -> None:
        super()._cancel()
        self.location = None  # once is enough

    def run(self) -> int:
        try:
            return super().run()
        except _AlreadyThere:
            self._cancel()
            return self.sent
        except BaseException:
            self._cancel()  # e.g. the digest future failed during a recovery
            raise
