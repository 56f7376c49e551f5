"""The blob-transfer engine: every blob that goes into a target goes through here.

One :class:`Transfer` per operation (a push, a copy) and destination. It owns
the three things that used to be spread over two engines and patched together
afterwards: the one pool that bounds how many blobs are in flight, the progress
events, and the outcome of every blob (from which :meth:`Transfer.result` builds
the :class:`CopyResult`). A blob goes through named steps::

    claim ─ first time this digest is seen here? (else the first claim reports it)
    exists ─ the destination has it: "skipped"
    mount ─ a repository of the same registry has it: "mounted" (no bytes sent)
    push ─ stream it: "start", "advance"…, "done"
    record ─ remember the outcome once per digest (two uploads of one digest merge)

Who feeds it:

* push (:mod:`modelreg.client`): blobs are sent while the directory is still being
  hashed, as soon as each digest is known; a big file whose digest is not known yet
  streams through :meth:`Transfer.push_pending` while it is hashed. The graph walk
  of :mod:`modelreg.copy` then runs on the same engine: what was sent early is
  claimed already and is neither checked nor counted twice.
* copy (``modelreg cp``, :func:`modelreg.copy.copy_graph`): the graph walk submits
  each manifest's blobs to :meth:`Transfer.send`.

A blob read from a source whose mirror served wrong bytes is sent again from byte 0
(:func:`~modelreg.content.refetch.refetching`): the source's reader has distrusted that
mirror, so the next read comes from the next source; the upload that read the wrong
bytes was never committed (the reader fails at the blob's end, before the last request),
and the other blobs in flight are not disturbed.

Designed to take next:

* lazy prefetch: a Transfer whose destination is the local store's target and whose
  source is the remote target; the engine's claim/exists steps then replace the
  lazy engine's own in-flight table for whole blobs, and its pool bounds prefetch
  and demand reads together (one limit instead of two pools).
* mirrors (hosts.toml): a mirror sync is a graph walk into a Transfer whose
  destination is the mirror's target; a pull through mirrors is a Transfer per
  answering host with the same result type, so bytes per host are counted in one
  place.

A blob "existing" at the destination during an early push is recorded without an
event (``announce=False``): the graph walk reports it as "skipped" under the name
the manifest gives it, which is what the progress display shows for every
skipped blob.

Capabilities are found by type (:class:`~modelreg.content.base.Mounter`,
:class:`~modelreg.content.base.PendingPusher`), never by probing attributes.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

from modelreg.content.base import (
    BlobSource,
    Mounter,
    PendingPusher,
    PushResult,
    ReadOnlyTarget,
    Target,
)
from modelreg.content.refetch import refetching
from modelreg.errors import UnsupportedError
from modelreg.events import Event, EventKind, ProgressCallback, emit
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest

__all__ = ["READ_BUFFER", "CopyResult", "MountHint", "Transfer"]

MountHint = Callable[[Descriptor], Iterable[str]]
"""Given a blob, repositories of the destination registry that may already hold it."""

READ_BUFFER = 64 * 1024
"""Buffer of the counting reader: reads of whole blocks (4 MiB, what uploads ask
for) pass it by; it only gathers small reads, so it stays small per stream."""


@dataclass
class CopyResult:
    """What a copy did. Byte counts are blob bytes (manifests are not counted)."""

    root: Descriptor
    bytes_sent: int = 0
    bytes_skipped: int = 0
    bytes_mounted: int = 0
    blobs_sent: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    manifests: list[Descriptor] = field(default_factory=list)
    referrers: list[Descriptor] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    """Digests of every blob the destination now holds (sent, skipped or mounted)."""

    def to_dict(self) -> dict[str, object]:
        return {
            "digest": str(self.root.digest),
            "mediaType": self.root.media_type,
            "size": self.root.size,
            "bytesSent": self.bytes_sent,
            "bytesSkipped": self.bytes_skipped,
            "bytesMounted": self.bytes_mounted,
            "blobsSent": self.blobs_sent,
            "blobsSkipped": self.blobs_skipped,
            "blobsMounted": self.blobs_mounted,
            "referrers": [str(r.digest) for r in self.referrers],
        }


def merged(a: PushResult, b: PushResult) -> PushResult:
    """One blob uploaded twice (identical files): every byte counts; sent if either sent it."""
    sent = a.sent + b.sent
    if not (a.existed or a.mounted) or not (b.existed or b.mounted):
        return PushResult(sent=sent)
    mounted = a.mounted or b.mounted
    return PushResult(sent=sent, mounted=mounted, existed=not mounted)


@dataclass(frozen=True, slots=True)
class _Outcome:
    desc: Descriptor
    pushed: PushResult
    announced: bool
    """Whether a progress event already told what happened to the blob."""


class _Counting(io.RawIOBase):
    """A stream that reports how many bytes were read from it."""

    def __init__(self, stream: BinaryIO, on_bytes: Callable[[int], None]) -> None:
        super().__init__()
        self._stream = stream
        self._on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._stream.readinto(buffer) or 0  # type: ignore[attr-defined]
        if n:
            self._on_bytes(n)
        return n

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            super().close()


@dataclass(frozen=True, slots=True)
class _Observed:
    """A :data:`BlobSource` whose streams report the bytes read as "advance" events."""

    _source: BlobSource
    _progress: ProgressCallback
    _name: str
    _desc: Descriptor | None
    _total: int

    def __call__(self, offset: int) -> BinaryIO:
        raw = _Counting(self._source(offset), self._advance)
        return io.BufferedReader(raw, READ_BUFFER)

    def _advance(self, n: int) -> None:
        self._progress(Event("advance", self._name, self._desc, n=n, total=self._total))


class Transfer:
    """Moves blobs into ``dst``: one pool, one set of events, one result.

    ``src`` is where the blobs come from when it is a target (a copy): a repository
    of the destination's registry is then the first place to mount from.
    ``mount_hint`` names other repositories of that registry that may hold a blob.
    Thread-safe; close it (or use ``with``) to stop its pool.
    """

    def __init__(
        self,
        dst: Target,
        *,
        src: ReadOnlyTarget | None = None,
        concurrency: int = 4,
        progress: ProgressCallback | None = None,
        mount_hint: MountHint | None = None,
    ) -> None:
        self.dst = dst
        self.src = src
        self.progress = progress
        self.mount_hint = mount_hint
        self.concurrency = max(1, concurrency)
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="blob")
        self._lock = threading.Lock()
        self._claimed: set[str] = set()
        self._outcomes: dict[str, _Outcome] = {}
        self._futures: list[Future[None]] = []
        self._manifests: list[Descriptor] = []
        self._referrers: list[Descriptor] = []

    def __enter__(self) -> Transfer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the pool
    def submit(self, step: Callable[..., None], *args: object) -> Future[None]:
        """Run ``step(*args)`` on the engine's pool (the one concurrency limit)."""
        future = self._pool.submit(step, *args)
        with self._lock:
            self._futures.append(future)
        return future

    def raise_failure(self) -> None:
        """Raise the first failure among the steps already finished (fail fast)."""
        with self._lock:
            futures = list(self._futures)
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                future.result()

    def wait(self, futures: Sequence[Future[None]] | None = None) -> None:
        """Wait for ``futures`` (default: every step submitted); the first failure is raised."""
        if futures is None:
            with self._lock:
                futures = list(self._futures)
        for future in futures:
            future.result()

    def close(self) -> None:
        """Stop the pool: steps not started are cancelled, running ones finish."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ the steps
    def claim(self, desc: Descriptor) -> bool:
        """True the first time ``desc``'s digest is claimed: that caller moves it."""
        key = str(desc.digest)
        with self._lock:
            if key in self._claimed:
                return False
            self._claimed.add(key)
            return True

    def exists(self, desc: Descriptor) -> bool:
        return self.dst.exists(desc)

    def mount_candidates(self, desc: Descriptor) -> list[str]:
        """Repositories of the destination's registry to mount ``desc`` from, in order."""
        if not isinstance(self.dst, Mounter):
            return []
        out: list[str] = []
        if self.src is not None:
            same_registry = self.dst.mountable_from(self.src)
            if same_registry is not None:
                out.append(same_registry)
        if self.mount_hint is not None:
            out.extend(r for r in self.mount_hint(desc) if r not in out)
        return out

    def mount(self, desc: Descriptor, name: str) -> bool:
        """Link ``desc`` from another repository of the registry; records it when done."""
        if not isinstance(self.dst, Mounter):
            return False
        for repository in self.mount_candidates(desc):
            if self.dst.mount(desc, repository):
                self.record(desc, PushResult(mounted=True))
                emit(self.progress, Event("mounted", name, desc, total=desc.size))
                return True
        return False

    def push(self, desc: Descriptor, source: BlobSource, name: str) -> PushResult:
        """Stream ``desc`` from ``source`` into the destination; records it when done."""
        emit(self.progress, Event("start", name, desc, total=desc.size))
        observed = self._observed(source, name, desc, desc.size)
        # a mirror of the source that served wrong bytes is distrusted by its reader,
        # and the upload, never committed, is made again from byte 0 from the next source
        pushed = refetching(
            lambda: self.dst.push(desc, observed),
            what=f"{name} ({desc.digest})",
            progress=self.progress,
        )
        self.record(desc, pushed)
        emit(self.progress, Event("done", name, desc, total=desc.size))
        return pushed

    def push_pending(
        self, media_type: str, size: int, source: BlobSource, digest: Future[Digest], name: str
    ) -> Descriptor:
        """Stream a blob whose digest is still being computed (``digest`` completes it).

        The destination checks for the blob (or mounts it) once the digest is known
        and verifies the bytes against it; see :class:`~modelreg.content.base.PendingPusher`.
        """
        if not isinstance(self.dst, PendingPusher):
            raise UnsupportedError(
                f"{self.dst.name} cannot take a blob before its digest is known",
                hint="send it once hashed (this is a bug in the caller)",
            )
        emit(self.progress, Event("start", name, total=size))
        observed = self._observed(source, name, None, size)
        desc, pushed = self.dst.push_pending(media_type, size, observed, digest, self.mount_hint)
        self.record(desc, pushed)
        kind: EventKind = "mounted" if pushed.mounted else "skipped" if pushed.existed else "done"
        emit(self.progress, Event(kind, name, total=size))
        return desc

    def record(self, desc: Descriptor, pushed: PushResult, *, announce: bool = True) -> None:
        """Remember what happened to ``desc`` (merged with an earlier upload of it)."""
        key = str(desc.digest)
        with self._lock:
            self._claimed.add(key)
            prior = self._outcomes.get(key)
            if prior is None:
                self._outcomes[key] = _Outcome(desc, pushed, announce)
            else:
                outcome = merged(prior.pushed, pushed)
                self._outcomes[key] = _Outcome(desc, outcome, prior.announced or announce)

    def record_manifest(self, desc: Descriptor, *, referrer: bool = False) -> None:
        with self._lock:
            (self._referrers if referrer else self._manifests).append(desc)

    # ------------------------------------------------------------------ one blob
    def send(
        self, desc: Descriptor, source: BlobSource, name: str, *, announce_existing: bool = True
    ) -> None:
        """Every step for one blob: claim, exists, mount, push, record.

        A blob claimed before is left to its first claimant; if that one found it
        present without saying so, it is reported "skipped" now, under ``name``.
        ``announce_existing=False`` records a present blob silently (an early push:
        the graph walk reports it under the manifest's name).
        """
        if not self.claim(desc):
            if announce_existing:
                self._announce_skip(desc, name)
            return
        if self.exists(desc):
            self.record(desc, PushResult(existed=True), announce=announce_existing)
            if announce_existing:
                emit(self.progress, Event("skipped", name, desc, total=desc.size))
            return
        if self.mount(desc, name):
            return
        self.push(desc, source, name)

    def _announce_skip(self, desc: Descriptor, name: str) -> None:
        key = str(desc.digest)
        with self._lock:
            outcome = self._outcomes.get(key)
            if outcome is None or outcome.announced:
                return
            self._outcomes[key] = _Outcome(outcome.desc, outcome.pushed, True)
        emit(self.progress, Event("skipped", name, desc, total=desc.size))

    def _observed(
        self, source: BlobSource, name: str, desc: Descriptor | None, total: int
    ) -> BlobSource:
        if self.progress is None:
            return source
        return _Observed(source, self.progress, name, desc, total)

    # ------------------------------------------------------------------ the result
    def result(self, root: Descriptor) -> CopyResult:
        """What this engine did, as the :class:`CopyResult` of the graph rooted at ``root``."""
        result = CopyResult(root=root)
        with self._lock:
            outcomes = list(self._outcomes.values())
            result.manifests.extend(self._manifests)
            result.referrers.extend(self._referrers)
        for outcome in outcomes:
            _count(result, outcome.desc, outcome.pushed)
        return result


def _count(result: CopyResult, desc: Descriptor, pushed: PushResult) -> None:
    result.blobs.append(str(desc.digest))
    result.bytes_sent += pushed.sent  # also bytes spent before finding the blob there
    if pushed.mounted:
        result.bytes_mounted += desc.size
        result.blobs_mounted += 1
    elif pushed.existed:
        result.bytes_skipped += desc.size
        result.blobs_skipped += 1
    else:
        result.blobs_sent += 1
