"""Archive and compressed layers: bounded expansion into the staging directory.

These layers cannot be reflinked, hard-linked or remembered: their bytes are
not the files' bytes. They are read through :class:`~._source.BlobReader` (the
layer's digest verified as it streams, SECURITY.md case 1) and expanded by
:mod:`modelreg.model.archive`, which enforces member names (case 6), link kinds
and targets within the archive (case 7) and the decompression bound (case 9).
The bound is the producer's declared size when there is one, else a multiple
(``expand_ratio``) of the compressed size, never above the archive module's
hard cap. Links across layers are judged later, for the whole pull, at commit.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from modelreg.model import archive as arch
from modelreg.model.producers import ArchiveLayer, RawLayer
from modelreg.model.unpack import _blockio as blockio
from modelreg.model.unpack._result import FileEntry
from modelreg.oci.descriptor import Descriptor

TAR_OVERHEAD = 1024 * 1024
"""Allowed beyond an archive's declared content size: tar headers and padding."""


def decompress_layer(
    stream: io.RawIOBase,
    path: str,
    layer: RawLayer,
    dst: Path,
    *,
    expand_ratio: int,
    fsync: bool,
) -> FileEntry:
    """Expand a compressed single-file layer into ``dst``; the entry says what was
    written at ``path`` (the digest of the expanded bytes)."""
    desc = layer.descriptor
    limit = arch.expansion_limit(desc.size, layer.declared_size, expand_ratio)
    with open(dst, "wb") as out:
        digest, size = arch.decompress_file(
            stream,  # type: ignore[arg-type]
            out,
            label=f"compressed layer {layer.path!r}",
            limit=limit,
        )
        blockio.read_to_end(stream)
        blockio.finish_file(out, fsync)
    return FileEntry(path, Descriptor(desc.media_type, digest, size), layer.mode)


def extract_layer(
    stream: io.RawIOBase,
    layer: ArchiveLayer,
    staging: Path,
    *,
    claims: arch.PathClaims,
    include: Callable[[str], bool] | None,
    expand_ratio: int,
) -> tuple[list[FileEntry], dict[str, str]]:
    """Extract an archive layer into ``staging``: the files written, and the symbolic
    links among them with the layer member that made each (for the pull's link check)."""
    desc = layer.descriptor
    declared = None if layer.declared_size is None else layer.declared_size + TAR_OVERHEAD
    limit = arch.expansion_limit(desc.size, declared, expand_ratio)
    extracted = arch.extract_archive(
        stream,  # type: ignore[arg-type]
        staging,
        label=layer.label,
        limit=limit,
        claims=claims,
        include=include,
        prefix=layer.prefix,
        tar_digest=layer.tar_digest,
    )
    blockio.read_to_end(stream)
    links = {f.path: f"{layer.label}: member {f.path!r}" for f in extracted if f.link is not None}
    entries = [
        FileEntry(f.path, Descriptor(desc.media_type, f.digest, f.size), f.mode) for f in extracted
    ]
    return entries, links
