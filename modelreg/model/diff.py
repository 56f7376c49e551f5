"""What changed between two versions of a model, from manifests and headers only.

Files are named as ``pull`` names them, from the same plan
(:func:`modelreg.model.layerfiles.layer_files`, with the config for producers
that name layers there): an archive layer, whose files are known only once it
is read, is one entry named by what it holds (its directory, or ``.`` for the
model root) with ``kind: "archive"``; layers pull skips are left out.

Files are matched by path. A file is *unchanged* when its digest is the same
(the whole-file digest for split files), *changed*, *added* or *removed*
otherwise. Bytes are counted per blob (layer or part), each distinct digest
once: ``shared`` is what both versions hold (what a pull of one does not fetch
again with the other in the cache, or a push does not send), ``onlyA``/``onlyB``
the rest.

For a changed safetensors or GGUF file, the two headers are read (range
requests, as ``inspect --tensors``) and tensors compared by name: *added*,
*removed*, *reshaped* (dtype or shape differ) or, for tensors of the same dtype
and shape, by the digest of the part holding them when both versions are split:
*unchanged* when that part's digest is the same, else *changed*; a part may hold
several tensors, so *changed* means "in a part that changed". Without parts,
same-shape tensors of a changed file are *unknown*: telling requires reading
their bytes, which ``diff`` never does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from modelreg._json import camel_fields
from modelreg.content.base import ReadOnlyTarget
from modelreg.model.formats import ModelFileInfo
from modelreg.model.layerfiles import group_members, layer_files
from modelreg.model.producers import SplitFile
from modelreg.model.tensors import BlobSource, FetchCounter, SplitSource, describe_file
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import Manifest

__all__ = ["DiffResult", "FileDiff", "LogicalFile", "diff_manifests", "logical_files"]

_TENSOR_EXT = frozenset({".safetensors", ".gguf"})
_READABLE = frozenset({"file", "split"})
"""Kinds whose headers can be read by range (not archives, not compressed files)."""


@dataclass(frozen=True)
class LogicalFile:
    """One file of an artifact, whether stored as one layer, as parts, or in an archive."""

    path: str
    digest: str
    size: int
    blobs: tuple[Descriptor, ...]
    split: SplitFile | None = None
    kind: str = "file"
    """``file``, ``compressed``, ``split``, ``archive`` (:data:`LayerKind`) or ``grouped``
    (a file of a small-file group, named by the group's member table)."""


def logical_files(manifest: Manifest, config: Mapping[str, Any] | None = None) -> list[LogicalFile]:
    """The files of a manifest named as pull names them (:func:`layer_files`), parts
    grouped into their file, archives named by what they hold; skipped layers left out.
    An archive whose name is already taken is told apart by its digest."""
    out: dict[str, LogicalFile] = {}
    files = layer_files(manifest, config)
    groups = group_members(files)
    for i, f in enumerate(files):
        if f.path is None:
            continue
        members = groups.get(i)
        if members is not None:
            # a small-file group: each member by its own digest; its bytes are the
            # group's (one blob, counted once however many members changed)
            for m in members:
                out[m.path] = LogicalFile(m.path, m.digest, m.size, f.blobs, None, "grouped")
            continue
        name = f.path
        if name in out:
            name = f"{name} ({f.digest.short})"
        out[name] = LogicalFile(name, str(f.digest), f.size, f.blobs, f.split, f.kind)
    return sorted(out.values(), key=lambda f: f.path)


@dataclass
class FileDiff:
    path: str
    status: str
    size_a: int | None = None
    size_b: int | None = None
    digest_a: str | None = None
    digest_b: str | None = None
    shared_bytes: int = 0
    tensors: list[dict[str, Any]] = field(default_factory=list)
    tensor_summary: dict[str, int] = field(default_factory=dict)
    note: str | None = None
    kind: str = "file"
    """``archive`` when either version stores it as an archive layer (named by what it
    holds: its files are not listed, their bytes are compared as one layer)."""

    def to_dict(self) -> dict[str, Any]:
        out = camel_fields(
            self, "path", "status", "size_a", "size_b", "digest_a", "digest_b", "shared_bytes"
        )
        if self.kind != "file":
            out["kind"] = self.kind
        if self.tensor_summary:
            out["tensorSummary"] = dict(self.tensor_summary)
            out["tensors"] = list(self.tensors)
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class DiffResult:
    files: list[FileDiff] = field(default_factory=list)
    total_a: int = 0
    total_b: int = 0
    shared: int = 0
    only_a: int = 0
    only_b: int = 0
    bytes_fetched: int = 0

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": [f.to_dict() for f in self.files],
            "summary": {
                status: self.count(status)
                for status in ("added", "removed", "changed", "unchanged")
            },
            "bytes": camel_fields(self, "total_a", "total_b", "shared", "only_a", "only_b"),
            "bytesFetched": self.bytes_fetched,
        }


def _kind(f: LogicalFile) -> str:
    return "archive" if f.kind == "archive" else "file"


def _unique(files: Sequence[LogicalFile]) -> dict[str, int]:
    return {str(b.digest): b.size for f in files for b in f.blobs}


def _source(target: ReadOnlyTarget, f: LogicalFile, counter: FetchCounter) -> Any:
    if f.split is not None:
        return SplitSource(target, f.split, counter)
    return BlobSource(target, f.blobs[0], counter)


def _part_of(split: SplitFile | None, offset: int) -> str | None:
    if split is None:
        return None
    for p in split.parts:
        if p.offset <= offset < p.offset + p.descriptor.size:
            return str(p.descriptor.digest)
    return None


def _tensor_diff(
    fa: LogicalFile,
    fb: LogicalFile,
    ia: ModelFileInfo,
    ib: ModelFileInfo,
) -> tuple[list[dict[str, Any]], dict[str, int], str | None]:
    ta = {t.name: t for t in ia.tensors}
    tb = {t.name: t for t in ib.tensors}
    rows: list[dict[str, Any]] = []
    summary = {"added": 0, "removed": 0, "reshaped": 0, "changed": 0, "unchanged": 0, "unknown": 0}
    both_split = fa.split is not None and fb.split is not None
    for name in sorted(set(ta) | set(tb)):
        a, b = ta.get(name), tb.get(name)
        row: dict[str, Any] = {"name": name}
        if a is None and b is not None:
            status = "added"
            row.update(dtype=b.dtype, shape=list(b.shape), bytes=b.nbytes)
        elif b is None and a is not None:
            status = "removed"
            row.update(dtype=a.dtype, shape=list(a.shape), bytes=a.nbytes)
        else:
            assert a is not None and b is not None
            row.update(dtype=b.dtype, shape=list(b.shape), bytes=b.nbytes)
            if a.dtype != b.dtype or a.shape != b.shape:
                status = "reshaped"
                row.update(dtypeA=a.dtype, shapeA=list(a.shape))
            elif both_split and a.nbytes > 0:
                pa, pb = _part_of(fa.split, a.offset), _part_of(fb.split, b.offset)
                status = "unchanged" if pa is not None and pa == pb else "changed"
            elif a.nbytes == 0:
                status = "unchanged"
            else:
                status = "unknown"
        row["status"] = status
        summary[status] += 1
        rows.append(row)
    note = None
    if summary["unknown"]:
        note = (
            "the file is not split into parts in both versions: same-shape tensors cannot be "
            "told apart without reading their bytes (push with --split to see them)"
        )
    elif summary["changed"]:
        note = "'changed' tensors lie in parts whose digest changed (a part may hold several)"
    return rows, {k: v for k, v in summary.items() if v}, note


def diff_manifests(
    target_a: ReadOnlyTarget,
    manifest_a: Manifest,
    target_b: ReadOnlyTarget,
    manifest_b: Manifest,
    *,
    tensors: bool = True,
    config_a: Mapping[str, Any] | None = None,
    config_b: Mapping[str, Any] | None = None,
) -> DiffResult:
    """Compare two model manifests (see the module docstring). ``config_a``/``config_b``:
    the parsed configs of producers that name layers there (:func:`read_config`)."""
    files_a = {f.path: f for f in logical_files(manifest_a, config_a)}
    files_b = {f.path: f for f in logical_files(manifest_b, config_b)}
    blobs_a = _unique(list(files_a.values()))
    blobs_b = _unique(list(files_b.values()))
    result = DiffResult(
        total_a=sum(blobs_a.values()),
        total_b=sum(blobs_b.values()),
        shared=sum(size for d, size in blobs_b.items() if d in blobs_a),
    )
    result.only_a = result.total_a - result.shared
    result.only_b = result.total_b - result.shared
    counter = FetchCounter()
    for path in sorted(set(files_a) | set(files_b)):
        fa, fb = files_a.get(path), files_b.get(path)
        if fa is None and fb is not None:
            added = FileDiff(path, "added", None, fb.size, None, fb.digest, kind=_kind(fb))
            result.files.append(added)
            continue
        if fb is None and fa is not None:
            removed = FileDiff(path, "removed", fa.size, None, fa.digest, None, kind=_kind(fa))
            result.files.append(removed)
            continue
        assert fa is not None and fb is not None
        shared = sum(
            b.size
            for b in {str(b.digest): b for b in fb.blobs}.values()
            if str(b.digest) in blobs_a
        )
        status = "unchanged" if fa.digest == fb.digest else "changed"
        entry = FileDiff(path, status, fa.size, fb.size, fa.digest, fb.digest, shared)
        entry.kind = "archive" if "archive" in (fa.kind, fb.kind) else "file"
        if status == "changed" and (fa.kind == "archive") != (fb.kind == "archive"):
            entry.note = (
                "stored as an archive in one version and as a file in the other: "
                "the stored bytes differ, the contents were not compared"
            )
        if (
            tensors
            and status == "changed"
            and fa.kind in _READABLE
            and fb.kind in _READABLE
            and PurePosixPath(path).suffix.lower() in _TENSOR_EXT
        ):
            da = describe_file(_source(target_a, fa, counter), path)
            db = describe_file(_source(target_b, fb, counter), path)
            if da.info is not None and db.info is not None:
                entry.tensors, entry.tensor_summary, entry.note = _tensor_diff(
                    fa, fb, da.info, db.info
                )
            else:
                entry.note = f"headers not readable: {da.error or db.error}"
        result.files.append(entry)
    result.bytes_fetched = counter.bytes
    return result
