"""Put a chunk index into a model artifact: at pack time, next to the pushed manifest,
or afterwards for an artifact that has none.

The manifest must name the index *before* its digest is computed (that is what
makes the manifest digest, and any signature of it, cover the index), so
``push`` builds it while packing, from the chunk tables the digest pass
computed alongside each file's digest (one read per byte, none for files whose
digest and table are cached)::

    builder = IndexAnnotator()
    packed = pack_directory(root, chunking=chunk_geometry, annotator=builder)
    copy_graph(packed.as_target(), packed.descriptor, target, tag=tag)
    push_chunk_index(target, packed.descriptor, *builder.result())   # blob + referrer

:func:`chunk_index_annotations` does the same from a file list, reading the
files (kept for callers that pack otherwise).

An artifact pushed without an index (another tool, an older modelreg,
``push --no-chunk-index``) cannot gain the annotation: that would change its
digest and break every signature and pin. :func:`add_chunk_index`
(``modelreg index REF``) streams each blob once, verified, builds the same
index, and pushes it as the same referrer only. Such an index is *unanchored*:
nothing the manifest digest covers names it, so readers
(:func:`find_chunk_index_referrer`) check it against the manifest (every file
it lists must have the manifest's size and digest, the blob must match the
referrer's descriptor) and say they use it. Because it is an ordinary OCI
artifact whose ``subject`` is the model manifest, a signature of the referrer
manifest covers the index exactly as a signature of a model covers the model.

:func:`push_chunk_index` uploads the index blob and a small referrer manifest
(``subject`` = the model manifest) that keeps the blob from being
garbage-collected; see :mod:`modelreg.lazy.chunkindex` for why it is a referrer
and not a layer. :func:`publish_chunk_index` does the same for a model already
pushed with the annotation, rebuilding the index from the files and checking it
is the one the manifest names.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelreg import settings
from modelreg._json import canonical_json, loads_strict
from modelreg.content.base import (
    ReadOnlyTarget,
    Target,
    VerifyingReader,
    bytes_source,
)
from modelreg.copy import fetch_manifest
from modelreg.errors import (
    FormatError,
    IntegrityError,
    InvalidInputError,
    ModelRegError,
    NotFoundError,
)
from modelreg.events import Event, ProgressCallback, emit
from modelreg.lazy._tablecache import TableCache
from modelreg.lazy.chunkindex import (
    ANN_CHUNK_INDEX,
    ANN_TOC_DIGEST,
    ANN_TOC_SIZE,
    CHUNK_INDEX_ARTIFACT_TYPE,
    CHUNK_INDEX_MEDIA_TYPE,
    DEFAULT_CHUNK_ALGORITHM,
    MAX_INDEX_BYTES,
    PREFIX_SIZE,
    FileChunks,
    build_chunk_index,
    choose_chunk_size,
    chunk_index_descriptor,
    detect_head_in,
    encode_chunk_index,
    file_chunks_from_table,
)
from modelreg.model.digests import ChunkGeometry, ChunkHasher
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import Manifest, empty_config

if TYPE_CHECKING:
    from modelreg.client import Client
    from modelreg.lazy._files import ModelFile
    from modelreg.model.pack import PackedFile

__all__ = [
    "IndexAnnotator",
    "IndexResult",
    "add_chunk_index",
    "chunk_index_annotations",
    "chunk_index_referrer",
    "find_chunk_index_referrer",
    "index_descriptor_from_annotations",
    "publish_chunk_index",
    "push_chunk_index",
]

INDEX_TITLE = "modelreg-chunk-index"
_MAX_CANDIDATES = 8
"""Index referrers tried per manifest (a flood of bogus ones costs at most this)."""
_PREFIX_MAX = 100_000_000 + 8 + 16


def _annotation_value(desc: Descriptor) -> str:
    return canonical_json(desc.to_dict(), sort_keys=True).decode()


def chunk_index_annotations(
    files: Sequence[tuple[str, Path]],
    *,
    chunk_size: int | None = None,
    cache_dir: str | os.PathLike[str] | None | bool = True,
    on_bytes: Callable[[int], None] | None = None,
    algorithm: str = DEFAULT_CHUNK_ALGORITHM,
) -> tuple[dict[str, str], bytes, Descriptor]:
    """Index ``files`` (``(relative path, real path)``, e.g. from ``scan_directory``).

    Returns the manifest annotations to add (``dev.modelreg.chunk-index``), the
    index blob, and its descriptor. ``cache_dir=True`` reuses chunk tables of
    unchanged files from ``$MODELREG_HOME/state/chunk-tables``; ``False``/``None``
    always reads the files; a path picks another cache directory. ``algorithm``
    digests the chunks (``"sha256"`` writes the format of modelreg before BLAKE3).
    """
    if cache_dir is True:
        root: str | os.PathLike[str] | None = settings.state_dir() / "chunk-tables"
    elif cache_dir is False or cache_dir is None:
        root = None
    else:
        root = cache_dir
    cache = TableCache(root)

    def hasher(rel: str, real: Path) -> FileChunks:
        return cache.get_or_compute(
            rel, real, chunk_size=chunk_size, on_bytes=on_bytes, algorithm=algorithm
        )

    blob = build_chunk_index(files, chunk_size=chunk_size, hasher=hasher)
    desc = chunk_index_descriptor(blob)
    return {ANN_CHUNK_INDEX: _annotation_value(desc)}, blob, desc


def index_descriptor_from_annotations(annotations: Mapping[str, str]) -> Descriptor | None:
    """The chunk index descriptor a manifest names, validated; None when it names none."""
    raw = annotations.get(ANN_CHUNK_INDEX)
    if raw is None:
        return None
    where = f"manifest annotation {ANN_CHUNK_INDEX}"
    if len(raw) > 64 * 1024:
        raise FormatError(f"{where} is unreasonably long ({len(raw)} characters)")
    obj: Any = loads_strict(raw, what=where)
    desc = Descriptor.from_dict(obj, where)
    if desc.media_type != CHUNK_INDEX_MEDIA_TYPE:
        raise FormatError(
            f"{where} names media type {desc.media_type!r}, expected {CHUNK_INDEX_MEDIA_TYPE!r}",
            hint="written by a newer modelreg? upgrade to read it",
        )
    if desc.digest.algorithm != "sha256":
        raise FormatError(f"{where}: only sha256 chunk indexes are read")
    if not PREFIX_SIZE < desc.size <= MAX_INDEX_BYTES:
        raise FormatError(f"{where}: size {desc.size} is out of range")
    toc_digest = desc.annotations.get(ANN_TOC_DIGEST, "")
    toc_size = desc.annotations.get(ANN_TOC_SIZE, "")
    try:
        Digest.parse(toc_digest)
    except InvalidInputError as exc:
        raise FormatError(f"{where}: {ANN_TOC_DIGEST}: {exc.message}") from None
    if not toc_size.isdigit() or not PREFIX_SIZE < int(toc_size) <= desc.size:
        raise FormatError(f"{where}: {ANN_TOC_SIZE} {toc_size!r} is not a size inside the index")
    return desc


def chunk_index_referrer(index_desc: Descriptor, subject: Descriptor) -> Manifest:
    """The referrer manifest that keeps the index blob alive in a registry."""
    layer = index_desc.with_annotations({**index_desc.annotations, mt.ANN_TITLE: INDEX_TITLE})
    return Manifest(
        config=empty_config(),
        layers=(layer,),
        artifact_type=CHUNK_INDEX_ARTIFACT_TYPE,
        subject=Descriptor(subject.media_type, subject.digest, subject.size),
    )


def push_chunk_index(
    target: Target, subject: Descriptor, blob: bytes, desc: Descriptor
) -> Descriptor:
    """Upload the index blob and its referrer (subject = the model manifest).

    Returns the referrer manifest's descriptor. Idempotent: the referrer has no
    timestamp, so pushing twice yields the same digest.
    """
    if Digest.from_bytes(blob) != desc.digest or len(blob) != desc.size:
        raise InvalidInputError("the chunk index blob does not match its descriptor")
    target.push(desc, bytes_source(blob))
    empty = empty_config()
    target.push(empty, bytes_source(mt.EMPTY_JSON))
    referrer = chunk_index_referrer(desc, subject)
    ref_desc = referrer.descriptor()
    target.push_manifest(ref_desc, referrer.raw)
    return ref_desc


def publish_chunk_index(
    target: Target,
    subject: Descriptor,
    files: Sequence[tuple[str, Path]],
    *,
    chunk_size: int | None = None,
    cache_dir: str | os.PathLike[str] | None | bool = True,
) -> Descriptor:
    """For a pushed model whose manifest names a chunk index: build it from ``files``
    and push it (blob + referrer). Refuses when the files give another index than
    the one the manifest names (the files changed since the push)."""
    manifest = _fetch_manifest(target, subject)
    named = index_descriptor_from_annotations(manifest.annotations)
    if named is None:
        raise InvalidInputError(
            f"manifest {subject.digest} does not name a chunk index",
            hint="the index must be named in the manifest at pack time "
            "(chunk_index_annotations -> pack_directory(annotations=...)); re-push the model",
        )
    _, blob, desc = chunk_index_annotations(files, chunk_size=chunk_size, cache_dir=cache_dir)
    if desc.digest != named.digest:
        raise InvalidInputError(
            f"the files give chunk index {desc.digest}, but manifest {subject.digest} names "
            f"{named.digest}",
            hint="the files changed since the model was pushed; push the model again",
        )
    return push_chunk_index(target, subject, blob, desc)


def _fetch_manifest(target: ReadOnlyTarget, desc: Descriptor) -> Manifest:
    return fetch_manifest(target, desc, expected="a model manifest", error=NotFoundError)


# --------------------------------------------------------------------------- push


class IndexAnnotator:
    """``pack_directory(annotator=...)``: builds the index from the digest pass's tables.

    Called once with the hashed files (path order); returns the manifest
    annotation and keeps the blob and its descriptor for :func:`push_chunk_index`.
    """

    def __init__(self) -> None:
        self._result: tuple[bytes, Descriptor] | None = None

    def __call__(self, files: Sequence[PackedFile]) -> dict[str, str]:
        tables = []
        for f in files:
            if f.chunks is None:
                raise InvalidInputError(
                    f"{f.path!r} was packed without its chunk table",
                    hint="pack with chunking=chunk_geometry to build the chunk index",
                )
            tables.append(file_chunks_from_table(f.path, f.descriptor.digest, f.chunks))
        blob = encode_chunk_index(tables)
        desc = chunk_index_descriptor(blob)
        self._result = (blob, desc)
        return {ANN_CHUNK_INDEX: _annotation_value(desc)}

    def result(self) -> tuple[bytes, Descriptor]:
        """(blob, descriptor) of the index the annotation names."""
        if self._result is None:
            raise InvalidInputError("the chunk index was not built (nothing was packed)")
        return self._result


# --------------------------------------------------------------------------- read


def find_chunk_index_referrer(
    target: ReadOnlyTarget, subject: Descriptor
) -> tuple[Descriptor, Descriptor] | None:
    """An index referrer of ``subject``: (referrer manifest, index blob descriptor).

    Listed with the ``artifactType`` filter; each candidate (at most a few) must be
    an image manifest of that artifact type whose ``subject`` is ``subject`` and
    whose one layer is a chunk index. The blob itself is verified by whoever
    fetches it (against the returned descriptor). None when there is none.
    """
    try:
        listed = target.referrers(subject, CHUNK_INDEX_ARTIFACT_TYPE)
    except NotFoundError:
        return None
    candidates = [d for d in listed if d.artifact_type in (None, CHUNK_INDEX_ARTIFACT_TYPE)]
    for ref_desc in candidates[:_MAX_CANDIDATES]:
        try:
            node = _fetch_manifest(target, ref_desc)
        except ModelRegError:
            continue
        if (
            node.artifact_type != CHUNK_INDEX_ARTIFACT_TYPE
            or node.subject is None
            or node.subject.digest != subject.digest
            or len(node.layers) != 1
        ):
            continue
        layer = node.layers[0]
        try:
            desc = index_descriptor_from_annotations({ANN_CHUNK_INDEX: _annotation_value(layer)})
        except ModelRegError:
            continue
        if desc is not None:
            return ref_desc, desc
    return None


# --------------------------------------------------------------------------- index REF


@dataclass(frozen=True)
class IndexResult:
    """What :func:`add_chunk_index` found or did."""

    reference: str
    digest: Digest
    """The model manifest's digest (unchanged)."""
    index: Descriptor
    referrer: Descriptor | None
    """The referrer manifest holding the index (None: named by the manifest, no referrer)."""
    source: str
    """``manifest`` (named by the manifest), ``referrer`` (an existing one) or ``built``."""
    bytes_read: int = 0

    @property
    def created(self) -> bool:
        return self.source == "built"

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": str(self.digest),
            "index": self.index.to_dict(),
            "referrer": str(self.referrer.digest) if self.referrer is not None else None,
            "source": self.source,
            "created": self.created,
            "bytesRead": self.bytes_read,
        }


def add_chunk_index(
    client: Client,
    ref: str,
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> IndexResult:
    """Give a pushed model a chunk index, as a referrer (``modelreg index REF``).

    Idempotent: an index the manifest names, or an existing index referrer, is
    reported and nothing is read. ``force`` rebuilds the referrer anyway (not an
    index the manifest names: that one is part of the manifest). Each blob is
    streamed once and verified against its digest before anything is pushed.
    """
    from modelreg.lazy._files import model_files

    ref_obj, target, desc = client.resolve(ref)
    reference = str(ref_obj.with_digest(desc.digest))
    manifest = _fetch_manifest(target, desc)
    named = index_descriptor_from_annotations(manifest.annotations)
    if named is not None:
        return IndexResult(reference, desc.digest, named, None, "manifest")
    if not force:
        found = find_chunk_index_referrer(target, desc)
        if found is not None:
            return IndexResult(reference, desc.digest, found[1], found[0], "referrer")
    # group members are verified by their own digests (the member table); no index
    files = [f for f in model_files(manifest)[0] if not f.grouped]
    if not isinstance(target, Target):
        raise InvalidInputError(f"{target.name} is read-only: cannot add a chunk index to it")
    if not files:
        raise InvalidInputError(
            f"{reference} has no file that can be read lazily",
            hint="archive layers are read with `modelreg pull`; they have no chunk index",
        )
    tables = []
    read = 0
    for f in files:
        emit(progress, Event("message", f"indexing {f.path}"))
        fc, n = _index_remote_file(target, f)
        tables.append(fc)
        read += n
    tables.sort(key=lambda fc: fc.path)  # the order push writes: the same index
    blob = encode_chunk_index(tables)
    index_desc = chunk_index_descriptor(blob)
    referrer = push_chunk_index(target, desc, blob, index_desc)
    return IndexResult(reference, desc.digest, index_desc, referrer, "built", read)


class _StreamPrefix:
    """``read_at`` over the first bytes of a stream, read on demand and kept, for
    finding the head region before the chunks are cut (capped: a header is small)."""

    def __init__(self, read: Callable[[int], bytes], size: int) -> None:
        self._read = read
        self.size = size
        self.data = bytearray()

    def read_at(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if end > _PREFIX_MAX:
            raise FormatError("header larger than any the index chunks separately")
        while len(self.data) < end:
            more = self._read(min(8 * 1024 * 1024, end - len(self.data)))
            if not more:
                break
            self.data += more
        return bytes(self.data[offset:end])


def _index_remote_file(target: ReadOnlyTarget, f: ModelFile) -> tuple[FileChunks, int]:
    """Stream one file's blobs once, verified; its chunk table with the push's geometry."""
    readers: list[VerifyingReader] = []
    try:

        def read(n: int) -> bytes:
            # one blob open at a time, each read to its end (where it is verified)
            while True:
                if readers:
                    data = readers[-1].read(n)
                    if data:
                        return bytes(data)
                if len(readers) == len(f.segments):
                    return b""
                readers.append(target.fetch(f.segments[len(readers)].desc))

        prefix = _StreamPrefix(read, f.size)
        head = detect_head_in(prefix, f.size, f.path)
        chunks = ChunkHasher(ChunkGeometry(choose_chunk_size(f.size), head))
        whole = hashlib.sha256()
        chunks.update(prefix.data)
        whole.update(prefix.data)
        total = len(prefix.data)
        while data := read(8 * 1024 * 1024):
            chunks.update(data)
            whole.update(data)
            total += len(data)
    finally:
        for r in readers:
            r.close()
    if total != f.size or Digest("sha256", whole.hexdigest()) != f.digest:
        raise IntegrityError(
            f"{f.path!r}: the registry served {total} bytes hashing to "
            f"sha256:{whole.hexdigest()}, the manifest says {f.size} bytes, {f.digest}",
            hint="the registry serves corrupt or tampered bytes; no index was pushed",
        )
    return file_chunks_from_table(f.path, f.digest, chunks.finish()), total
