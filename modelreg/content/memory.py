"""An in-memory target, for unit tests and for staging small artifacts."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator

from modelreg.content.base import CHUNK, BlobSource, PushResult, VerifyingReader
from modelreg.errors import NotFoundError
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import parse_manifest_or_index

__all__ = ["MemoryTarget"]


class MemoryTarget:
    """Blobs and tags held in a dict; implements :class:`~modelreg.content.base.Target`."""

    def __init__(self, name: str = "memory") -> None:
        self._name = name
        self._blobs: dict[Digest, bytes] = {}
        self._types: dict[Digest, str] = {}
        self._tags: dict[str, Descriptor] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    def fetch(self, desc: Descriptor) -> VerifyingReader:
        data = self._blobs.get(desc.digest)
        if data is None:
            raise NotFoundError(f"blob {desc.digest} not found in memory target")
        return VerifyingReader(io.BytesIO(data), desc)

    def fetch_range(self, desc: Descriptor, offset: int, length: int) -> bytes:
        data = self._blobs.get(desc.digest)
        if data is None:
            raise NotFoundError(f"blob {desc.digest} not found in memory target")
        return data[offset : offset + length]

    def exists(self, desc: Descriptor) -> bool:
        return desc.digest in self._blobs

    def push(self, desc: Descriptor, source: BlobSource) -> PushResult:
        if self.exists(desc):
            return PushResult(existed=True)
        with source(0) as stream, VerifyingReader(stream, desc) as reader:
            buf = io.BytesIO()
            while block := reader.read(CHUNK):
                buf.write(block)
        with self._lock:
            self._blobs[desc.digest] = buf.getvalue()
            self._types[desc.digest] = desc.media_type
        return PushResult(sent=desc.size)

    def push_manifest(self, desc: Descriptor, data: bytes, tag: str | None = None) -> None:
        with VerifyingReader(io.BytesIO(data), desc, what=f"manifest {desc.digest}") as reader:
            reader.read_to_end()
        with self._lock:
            self._blobs[desc.digest] = data
            self._types[desc.digest] = desc.media_type
            if tag:
                self._tags[tag] = desc
        if tag is None:
            return

    def tag(self, desc: Descriptor, tag: str) -> None:
        if desc.digest not in self._blobs:
            raise NotFoundError(f"manifest {desc.digest} not found; cannot tag it {tag!r}")
        with self._lock:
            self._tags[tag] = desc

    def resolve(self, reference: str) -> Descriptor:
        if reference in self._tags:
            return self._tags[reference]
        if ":" in reference:
            digest = Digest.parse(reference)
            data = self._blobs.get(digest)
            if data is not None:
                return Descriptor(self._types.get(digest, mt.OCI_MANIFEST), digest, len(data))
        raise NotFoundError(f"{reference!r} not found in memory target")

    def referrers(self, desc: Descriptor, artifact_type: str | None = None) -> list[Descriptor]:
        out = []
        for digest, media_type in list(self._types.items()):
            if media_type not in mt.ALL_MANIFEST_TYPES:
                continue
            node = parse_manifest_or_index(self._blobs[digest], media_type)
            if not node.is_referrer_of(desc.digest, artifact_type):
                continue
            out.append(node.descriptor().with_annotations(dict(node.annotations)))
        return out

    def tags(self) -> Iterator[str]:
        return iter(sorted(self._tags))
