"""Which file each layer of an artifact is: the one answer pull, inspect, diff and open share.

``pull`` plans its output with :func:`~modelreg.model.producers.plan_manifest`
(every producer's naming rule lives there) and validates each path with
:func:`~modelreg.model.paths.safe_relpath`. :func:`layer_files` is that same
plan, validated the same way and claimed in the same
:class:`~modelreg.model.archive.PathClaims`, flattened into one row per file or
layer, for the readers that never write: ``Client.inspect``, ``Client.diff``
(:mod:`modelreg.model.diff`) and the lazy handle
(:func:`modelreg.lazy._files.model_files`). No reader keeps a naming rule of
its own, so none can name a file differently from the file pull writes.

Kinds (:data:`LayerKind`):

``file``
    one layer is one file, stored as is: readable by byte range.
``compressed``
    one layer is one gzip or zstd compressed file (KitOps ``raw+gzip``):
    ``pull`` decompresses it. Its bytes cannot be read by range, so the lazy
    handle does not serve it (its notes say to pull it) rather than pretend.
``split``
    one file stored as parts (``--split``), each part a layer.
``archive``
    a tar layer: its files are known only once it is read, which only ``pull``
    does (every archive rule of :mod:`modelreg.model.archive`). Readers name
    what the archive holds, from the model root:

    * ORAS: the title (every member must lie under it);
    * ModelPack, modctl, KitOps with annotations: ``org.cncf.model.filepath``
      (``org.cnai.model.filepath``);
    * KitOps without annotations: the path of the Kitfile entry (the config)
      whose ``digest`` is the layer's (``model``, ``model.parts[]``,
      ``code[]``, ``datasets[]``, ``docs[]``); Kitfile paths are relative to
      the Kitfile's directory, as the tar's members are;
    * otherwise ``.``: the archive is extracted at the model root (Docker
      ``vllm.config.tar`` and ``dir.tar``, a KitOps layer no Kitfile entry
      names).

    That name is only a name: pull never writes by it, so one that is not a
    safe relative path is replaced by ``.`` instead of failing the reader.
``skipped``
    a layer pull skips (an ORAS layer without a title, a Docker layer type that
    names no file): no path, the reason in ``note``.

The Kitfile names archives only. A raw KitOps layer is named by its
annotation, exactly as pull names it (pull does not read the config), so a raw
layer without one is refused by every reader alike.

Nothing here reads a layer; :func:`read_config` reads the config, and only for
producers that keep paths there (:func:`config_names_paths`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

from modelreg.content.base import ReadOnlyTarget, fetch_bytes
from modelreg.errors import UnsafeContentError
from modelreg.model import annotations as ann
from modelreg.model import grouping
from modelreg.model.archive import PathClaims
from modelreg.model.paths import safe_relpath
from modelreg.model.producers import (
    ArchiveLayer,
    LayerPlan,
    SplitFile,
    detect_producer,
    layer_mode,
    layer_path,
    plan_manifest,
)
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import Manifest

__all__ = [
    "ROOT",
    "GroupedFile",
    "LayerFile",
    "LayerKind",
    "config_names_paths",
    "group_members",
    "kitfile_paths",
    "layer_files",
    "read_config",
]

LayerKind = Literal["file", "compressed", "split", "archive", "skipped"]
ROOT: Final = "."
"""The name of an archive extracted at the model root."""
MAX_CONFIG_BYTES: Final = 4 * 1024 * 1024
_KITFILE_LISTS: Final = ("code", "datasets", "docs")


@dataclass(frozen=True, slots=True)
class LayerFile:
    """One file of the artifact, or one layer that is not a single file."""

    path: str | None
    """As pull writes it (validated); for an archive, what it holds; None when skipped."""
    kind: LayerKind
    digest: Digest
    """The file's digest (the whole file's for a split file), else the layer's."""
    size: int
    """The file's size for ``file`` and ``split``; the stored (layer) size otherwise."""
    media_type: str
    mode: int
    blobs: tuple[Descriptor, ...]
    """The layers holding it (the parts, in order, for a split file)."""
    index: int
    """Position of its first layer in the manifest."""
    note: str = ""
    """``archive``: what it is (``model layer sha256:…``, ``directory 'x'``);
    ``skipped``: why pull skips it."""
    split: SplitFile | None = None
    declared_size: int | None = None
    """``compressed``/``archive``: the uncompressed size the producer declares, if any."""

    @property
    def readable(self) -> bool:
        """Whether its bytes can be read by range without pulling (``file``, ``split``)."""
        return self.kind in ("file", "split")

    @property
    def descriptor(self) -> Descriptor:
        """The file as one blob (its layer; a split file's whole-file descriptor)."""
        return self.split.descriptor if self.split is not None else self.blobs[0]


class GroupedFile(NamedTuple):
    """One file inside a small-file group layer, as the layer's member table (covered by
    the manifest digest) describes it: what ``inspect`` and ``diff`` list instead of the
    group, and what ``pull`` writes at that path. A named tuple for the reason
    :class:`~modelreg.model.grouping.TableRow` is one: one per file of a listing."""

    path: str
    size: int
    sha256: str
    """Its digest's hex, from the table."""
    mode: int
    group: LayerFile
    """The group layer holding it (kind ``archive``)."""

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256}"


def group_members(files: list[LayerFile]) -> dict[int, list[GroupedFile]]:
    """The files of every small-file group among ``files``, by the group's position in
    ``files``. Members are claimed with every other file, so a table naming a path that
    another layer already writes (or a directory of one) is refused, as pull refuses it.
    Raises what :func:`~modelreg.model.grouping.group_rows` raises on a malformed table."""
    out: dict[int, list[GroupedFile]] = {}
    for i, f in enumerate(files):
        if f.kind != "archive":
            continue
        rows = grouping.group_rows(f.blobs[0])
        if rows is not None:
            out[i] = [GroupedFile(r.path, r.size, r.sha256, r.mode, f) for r in rows]
    if out:
        claims = PathClaims()
        claims.claim_files(
            (
                f.path
                for f in files
                if f.kind in ("file", "compressed", "split") and f.path is not None
            ),
            "file",
        )
        for members in out.values():
            claims.claim_files((m.path for m in members), "group member")
    return out


def config_names_paths(manifest: Manifest) -> bool:
    """Whether the producer keeps layer paths in the config (KitOps: the Kitfile)."""
    return detect_producer(manifest) == "kitops"


def read_config(target: ReadOnlyTarget, manifest: Manifest) -> dict[str, Any] | None:
    """The config as JSON when :func:`config_names_paths`, else None (nothing read).

    A config that is too large or not a JSON object is None too: the names it
    would give fall back to :data:`ROOT`, and pull does not need them.
    """
    if not config_names_paths(manifest) or manifest.config.size > MAX_CONFIG_BYTES:
        return None
    raw = fetch_bytes(target, manifest.config, limit=MAX_CONFIG_BYTES, what="config")
    try:
        loaded = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def kitfile_paths(kitfile: Mapping[str, Any] | None) -> dict[str, str]:
    """Layer digest → path, from every Kitfile entry that names both."""
    out: dict[str, str] = {}
    if not kitfile:
        return out
    entries: list[Any] = []
    model = kitfile.get("model")
    if isinstance(model, dict):
        entries.append(model)
        parts = model.get("parts")
        if isinstance(parts, list):
            entries += parts
    for key in _KITFILE_LISTS:
        listed = kitfile.get(key)
        if isinstance(listed, list):
            entries += listed
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        digest, path = entry.get("digest"), entry.get("path")
        if isinstance(digest, str) and isinstance(path, str) and path:
            out.setdefault(digest, path)
    return out


def _archive_name(a: ArchiveLayer, plan: LayerPlan, kit: Mapping[str, str]) -> str:
    if a.prefix is not None:
        return a.prefix
    raw = layer_path(a.descriptor)
    if raw is None and plan.producer == "kitops":
        raw = kit.get(str(a.descriptor.digest))
    if not raw or raw.strip("/") in ("", "."):
        return ROOT
    try:
        return safe_relpath(raw.rstrip("/"), "archive name")
    except UnsafeContentError:
        return ROOT


def layer_files(manifest: Manifest, config: Mapping[str, Any] | None = None) -> list[LayerFile]:
    """Every file and non-file layer of ``manifest``, in layer order (see the module notes).

    ``config``: the parsed config, for producers that name layers there (KitOps);
    without it their archives are named :data:`ROOT`. Raises what pull's planner
    raises on a malformed or hostile manifest (unsafe or colliding paths, bad parts).
    """
    plan = plan_manifest(manifest)
    index_of = {id(layer): i for i, layer in enumerate(manifest.layers)}
    claims = PathClaims()
    out: list[LayerFile] = []
    for r in plan.raw:
        path = safe_relpath(r.path, f"layer {r.index} path")
        claims.claim_file(path, f"layer {r.path!r}")
        d = r.descriptor
        kind: LayerKind = "compressed" if r.compressed else "file"
        out.append(
            LayerFile(
                path,
                kind,
                d.digest,
                d.size,
                d.media_type,
                r.mode,
                (d,),
                r.index,
                declared_size=r.declared_size,
            )
        )
    for s in plan.split:
        path = safe_relpath(s.path, "split file path")
        claims.claim_file(path, f"split file {s.path!r}")
        blobs = tuple(p.descriptor for p in s.parts)
        first = min(index_of[id(b)] for b in blobs)
        out.append(
            LayerFile(
                path, "split", s.digest, s.size, ann.PART_MEDIA_TYPE, s.mode, blobs, first, split=s
            )
        )
    kit = kitfile_paths(config) if plan.producer == "kitops" else {}
    for a in plan.archives:
        d = a.descriptor
        out.append(
            LayerFile(
                _archive_name(a, plan, kit),
                "archive",
                d.digest,
                d.size,
                d.media_type,
                layer_mode(d),
                (d,),
                a.index,
                a.label,
                declared_size=a.declared_size,
            )
        )
    for d, why in plan.skipped:
        out.append(
            LayerFile(
                None,
                "skipped",
                d.digest,
                d.size,
                d.media_type,
                layer_mode(d),
                (d,),
                index_of[id(d)],
                why,
            )
        )
    out.sort(key=lambda f: f.index)
    return out
