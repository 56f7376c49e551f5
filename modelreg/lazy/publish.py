"""Put a chunk index into a model artifact: at pack time, and next to the pushed manifest.

The manifest must name the index *before* its digest is computed (that is what
makes the manifest digest, and any signature of it, cover the index), so the
index is built from the files at pack time::

    annotations, blob, desc = chunk_index_annotations(files)          # files: (rel, real)
    packed = pack_directory(root, annotations={**user_annotations, **annotations})
    copy_graph(packed.as_target(), packed.descriptor, target, tag=tag)
    push_chunk_index(target, packed.descriptor, blob, desc)          # blob + referrer

:func:`push_chunk_index` uploads the index blob and a small referrer manifest
(``subject`` = the model manifest) that keeps the blob from being
garbage-collected; see :mod:`modelreg.lazy.chunkindex` for why it is a referrer
and not a layer. :func:`publish_chunk_index` does the same for a model already
pushed with the annotation, rebuilding the index from the files and checking it
is the one the manifest names.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from modelreg import settings
from modelreg._json import canonical_json, loads_strict
from modelreg.content.base import ReadOnlyTarget, Target, bytes_source, fetch_bytes
from modelreg.errors import FormatError, InvalidInputError, NotFoundError
from modelreg.lazy._tablecache import TableCache
from modelreg.lazy.chunkindex import (
    ANN_CHUNK_INDEX,
    ANN_TOC_DIGEST,
    ANN_TOC_SIZE,
    CHUNK_INDEX_ARTIFACT_TYPE,
    CHUNK_INDEX_MEDIA_TYPE,
    MAX_INDEX_BYTES,
    PREFIX_SIZE,
    FileChunks,
    build_chunk_index,
    chunk_index_descriptor,
)
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import (
    MAX_MANIFEST_BYTES,
    Manifest,
    empty_config,
    parse_manifest_or_index,
)

__all__ = [
    "chunk_index_annotations",
    "chunk_index_referrer",
    "index_descriptor_from_annotations",
    "publish_chunk_index",
    "push_chunk_index",
]

INDEX_TITLE = "modelreg-chunk-index"


def _annotation_value(desc: Descriptor) -> str:
    return canonical_json(desc.to_dict(), sort_keys=True).decode()


def chunk_index_annotations(
    files: Sequence[tuple[str, Path]],
    *,
    chunk_size: int | None = None,
    cache_dir: str | os.PathLike[str] | None | bool = True,
    on_bytes: Callable[[int], None] | None = None,
) -> tuple[dict[str, str], bytes, Descriptor]:
    """Index ``files`` (``(relative path, real path)``, e.g. from ``scan_directory``).

    Returns the manifest annotations to add (``dev.modelreg.chunk-index``), the
    index blob, and its descriptor. ``cache_dir=True`` reuses chunk tables of
    unchanged files from ``$MODELREG_HOME/state/chunk-tables``; ``False``/``None``
    always reads the files; a path picks another cache directory.
    """
    if cache_dir is True:
        root: str | os.PathLike[str] | None = settings.state_dir() / "chunk-tables"
    elif cache_dir is False or cache_dir is None:
        root = None
    else:
        root = cache_dir
    cache = TableCache(root)

    def hasher(rel: str, real: Path) -> FileChunks:
        return cache.get_or_compute(rel, real, chunk_size=chunk_size, on_bytes=on_bytes)

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
    data = fetch_bytes(target, desc, limit=MAX_MANIFEST_BYTES, what=f"manifest {desc.digest}")
    node = parse_manifest_or_index(data, desc.media_type, f"manifest {desc.digest}")
    if not isinstance(node, Manifest):
        raise NotFoundError(f"{desc.digest} is an image index, not a model manifest")
    return node
