"""Copy a manifest graph from one target to another.

A graph walk in the spirit of oras-go's ``copy``: children before parents (blobs,
then the manifest that names them, then the index), skipping what the
destination already has, mounting across repositories of one registry, several
blobs in flight at once, and each blob streamed in bounded blocks whatever its
size. With ``recursive=True`` the referrers of every copied manifest
(signatures, attestations) follow it.

The walk decides what to move and in which order; moving a blob (exists, mount,
push, the counts and the progress events) is :class:`modelreg.transfer.Transfer`'s,
the one engine that push uses too. A push hands its engine, already holding the
blobs it sent while hashing, to :func:`walk_graph`.
"""

from __future__ import annotations

import io
from typing import BinaryIO

from modelreg.content.base import (
    CHUNK,
    BlobSource,
    ReadOnlyTarget,
    Target,
    VerifyingReader,
    fetch_bytes,
)
from modelreg.errors import FormatError, ModelRegError
from modelreg.events import ProgressCallback
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import MAX_MANIFEST_BYTES, Index, Manifest, parse_manifest_or_index
from modelreg.transfer import READ_BUFFER, CopyResult, MountHint, Transfer

__all__ = ["CopyResult", "MountHint", "copy_graph", "fetch_manifest", "fetch_node", "walk_graph"]

MAX_REFERRER_DEPTH = 4


def _name(desc: Descriptor) -> str:
    return (
        desc.annotations.get(mt.ANN_TITLE)
        or desc.annotations.get(mt.ANN_FILEPATH)
        or (desc.digest.short)
    )


def fetch_node(target: ReadOnlyTarget, desc: Descriptor) -> Manifest | Index:
    data = fetch_bytes(target, desc, limit=MAX_MANIFEST_BYTES, what=f"manifest {desc.digest}")
    return parse_manifest_or_index(data, desc.media_type, f"manifest {desc.digest}")


def fetch_manifest(
    target: ReadOnlyTarget,
    desc: Descriptor,
    *,
    expected: str,
    hint: str | None = None,
    name: str | None = None,
    error: type[ModelRegError] = FormatError,
) -> Manifest:
    """:func:`fetch_node` where only an image manifest will do (a model, a bundle).

    An index raises ``error`` saying ``{name} is an image index, not {expected}`` (``name``
    defaults to the digest): the caller names what it wanted and what to do instead."""
    node = fetch_node(target, desc)
    if not isinstance(node, Manifest):
        raise error(f"{name or desc.digest} is an image index, not {expected}", hint=hint)
    return node


class _CheckedAtEnd(io.RawIOBase):
    """A blob's verifying reader that checks the digest *before* handing out the block
    holding the blob's last byte. An upload reads exactly the declared size and never
    asks for EOF, where the reader would check: without this, wrong bytes from a source
    would reach the destination's final request (which refuses them, but as the upload's
    failure, not the source's, so the blob would not be read again from the next one)."""

    def __init__(self, reader: VerifyingReader) -> None:
        super().__init__()
        self._reader = reader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._reader.readinto(buffer)
        if n and self._reader.bytes_read >= self._reader.descriptor.size:
            self._reader.readinto(bytearray(1))  # at the end: raises if it does not verify
        return n

    def close(self) -> None:
        try:
            self._reader.close()
        finally:
            super().close()


def blob_source(src: ReadOnlyTarget, desc: Descriptor) -> BlobSource:
    """``desc`` read from ``src``, opened at an offset (an upload resuming) by skipping;
    the blob's last block is handed out only once the whole blob verified."""

    def open_at(offset: int) -> BinaryIO:
        reader = _CheckedAtEnd(src.fetch(desc))
        skip = offset
        while skip:
            block = reader.read(min(skip, CHUNK))
            if not block:
                break
            skip -= len(block)
        return io.BufferedReader(reader, READ_BUFFER)

    return open_at


class _GraphWalk:
    """Children before parents; each manifest's blobs in the engine's pool, together."""

    def __init__(self, src: ReadOnlyTarget, engine: Transfer) -> None:
        self.src = src
        self.engine = engine

    def copy_node(self, desc: Descriptor, tag: str | None = None) -> Manifest | Index:
        node = fetch_node(self.src, desc)
        if isinstance(node, Index):
            # Children one after another here; their blobs run in the pool. (Submitting
            # the children to the same pool could deadlock it on nested waits.)
            for child in node.manifests:
                self.copy_node(child)
        else:
            blobs = [node.config, *node.layers]
            self.engine.wait([self.engine.submit(self.copy_blob, b) for b in blobs])
        self.engine.dst.push_manifest(desc, node.raw, tag)
        self.engine.record_manifest(desc)
        return node

    def copy_blob(self, desc: Descriptor) -> None:
        self.engine.send(desc, blob_source(self.src, desc), _name(desc))

    def copy_referrers(self, subject: Descriptor, depth: int = 0) -> None:
        if depth >= MAX_REFERRER_DEPTH:
            return
        for ref in self.src.referrers(subject):
            if ref.media_type not in mt.ALL_MANIFEST_TYPES:
                continue
            self.copy_node(ref)
            self.engine.record_manifest(ref, referrer=True)
            self.copy_referrers(ref, depth + 1)


def walk_graph(
    engine: Transfer,
    src: ReadOnlyTarget,
    root: Descriptor,
    *,
    tag: str | None = None,
    recursive: bool = False,
) -> CopyResult:
    """Copy the graph rooted at ``root`` from ``src`` through ``engine`` (into its
    destination), tagging it ``tag``; the result counts everything the engine did,
    blobs it moved before the walk included."""
    walk = _GraphWalk(src, engine)
    walk.copy_node(root, tag)
    if recursive:
        walk.copy_referrers(root)
    return engine.result(root)


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
    with Transfer(
        dst, src=src, concurrency=concurrency, progress=progress, mount_hint=mount_hint
    ) as engine:
        return walk_graph(engine, src, root, tag=tag, recursive=recursive)
