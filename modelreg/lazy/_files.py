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

from modelreg.model import annotations as mann
from modelreg.model.layerfiles import LayerFile, layer_files
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import Manifest

__all__ = ["ModelFile", "Segment", "model_files"]


@dataclass(frozen=True, slots=True)
class Segment:
    """Blob ``desc`` holds bytes ``[offset, offset + desc.size)`` of its file."""

    desc: Descriptor
    offset: int

    @property
    def end(self) -> int:
        return self.offset + self.desc.size


@dataclass(frozen=True)
class ModelFile:
    """One file of the model: its path, size, whole-file digest and where its bytes are."""

    path: str
    size: int
    digest: Digest
    media_type: str
    mode: int
    segments: tuple[Segment, ...]

    @property
    def split(self) -> bool:
        return len(self.segments) > 1 or self.segments[0].desc.media_type == mann.PART_MEDIA_TYPE

    def segments_for(self, offset: int, length: int) -> list[tuple[Segment, int, int]]:
        """``(segment, offset in blob, length)`` pieces covering ``[offset, offset+length)``."""
        out = []
        end = offset + length
        for seg in self.segments:
            if seg.end <= offset or seg.offset >= end:
                continue
            start = max(offset, seg.offset)
            stop = min(end, seg.end)
            out.append((seg, start - seg.offset, stop - start))
        return out


def _model_file(f: LayerFile) -> ModelFile:
    assert f.path is not None
    if f.split is not None:
        segments = tuple(Segment(p.descriptor, p.offset) for p in f.split.parts)
    else:
        segments = (Segment(f.blobs[0], 0),)
    return ModelFile(f.path, f.size, f.digest, f.media_type, f.mode, segments)


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
    for f in layer_files(manifest, config):
        if f.readable:
            files.append(_model_file(f))
            continue
        if f.kind in ("archive", "compressed"):
            pull_only.append(f)
        notes.append(_note(f))
    return files, pull_only, notes
