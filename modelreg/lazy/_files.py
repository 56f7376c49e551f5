"""The files of a model artifact, as byte ranges of blobs.

A file is one raw layer, or (``--split``) several part layers whose
concatenation in offset order is the file (:mod:`modelreg.model.annotations`).
Paths are validated like ``pull`` does (SECURITY.md case 6): relative, no
``..``, no backslash or control character, no two files colliding after
normalisation, no file that is also a directory.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
from dataclasses import dataclass

from modelreg.errors import FormatError, UnsafeContentError
from modelreg.model import annotations as mann
from modelreg.model.unpack import layer_path, safe_relpath
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import Manifest

__all__ = ["ModelFile", "Segment", "is_archive", "model_files"]

_ARCHIVE_SUFFIXES = (".tar", "+gzip", "+zstd", ".tar+gzip", ".tar+zstd", "+gzip", "+zstd")


def is_archive(layer: Descriptor) -> bool:
    """A layer whose files are inside a tar: `pull` unpacks it, lazy reads cannot."""
    return layer.media_type.endswith(_ARCHIVE_SUFFIXES)


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


def _mode(desc: Descriptor) -> int:
    for key in (mann.ANN_FILE_METADATA, mt.ANN_FILE_METADATA, mt.LEGACY_ANN_FILE_METADATA):
        raw = desc.annotations.get(key)
        if not raw:
            continue
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            mode = json.loads(raw).get("mode")
            if isinstance(mode, int):
                return 0o755 if mode & 0o111 else 0o644
    return 0o644


def _int_annotation(desc: Descriptor, key: str, where: str) -> int:
    raw = desc.annotations.get(key)
    if raw is None or not raw.isdigit() or len(raw) > 20:
        raise FormatError(f"{where}: annotation {key} is {raw!r}, not a byte count")
    return int(raw)


def _parts_file(path: str, parts: list[Descriptor]) -> ModelFile:
    where = f"split file {path!r}"
    first = parts[0]
    size = _int_annotation(first, mann.ANN_FILE_SIZE, where)
    raw_digest = first.annotations.get(mann.ANN_FILE_DIGEST, "")
    try:
        digest = Digest.parse(raw_digest)
    except Exception as exc:
        raise FormatError(
            f"{where}: {mann.ANN_FILE_DIGEST} {raw_digest!r} is not a digest"
        ) from exc
    segments = []
    for desc in parts:
        if desc.annotations.get(mann.ANN_FILE_DIGEST) != raw_digest or desc.annotations.get(
            mann.ANN_FILE_SIZE
        ) != str(size):
            raise FormatError(f"{where}: its parts disagree on the whole file's digest or size")
        segments.append(Segment(desc, _int_annotation(desc, mann.ANN_PART_OFFSET, where)))
    segments.sort(key=lambda s: s.offset)
    position = 0
    for seg in segments:
        if seg.offset != position:
            raise FormatError(
                f"{where}: part at offset {seg.offset} does not follow the previous part "
                f"(expected offset {position})",
                hint="the parts must tile the file exactly; the artifact is malformed",
            )
        position = seg.end
    if position != size:
        raise FormatError(f"{where}: parts cover {position} bytes, the file is {size}")
    count = first.annotations.get(mann.ANN_PART_COUNT)
    if count is not None and count != str(len(segments)):
        raise FormatError(f"{where}: {len(segments)} parts present, {count} announced")
    mode = 0o644
    for desc in parts:
        if any(k in desc.annotations for k in (mann.ANN_FILE_METADATA, mt.ANN_FILE_METADATA)):
            mode = _mode(desc)
    return ModelFile(path, size, digest, first.media_type, mode, tuple(segments))


def model_files(manifest: Manifest) -> tuple[list[ModelFile], list[str]]:
    """The files of ``manifest`` in layer order, and notes on layers that are not files.

    Archive layers (tar, compressed) cannot be read lazily: they are left out and
    named in the notes, as are layers that name no path.
    """
    files: dict[str, ModelFile] = {}
    order: list[str] = []
    parts: dict[str, list[Descriptor]] = {}
    notes: list[str] = []
    for i, layer in enumerate(manifest.layers):
        if layer.media_type == mann.PART_MEDIA_TYPE:
            raw = layer.annotations.get(mann.ANN_PART_PATH)
            if raw is None:
                raise FormatError(f"layer {i} is a file part but names no {mann.ANN_PART_PATH}")
            path = safe_relpath(raw, f"layer {i} part path")
            if path not in parts:
                parts[path] = []
                order.append(path)
            parts[path].append(layer)
            continue
        raw = layer_path(layer)
        if raw is None:
            notes.append(f"layer {i} ({layer.digest.short}, {layer.media_type}) names no file")
            continue
        if is_archive(layer):
            notes.append(f"layer {raw!r} is an archive ({layer.media_type}); use pull")
            continue
        path = safe_relpath(raw, f"layer {i} path")
        if path in files or path in parts:
            raise UnsafeContentError(f"two layers name the file {path!r}")
        files[path] = ModelFile(
            path, layer.size, layer.digest, layer.media_type, _mode(layer), (Segment(layer, 0),)
        )
        order.append(path)
    for path, descs in parts.items():
        if path in files:
            raise UnsafeContentError(f"{path!r} is both a whole file and a split file")
        files[path] = _parts_file(path, descs)
    out = [files[p] for p in order]
    seen: dict[str, str] = {}
    for f in out:
        key = f.path.casefold()
        if key in seen:
            raise UnsafeContentError(
                f"files {seen[key]!r} and {f.path!r} collide after normalisation",
                hint="the artifact is malformed or hostile; refused",
            )
        seen[key] = f.path
    names = {f.path for f in out}
    for f in out:
        parent = posixpath.dirname(f.path)
        while parent:
            if parent in names:
                raise UnsafeContentError(f"{parent!r} is both a file and a directory")
            parent = posixpath.dirname(parent)
    return out, notes
