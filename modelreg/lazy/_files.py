"""The files of a model artifact, as byte ranges of blobs.

Files are named from the same plan ``pull`` writes by
(:func:`modelreg.model.layerfiles.layer_files`, with the config for producers
that name layers there, KitOps): every producer's raw layers (ModelPack,
modctl, KitOps, Docker Model Runner v0.1 names from media types and v0.2
annotations, ORAS titles) are files here under the path pull gives them, with
the same checks (SECURITY.md case 6: relative, no ``..``, no backslash or
control character, no two files colliding after normalisation, no file that is
also a directory). A split file (``--split``) is several part layers whose
concatenation in offset order is the file (:mod:`modelreg.model.annotations`).

Files inside a modelreg small-file group (an uncompressed tar layer carrying a
member table, :data:`modelreg.model.grouping.ANN_GROUP_FILES`) are served too:
each is one segment of its group layer (the member's data, at the offset the
table gives), with a one-chunk table whose digest is the file's own
(:attr:`ModelFile.chunks`), so a read fetches exactly that member by Range and
hashes it against the file's digest before anything is returned. The table
locates bytes, it never vouches for them: a row pointing at another member's
bytes or past the end fails that check (or the fetch). Member paths are claimed
with every other file's (no collision, no file that is also a directory).

Not served, each named in the notes instead (:func:`model_files`):

* archive layers (tar, tar+gzip, tar+zstd: KitOps, modctl, legacy ModelPack,
  ORAS directories, Docker config archives): the files inside are known and
  checked only when the archive is read whole and unpacked, which is ``pull``'s
  job; they are readable only after ``pull``;
* compressed single files (KitOps ``raw+gzip``/``raw+zstd``): a compressed
  stream cannot be read at an offset without decompressing everything before
  it, so the handle does not pretend to range-read them; ``pull`` writes them
  decompressed;
* layers ``pull`` skips (an ORAS layer without a title).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelreg.lazy.chunkindex import FileChunks
from modelreg.model import annotations as mann
from modelreg.model import grouping
from modelreg.model.archive import PathClaims
from modelreg.model.layerfiles import LayerFile, layer_files
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import Manifest

__all__ = ["ModelFile", "Segment", "model_files"]


@dataclass(frozen=True, slots=True)
class Segment:
    """Blob ``desc`` holds bytes ``[offset, end)`` of its file, from byte ``start`` of
    the blob on (0: the whole blob is the segment; a group member: its data)."""

    desc: Descriptor
    offset: int
    start: int = 0
    length: int | None = None
    """Bytes of the blob in the segment (None: the whole blob)."""

    @property
    def size(self) -> int:
        return self.desc.size if self.length is None else self.length

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class ModelFile:
    """One file of the model: its path, size, whole-file digest and where its bytes are."""

    path: str
    size: int
    digest: Digest
    media_type: str
    mode: int
    segments: tuple[Segment, ...]
    chunks: FileChunks | None = None
    """How its bytes are verified when no chunk index may say otherwise (a group
    member: one chunk, the whole file, hashed against its own digest)."""

    @property
    def split(self) -> bool:
        return len(self.segments) > 1 or self.segments[0].desc.media_type == mann.PART_MEDIA_TYPE

    @property
    def grouped(self) -> bool:
        """Its bytes are a member of a small-file group layer."""
        return self.chunks is not None

    def segments_for(self, offset: int, length: int) -> list[tuple[Segment, int, int]]:
        """``(segment, offset in blob, length)`` pieces covering ``[offset, offset+length)``."""
        out = []
        end = offset + length
        for seg in self.segments:
            if seg.end <= offset or seg.offset >= end:
                continue
            start = max(offset, seg.offset)
            stop = min(end, seg.end)
            out.append((seg, seg.start + start - seg.offset, stop - start))
        return out


def _model_file(f: LayerFile) -> ModelFile:
    assert f.path is not None
    if f.split is not None:
        segments = tuple(Segment(p.descriptor, p.offset) for p in f.split.parts)
    else:
        segments = (Segment(f.blobs[0], 0),)
    return ModelFile(f.path, f.size, f.digest, f.media_type, f.mode, segments)


def _members(f: LayerFile) -> list[ModelFile] | None:
    """The files of a small-file group layer, from its member table; None when the layer
    is no group (:func:`~modelreg.model.grouping.group_rows`)."""
    layer = f.blobs[0]
    rows = grouping.group_rows(layer)
    if rows is None:
        return None
    return [
        ModelFile(
            row.path,
            row.size,
            row.digest,
            f.media_type,
            row.mode,
            (Segment(layer, 0, row.offset, row.size),),
            FileChunks(
                row.path,
                row.size,
                row.digest,
                max(1, row.size),
                digests=bytes.fromhex(row.digest.hex),
            ),
        )
        for row in rows
    ]


def _note(f: LayerFile) -> str:
    if f.kind == "archive":
        where = "the model root" if f.path == "." else repr(f.path)
        return (
            f"{where} is held in an archive layer ({f.note}, {f.media_type}): "
            "the files inside it are readable only after `modelreg pull`"
        )
    if f.kind == "compressed":
        return (
            f"{f.path!r} is stored compressed ({f.media_type}) and cannot be read by range: "
            "read it after `modelreg pull`, which writes it decompressed"
        )
    return f"layer {f.index} ({f.digest.short}, {f.media_type}) is not a file: {f.note}"


def model_files(
    manifest: Manifest, config: Mapping[str, Any] | None = None
) -> tuple[list[ModelFile], list[LayerFile], list[str]]:
    """The readable files of ``manifest`` in layer order, the layers whose files only
    ``pull`` writes (archives, compressed files) and notes naming every layer that is
    not a readable file (see the module notes). Raises what ``pull`` raises on a
    malformed or hostile manifest."""
    files: list[ModelFile] = []
    pull_only: list[LayerFile] = []
    notes: list[str] = []
    grouped: list[ModelFile] = []
    for f in layer_files(manifest, config):
        if f.readable:
            files.append(_model_file(f))
            continue
        members = _members(f) if f.kind == "archive" else None
        if members is not None:
            grouped.extend(members)
            continue
        if f.kind in ("archive", "compressed"):
            pull_only.append(f)
        notes.append(_note(f))
    if grouped:
        # layer_files claimed the other files already; claim them again here together with
        # the members, so no member collides with a file or a directory of another layer
        claims = PathClaims()
        for mf in files:
            claims.claim_file(mf.path, f"file {mf.path!r}")
        for mf in grouped:
            claims.claim_file(mf.path, f"group member {mf.path!r}")
        files.extend(grouped)
    return files, pull_only, notes
