"""The storage protocol every backend implements, and the one verifying reader.

Backends: :mod:`modelreg.content.registry` (remote OCI registry),
:mod:`modelreg.content.layout` (local OCI image layout: the cache and the
embedded default store) and :mod:`modelreg.content.memory` (tests).

Every byte read from a backend goes through :class:`VerifyingReader`, which
checks the size and digest of the descriptor it was opened for: a stream that
ends early, runs long or hashes differently raises :class:`IntegrityError` at the
read that proves it, so a consumer that reads to EOF before committing its
output never commits unverified bytes.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import BinaryIO, Protocol, runtime_checkable

from modelreg.errors import IntegrityError, SizeLimitError
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest, Hasher

__all__ = [
    "CHUNK",
    "BlobSource",
    "ManifestFetcher",
    "Mounter",
    "PendingPusher",
    "PushResult",
    "RangeBody",
    "RangeReader",
    "RangeStreamer",
    "ReadOnlyTarget",
    "ReadsInto",
    "Target",
    "VerifyingReader",
    "bytes_source",
    "fetch_bytes",
    "file_source",
    "iter_chunks",
    "read_into",
]

CHUNK = 4 * 1024 * 1024
"""Block size for streaming blobs: large enough to amortise per-call cost."""

BlobSource = Callable[[int], BinaryIO]
"""Opens a blob's content positioned at the given byte offset (for resumable uploads)."""


class VerifyingReader(io.RawIOBase):
    """A read-only stream that checks size and digest against a descriptor.

    ``read`` raises :class:`IntegrityError` as soon as more bytes arrive than the
    descriptor's size, and at EOF when fewer arrived or the digest differs.
    ``verified`` is True only after EOF was reached and everything matched.
    """

    def __init__(
        self, stream: BinaryIO | io.RawIOBase, desc: Descriptor, *, what: str = ""
    ) -> None:
        super().__init__()
        self._stream = stream
        self._desc = desc
        self._hasher = Hasher(desc.digest.algorithm)
        self._what = what or f"blob {desc.digest}"
        self.verified = False

    @property
    def descriptor(self) -> Descriptor:
        return self._desc

    @property
    def bytes_read(self) -> int:
        return self._hasher.size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        remaining = self._desc.size - self._hasher.size
        # Ask for one byte more than expected so that trailing data is detected.
        want = min(len(view), remaining + 1)
        n = self._stream.readinto(view[:want]) if want else 0  # type: ignore[union-attr]
        if n is None:
            n = 0
        if n:
            self._hasher.update(view[:n])
            if self._hasher.size > self._desc.size:
                raise IntegrityError(
                    f"{self._what}: more bytes than the {self._desc.size} its descriptor declares",
                    hint="the source is corrupt or serves different content; nothing was kept",
                )
            return n
        if len(view) == 0:
            return 0
        self._finish()
        return 0

    def _finish(self) -> None:
        if self.verified:
            return
        if self._hasher.size != self._desc.size:
            raise IntegrityError(
                f"{self._what}: got {self._hasher.size} bytes, its descriptor declares "
                f"{self._desc.size}",
                hint="the transfer was cut short or the source is corrupt; nothing was kept",
            )
        actual = self._hasher.digest()
        if actual != self._desc.digest:
            raise IntegrityError(
                f"{self._what}: content hashes to {actual}, expected {self._desc.digest}",
                hint="the source serves tampered or corrupt bytes; nothing was kept",
            )
        self.verified = True

    def read_to_end(self) -> None:
        """Drain the stream, verifying; use when only verification is wanted."""
        buf = bytearray(CHUNK)
        while self.readinto(buf):
            pass

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            super().close()


class ReadsInto(Protocol):
    """A stream that reads into a caller's buffer (a raw file, a verifying reader)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


def read_into(stream: ReadsInto, buffer: bytearray | memoryview) -> int:
    """Read into ``buffer`` until it is full or the stream ends; the bytes read (a raw
    stream may return fewer bytes than asked at any call, not only at its end)."""
    view = memoryview(buffer)
    total = 0
    while total < len(view):
        n = stream.readinto(view[total:])
        if not n:
            break
        total += n
    return total


def iter_chunks(stream: BinaryIO | io.RawIOBase, size: int = CHUNK) -> Iterator[bytes]:
    """Yield a stream's content in blocks (reusing nothing: each block is new bytes)."""
    while True:
        block = stream.read(size)
        if not block:
            return
        yield bytes(block)


def fetch_bytes(target: ReadOnlyTarget, desc: Descriptor, *, limit: int, what: str = "") -> bytes:
    """Fetch a small blob (manifest, config, bundle) whole, refusing it above ``limit``."""
    label = what or f"blob {desc.digest}"
    if desc.size > limit:
        raise SizeLimitError(
            f"{label} declares {desc.size} bytes, over the {limit}-byte limit for its kind",
            hint="refused before reading; this is not content modelreg will load into memory",
        )
    with target.fetch(desc) as reader:
        data = reader.read(desc.size + 1)
        # drain to EOF so the digest check runs
        while True:
            more = reader.read(CHUNK)
            if not more:
                break
            data += more
    return bytes(data)


@dataclass(frozen=True, slots=True)
class PushResult:
    """What a blob push did: ``sent`` bytes, or skipped because ``existed``/``mounted``."""

    sent: int = 0
    existed: bool = False
    mounted: bool = False


@runtime_checkable
class ReadOnlyTarget(Protocol):
    """Where content can be read from. A target is bound to one repository."""

    @property
    def name(self) -> str:
        """Where this is, for messages: ``host/repository``, a store path, ``memory``."""
        ...

    def fetch(self, desc: Descriptor) -> VerifyingReader:
        """Open a blob or manifest for reading; the stream verifies as it is read."""
        ...

    def fetch_range(self, desc: Descriptor, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset`` (unverified: callers check with a chunk index)."""
        ...

    def exists(self, desc: Descriptor) -> bool: ...

    def resolve(self, reference: str) -> Descriptor:
        """Tag or digest to the manifest's descriptor. Raises NotFoundError."""
        ...

    def referrers(self, desc: Descriptor, artifact_type: str | None = None) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``desc`` (optionally of one artifact type)."""
        ...

    def tags(self) -> Iterator[str]: ...


@runtime_checkable
class Target(ReadOnlyTarget, Protocol):
    """Where content can also be written."""

    def push(self, desc: Descriptor, source: BlobSource) -> PushResult:
        """Store a blob. ``source(offset)`` opens the content at ``offset``; the target
        verifies size and digest and stores nothing under the digest if they differ."""
        ...

    def push_manifest(self, desc: Descriptor, data: bytes, tag: str | None = None) -> None:
        """Store a manifest or index (bytes must hash to ``desc``), optionally tagging it."""
        ...

    def tag(self, desc: Descriptor, tag: str) -> None: ...


# Optional capabilities. A target has one when it implements the methods; code that
# can use one asks ``isinstance(target, Mounter)`` and mypy narrows the type from there.
# Why runtime-checkable Protocols rather than a ``capabilities()`` accessor: they cost the
# targets nothing (structural: no registration, no method returning optional objects to
# keep in step), a test double gains a capability by defining the method, and the check
# reads like oras-go's type assertion on ``registry.Mounter``. What ``isinstance`` checks
# at run time is only that the members exist; their signatures are mypy's to check, which
# it does wherever a target is used through the narrowed type (and the capability tests
# assign each real target to each protocol it claims).


@runtime_checkable
class Mounter(Protocol):
    """A target that can link a blob from another repository of its registry (no bytes)."""

    @property
    def name(self) -> str: ...

    def mount(self, desc: Descriptor, from_repo: str) -> bool:
        """True when the blob was linked from ``from_repo``; False when it could not be."""
        ...

    def mountable_from(self, source: ReadOnlyTarget) -> str | None:
        """The repository of ``source`` to mount from: ``source`` is another repository
        of this target's registry (reached through the same client), else None."""
        ...


@runtime_checkable
class PendingPusher(Protocol):
    """A target that takes a blob while its digest is still being computed elsewhere."""

    @property
    def name(self) -> str: ...

    def push_pending(
        self,
        media_type: str,
        size: int,
        source: BlobSource,
        digest: Future[Digest],
        mount_from: Callable[[Descriptor], Iterable[str]] | None = None,
    ) -> tuple[Descriptor, PushResult]:
        """Stream ``size`` bytes from ``source``; once ``digest`` completes, check for the
        blob (or mount it from a repository ``mount_from`` names) and verify the bytes
        against it. Returns the blob's descriptor and what was done."""
        ...


@runtime_checkable
class RangeReader(Protocol):
    """A target whose range reads go to a server that may ignore ``Range``.

    ``fetch_range`` is correct whatever the server does (a whole answer is read
    through and sliced), but costs the whole blob then: ``supports_range`` is what
    was learned, None before any ranged read, False once the server answered one
    whole. It is remembered by the connection to that host (the registry client),
    so every repository reached through it knows, and nothing outlives the client.
    """

    @property
    def name(self) -> str: ...

    @property
    def supports_range(self) -> bool | None: ...

    def fetch_range(self, desc: Descriptor, offset: int, length: int) -> bytes: ...


class RangeBody(Protocol):
    """A ranged response body read at its caller's pace (see :class:`RangeStreamer`)."""

    def readinto(self, buffer: bytearray | memoryview, /) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class RangeStreamer(Protocol):
    """A target that hands out one long ranged body, read piece by piece as needed.

    What a sequential reader uses instead of a request per read (the lazy engine's
    sequential streams): ``open_range`` sends one request and returns its body,
    unverified; ``readinto`` fills as much of a buffer as the body allows (0 at its
    end), ``close`` drops it (its connection is reused only if it was read to the
    end). ``streams_ranges`` is False where one body for many reads is wrong: a
    target that picks a source (a mirror) per request and distrusts one per failed
    check needs each read to be a request of its own.
    """

    @property
    def streams_ranges(self) -> bool: ...

    def open_range(self, desc: Descriptor, offset: int, length: int) -> RangeBody: ...


@runtime_checkable
class ManifestFetcher(Protocol):
    """A target that resolves a tag and reads the manifest it names in one request.

    For callers that need the manifest anyway (``inspect``, ``diff``): one GET instead
    of :meth:`ReadOnlyTarget.resolve`'s HEAD and then a GET by digest. Resolving alone
    stays a HEAD, because registries such as Docker Hub count manifest GETs against
    rate limits and HEADs not. The bytes are verified against the digest they are
    fetched by, or else the one the registry declares.
    """

    @property
    def name(self) -> str: ...

    def fetch_manifest(self, reference: str) -> tuple[Descriptor, bytes]: ...


def bytes_source(data: bytes) -> BlobSource:
    """A BlobSource over in-memory bytes."""

    def open_at(offset: int) -> BinaryIO:
        stream = io.BytesIO(data)
        stream.seek(offset)
        return stream

    return open_at


def file_source(path: str) -> BlobSource:
    """A BlobSource over a file on disk."""

    def open_at(offset: int) -> BinaryIO:
        stream = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
        stream.seek(offset)
        return stream

    return open_at


def consume(chunks: Iterable[bytes]) -> int:
    return sum(len(c) for c in chunks)
