"""Copy a manifest graph from one target to another.

A graph walk in the spirit of oras-go's ``copy``: children before parents (blobs,
then the manifest that names them, then the index), skipping what the
destination already has, mounting across repositories of one registry, several
blobs in flight at once, and each blob streamed in bounded blocks whatever its
size. With ``recursive=True`` the referrers of every copied manifest
(signatures, attestations) follow it.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

from modelreg.content.base import CHUNK, PushResult, ReadOnlyTarget, Target, fetch_bytes
from modelreg.events import Event, ProgressCallback, emit
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import MAX_MANIFEST_BYTES, Index, Manifest, parse_manifest_or_index

__all__ = ["CopyResult", "MountHint", "copy_graph", "fetch_node"]

MAX_REFERRER_DEPTH = 4

MountHint = Callable[[Descriptor], Iterable[str]]
"""Given a blob, repositories of the destination registry that may already hold it."""


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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, desc: Descriptor, result: PushResult) -> None:
        with self._lock:
            self.blobs.append(str(desc.digest))
            self.bytes_sent += result.sent  # also bytes spent before finding the blob there
            if result.mounted:
                self.bytes_mounted += desc.size
                self.blobs_mounted += 1
            elif result.existed:
                self.bytes_skipped += desc.size
                self.blobs_skipped += 1
            else:
                self.blobs_sent += 1

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


class _Counting(io.RawIOBase):
    """Wraps a stream; reports bytes read as ``advance`` events."""

    def __init__(self, stream: BinaryIO | io.RawIOBase, on_bytes: Callable[[int], None]) -> None:
        super().__init__()
        self._stream = stream
        self._on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._stream.readinto(buffer)  # type: ignore[union-attr]
        if n:
            self._on_bytes(n)
        return n or 0

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            super().close()


def _name(desc: Descriptor) -> str:
    return (
        desc.annotations.get(mt.ANN_TITLE)
        or desc.annotations.get(mt.ANN_FILEPATH)
        or (desc.digest.short)
    )


def fetch_node(target: ReadOnlyTarget, desc: Descriptor) -> Manifest | Index:
    data = fetch_bytes(target, desc, limit=MAX_MANIFEST_BYTES, what=f"manifest {desc.digest}")
    return parse_manifest_or_index(data, desc.media_type, f"manifest {desc.digest}")


class _Copier:
    def __init__(
        self,
        src: ReadOnlyTarget,
        dst: Target,
        *,
        concurrency: int,
        progress: ProgressCallback | None,
        mount_hint: MountHint | None,
        result: CopyResult,
    ) -> None:
        self.src = src
        self.dst = dst
        self.progress = progress
        self.mount_hint = mount_hint
        self.result = result
        self.pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="copy")
        self._done: set[str] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _mount_candidates(self, desc: Descriptor) -> list[str]:
        out: list[str] = []
        same_registry = getattr(self.src, "client", None) is not None and getattr(
            self.src, "client", None
        ) is getattr(self.dst, "client", object())
        src_repo = getattr(self.src, "repository", None)
        if same_registry and src_repo and src_repo != getattr(self.dst, "repository", None):
            out.append(src_repo)
        if self.mount_hint is not None:
            out.extend(r for r in self.mount_hint(desc) if r not in out)
        return out

    def copy_blob(self, desc: Descriptor) -> None:
        name = _name(desc)
        if self.dst.exists(desc):
            self.result.record(desc, PushResult(existed=True))
            emit(self.progress, Event("skipped", name, desc, total=desc.size))
            return
        mount = getattr(self.dst, "mount", None)
        if mount is not None:
            for repo in self._mount_candidates(desc):
                if mount(desc, repo):
                    self.result.record(desc, PushResult(mounted=True))
                    emit(self.progress, Event("mounted", name, desc, total=desc.size))
                    return
        emit(self.progress, Event("start", name, desc, total=desc.size))

        def advance(n: int) -> None:
            emit(self.progress, Event("advance", name, desc, n=n, total=desc.size))

        def open_at(offset: int) -> BinaryIO:
            reader = self.src.fetch(desc)
            skip = offset
            while skip:
                block = reader.read(min(skip, CHUNK))
                if not block:
                    break
                skip -= len(block)
            return io.BufferedReader(_Counting(reader, advance), buffer_size=CHUNK)

        pushed = self.dst.push(desc, open_at)
        self.result.record(desc, pushed)
        emit(self.progress, Event("done", name, desc, total=desc.size))

    def copy_node(self, desc: Descriptor, tag: str | None = None) -> Manifest | Index:
        node = fetch_node(self.src, desc)
        if isinstance(node, Index):
            # Children one after another here; their blobs run in the pool. (Submitting
            # the children to the same pool could deadlock it on nested waits.)
            for child in node.manifests:
                self.copy_node(child)
        else:
            blobs = [node.config, *node.layers]
            futures = [self.pool.submit(self._copy_once, b) for b in blobs]
            for f in futures:
                f.result()
        self.dst.push_manifest(desc, node.raw, tag)
        with self.result._lock:
            self.result.manifests.append(desc)
        return node

    def _copy_once(self, desc: Descriptor) -> None:
        key = str(desc.digest)
        with self._lock:
            if key in self._done:
                return
            self._done.add(key)
        self.copy_blob(desc)

    def copy_referrers(self, subject: Descriptor, depth: int = 0) -> None:
        if depth >= MAX_REFERRER_DEPTH:
            return
        for ref in self.src.referrers(subject):
            if ref.media_type not in mt.ALL_MANIFEST_TYPES:
                continue
            self.copy_node(ref)
            with self.result._lock:
                self.result.referrers.append(ref)
            self.copy_referrers(ref, depth + 1)


def copy_graph(
    src: ReadOnlyTarget,
    root: Descriptor,
    dst: Target,
    *,
    tag: str | None = None,
    recursive: bool = False,
    concurrency: int = 4,
    progress: ProgressCallback | None = None,
    mount_hint: MountHint | None = None,
) -> CopyResult:
    """Copy the graph rooted at ``root`` from ``src`` to ``dst``, tagging it ``tag``."""
    result = CopyResult(root=root)
    copier = _Copier(
        src, dst, concurrency=concurrency, progress=progress, mount_hint=mount_hint, result=result
    )
    try:
        copier.copy_node(root, tag)
        if recursive:
            copier.copy_referrers(root)
    finally:
        copier.close()
    return result
