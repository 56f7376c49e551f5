"""Read what every producer writes: which file each layer is, and how to write it out.

Recognised from the manifest alone (no blob is read):

``modelpack``
    ``artifactType``/config ``application/vnd.cncf.model.*`` (modelreg, modctl,
    KitOps in ModelPack mode). Layers ``application/vnd.cncf.model.<role>.v1.raw``
    are files named by ``org.cncf.model.filepath``; ``.tar``, ``.tar+gzip``,
    ``.tar+zstd`` are archives whose members are paths from the model root.
``modelpack-legacy``
    the same under ``application/vnd.cnai.model.*`` / ``org.cnai.model.filepath``
    (before mid-2025).
``kitops``
    ``application/vnd.kitops.modelkit.manifest.v1+json`` or config
    ``application/vnd.kitops.modelkit.config.v1+json`` (the Kitfile as JSON).
    Layers ``application/vnd.kitops.modelkit.<model|modelpart|dataset|code|docs>.v1.
    <tar|raw>[+gzip|+zstd]``: ``tar`` layers hold paths relative to the Kitfile's
    directory; ``raw`` layers are one file named by ``org.cncf.model.filepath``,
    possibly compressed.
``docker``
    config ``application/vnd.docker.ai.model.config.v0.1+json`` / ``v0.2+json``
    (Docker Model Runner). Layers name their file with ``org.cncf.model.filepath``
    (v0.2); without it (v0.1) the names Docker Model Runner itself uses:
    ``model.gguf`` or ``model-0000N-of-0000M.gguf``, likewise ``.safetensors``,
    ``model.mmproj``, ``template.jinja``, ``model.dduf``, and ``LICENSE``
    (``LICENSE-N`` when there are several). ``vnd.docker.ai.vllm.config.tar`` and
    ``vnd.docker.ai.dir.tar`` are archives extracted at the model root.
``oras``
    anything else (``oras push``, oras-py, Helm-free generic artifacts): files
    named by ``org.opencontainers.image.title``; a layer annotated
    ``io.deis.oras.content.unpack: "true"`` is a directory archive (tar+gzip)
    whose members all lie under its title, checked against
    ``io.deis.oras.content.digest`` (the digest of the tar). Layers without a
    title are skipped, as ``oras pull`` does. oras-py (0.2.x) marks a directory
    differently: it pushes it as one ``application/vnd.oci.image.layer.v1.tar+gzip``
    layer (its default for directories; files default to ``...v1.tar``) with only
    a title, the tar's members under the directory's name, and extracts every
    layer of that media type on pull. modelreg reads such a layer as a directory
    too, under the same rules as Go oras's (members all under the title, every
    archive check of :mod:`modelreg.model.archive`), unless its annotations say
    otherwise (``io.deis.oras.content.unpack`` present and not ``"true"``: a file,
    as Go oras reads it) or its title names an archive file (``.tar``,
    ``.tar.gz``, ``.tgz``, ``.gz``: a ``.tar.gz`` pushed as a file with that media
    type stays a file; a directory is named by its basename, not by an archive
    extension).

Parts of split files (``application/vnd.modelreg.weight.part.v1.raw``) are
recognised whatever the producer (:mod:`modelreg.model.annotations`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from modelreg.errors import FormatError
from modelreg.model import annotations as ann
from modelreg.model.paths import safe_relpath
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import Manifest

__all__ = [
    "ArchiveLayer",
    "LayerPlan",
    "PartRef",
    "RawLayer",
    "SplitFile",
    "detect_producer",
    "layer_mode",
    "layer_path",
    "plan_manifest",
]

KIT_ARTIFACT: Final = "application/vnd.kitops.modelkit.manifest.v1+json"
KIT_CONFIG: Final = "application/vnd.kitops.modelkit.config.v1+json"
KIT_LAYER_PREFIX: Final = "application/vnd.kitops.modelkit."
DOCKER_CONFIG_PREFIX: Final = "application/vnd.docker.ai.model.config."
DOCKER_LAYER_PREFIX: Final = "application/vnd.docker.ai."
ORAS_UNPACK: Final = "io.deis.oras.content.unpack"
ORAS_DIGEST: Final = "io.deis.oras.content.digest"
ORAS_PY_DIR_TYPE: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
"""oras-py's media type for a directory layer (``oras.defaults.default_blob_dir_media_type``)."""
_ARCHIVE_NAMES: Final = (".tar", ".tar.gz", ".tgz", ".gz")
MAX_PART_COUNT: Final = 100_000

_KIT_LAYER_RE: Final = re.compile(
    r"^application/vnd\.kitops\.modelkit\.(model|modelpart|dataset|code|docs)\.v1\."
    r"(tar|raw)(?:\+(gzip|zstd))?$"
)
_MODELPACK_LAYER_RE: Final = re.compile(
    r"^application/vnd\.(cncf|cnai)\.model\.([a-z]+(?:\.[a-z]+)?)\.v1\.(raw|tar)(?:\+(gzip|zstd))?$"
)
_DOCKER_ARCHIVES: Final = frozenset(
    {"application/vnd.docker.ai.vllm.config.tar", "application/vnd.docker.ai.dir.tar"}
)
_DOCKER_NAMES: Final = {
    "application/vnd.docker.ai.gguf.v3": ("model", ".gguf"),
    "application/vnd.docker.ai.safetensors": ("model", ".safetensors"),
    "application/vnd.docker.ai.mmproj": ("model", ".mmproj"),
    "application/vnd.docker.ai.gguf.v3.mmproj": ("model", ".mmproj"),
    "application/vnd.docker.ai.dduf": ("model", ".dduf"),
    "application/vnd.docker.ai.chat.template.jinja": ("template", ".jinja"),
    "application/vnd.docker.ai.license": ("LICENSE", ""),
    "application/vnd.docker.ai.gguf.v3.lora": ("adapter", ".gguf"),
}


def layer_path(desc: Descriptor) -> str | None:
    """The file path a layer declares, from the ModelPack, legacy or ORAS annotation."""
    a = desc.annotations
    return a.get(mt.ANN_FILEPATH) or a.get(mt.LEGACY_ANN_FILEPATH) or a.get(mt.ANN_TITLE) or None


def layer_mode(desc: Descriptor, key: str | None = None) -> int:
    """0o755 when the layer's file metadata says executable, else 0o644."""
    keys = (key,) if key else (mt.ANN_FILE_METADATA, mt.LEGACY_ANN_FILE_METADATA)
    for k in keys:
        raw = desc.annotations.get(k)
        if not raw:
            continue
        try:
            mode = json.loads(raw).get("mode")
        except (ValueError, TypeError, AttributeError):
            continue
        if isinstance(mode, int) and not isinstance(mode, bool):
            return 0o755 if mode & 0o111 else 0o644
    return 0o644


def _declared_size(desc: Descriptor) -> int | None:
    for k in (mt.ANN_FILE_METADATA, mt.LEGACY_ANN_FILE_METADATA):
        raw = desc.annotations.get(k)
        if not raw:
            continue
        try:
            size = json.loads(raw).get("size")
        except (ValueError, TypeError, AttributeError):
            continue
        if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
            return size
    return None


@dataclass(frozen=True, slots=True)
class RawLayer:
    """A layer that is one file, written as is (or decompressed when ``compressed``)."""

    index: int
    path: str
    """As the artifact names it (validated later)."""
    descriptor: Descriptor
    mode: int = 0o644
    compressed: bool = False
    declared_size: int | None = None


@dataclass(frozen=True, slots=True)
class ArchiveLayer:
    """A tar layer (maybe compressed) whose members are paths from the model root."""

    index: int
    descriptor: Descriptor
    label: str
    prefix: str | None = None
    """ORAS: every member must lie under this directory name."""
    tar_digest: Digest | None = None
    """ORAS: digest of the uncompressed tar."""
    declared_size: int | None = None


@dataclass(frozen=True, slots=True)
class PartRef:
    index: int
    offset: int
    descriptor: Descriptor


@dataclass(frozen=True, slots=True)
class SplitFile:
    """A file stored as parts (``--split``): reassembled, then checked whole."""

    path: str
    size: int
    digest: Digest
    mode: int
    parts: tuple[PartRef, ...]

    @property
    def descriptor(self) -> Descriptor:
        """The file as one blob (what its layer would be unsplit)."""
        return Descriptor(mt.model_layer("weight"), self.digest, self.size)


@dataclass
class LayerPlan:
    """How the layers of one manifest become files."""

    producer: str
    raw: list[RawLayer] = field(default_factory=list)
    archives: list[ArchiveLayer] = field(default_factory=list)
    split: list[SplitFile] = field(default_factory=list)
    skipped: list[tuple[Descriptor, str]] = field(default_factory=list)

    @property
    def blobs(self) -> list[Descriptor]:
        """Every layer the plan reads."""
        out = [r.descriptor for r in self.raw] + [a.descriptor for a in self.archives]
        out += [p.descriptor for s in self.split for p in s.parts]
        return out


def _oras_py_directory(layer: Descriptor) -> bool:
    """Whether an ORAS layer is a directory as oras-py pushes it (see the module notes)."""
    title = layer.annotations.get(mt.ANN_TITLE)
    return (
        layer.media_type == ORAS_PY_DIR_TYPE
        and ORAS_UNPACK not in layer.annotations
        and bool(title)
        and not (title or "").lower().endswith(_ARCHIVE_NAMES)
    )


def detect_producer(manifest: Manifest) -> str:
    art = manifest.artifact_type
    cfg = manifest.config.media_type
    if art == mt.MODEL_ARTIFACT or cfg == mt.MODEL_CONFIG:
        return "modelpack"
    if art == mt.LEGACY_MODEL_ARTIFACT or cfg == mt.LEGACY_MODEL_CONFIG:
        return "modelpack-legacy"
    if art == KIT_ARTIFACT or cfg == KIT_CONFIG:
        return "kitops"
    if cfg.startswith(DOCKER_CONFIG_PREFIX):
        return "docker"
    return "oras"


def _int(desc: Descriptor, key: str, where: str) -> int:
    raw = desc.annotations.get(key, "")
    if not raw.isdigit() or len(raw) > 20:
        raise FormatError(f"{where}: annotation {key} is {raw!r}, not a non-negative integer")
    return int(raw)


def _plan_parts(layers: Sequence[tuple[int, Descriptor]]) -> list[SplitFile]:
    groups: dict[str, list[tuple[int, Descriptor]]] = {}
    for i, desc in layers:
        path = desc.annotations.get(ann.ANN_PART_PATH)
        if not path:
            raise FormatError(f"layer {i} is a file part but names no {ann.ANN_PART_PATH}")
        groups.setdefault(path, []).append((i, desc))
    out = []
    for path, members in groups.items():
        where = f"parts of {path!r}"
        first = members[0][1]
        count = _int(first, ann.ANN_PART_COUNT, where)
        size = _int(first, ann.ANN_FILE_SIZE, where)
        try:
            digest = Digest.parse(first.annotations.get(ann.ANN_FILE_DIGEST, ""))
        except ValueError as exc:
            raise FormatError(f"{where}: invalid {ann.ANN_FILE_DIGEST}") from exc
        if count < 1 or count > MAX_PART_COUNT or count != len(members):
            raise FormatError(
                f"{where}: the manifest has {len(members)} parts, they declare {count}",
                hint="the artifact is incomplete or malformed",
            )
        refs: dict[int, PartRef] = {}
        for i, desc in members:
            if (
                _int(desc, ann.ANN_PART_COUNT, where) != count
                or _int(desc, ann.ANN_FILE_SIZE, where) != size
                or desc.annotations.get(ann.ANN_FILE_DIGEST) != str(digest)
            ):
                raise FormatError(f"{where}: layer {i} disagrees on the whole file")
            index = _int(desc, ann.ANN_PART_INDEX, where)
            if index in refs or index >= count:
                raise FormatError(f"{where}: part index {index} is duplicated or out of range")
            refs[index] = PartRef(index, _int(desc, ann.ANN_PART_OFFSET, where), desc)
        ordered = tuple(refs[k] for k in range(count))
        expected = 0
        for ref in ordered:
            if ref.offset != expected:
                raise FormatError(
                    f"{where}: part {ref.index} starts at {ref.offset}, expected {expected} "
                    "(parts must cover the file back to back)",
                    hint="the artifact is malformed or hostile; refused",
                )
            expected += ref.descriptor.size
        if expected != size:
            raise FormatError(f"{where}: the parts hold {expected} bytes, the file has {size}")
        mode = layer_mode(ordered[0].descriptor, ann.ANN_FILE_METADATA)
        out.append(SplitFile(path, size, digest, mode, ordered))
    return out


def plan_manifest(manifest: Manifest) -> LayerPlan:
    """Classify every layer of ``manifest`` (paths are validated by the caller)."""
    producer = detect_producer(manifest)
    plan = LayerPlan(producer)
    parts: list[tuple[int, Descriptor]] = []
    docker_unnamed: list[tuple[int, Descriptor]] = []
    for i, layer in enumerate(manifest.layers):
        mtype = layer.media_type
        where = f"layer {i} ({layer.digest.short}, {mtype})"
        if mtype == ann.PART_MEDIA_TYPE:
            parts.append((i, layer))
            continue
        path = layer_path(layer)
        oras_py_dir = producer == "oras" and _oras_py_directory(layer)
        if layer.annotations.get(ORAS_UNPACK) == "true" or oras_py_dir:
            title = layer.annotations.get(mt.ANN_TITLE)
            if not title:
                raise FormatError(f"{where} is an ORAS directory without a title")
            digest = None
            if ORAS_DIGEST in layer.annotations:
                try:
                    digest = Digest.parse(layer.annotations[ORAS_DIGEST])
                except ValueError as exc:
                    raise FormatError(f"{where}: invalid {ORAS_DIGEST}") from exc
            prefix = safe_relpath(title.rstrip("/"), f"{where} title")
            plan.archives.append(ArchiveLayer(i, layer, f"directory {title!r}", prefix, digest))
            continue
        if producer in ("modelpack", "modelpack-legacy"):
            match = _MODELPACK_LAYER_RE.match(mtype)
            if match and match.group(3) == "tar":
                plan.archives.append(
                    ArchiveLayer(
                        i,
                        layer,
                        f"archive {path or layer.digest.short!r}",
                        None,
                        None,
                        _declared_size(layer),
                    )
                )
                continue
        elif producer == "kitops":
            match = _KIT_LAYER_RE.match(mtype)
            if match and match.group(2) == "tar":
                plan.archives.append(
                    ArchiveLayer(i, layer, f"{match.group(1)} layer {layer.digest.short}")
                )
                continue
            if match and match.group(3):
                if path is None:
                    raise FormatError(f"{where} is a compressed file layer without a path")
                plan.raw.append(
                    RawLayer(i, path, layer, layer_mode(layer), True, _declared_size(layer))
                )
                continue
        elif producer == "docker":
            if mtype in _DOCKER_ARCHIVES:
                plan.archives.append(ArchiveLayer(i, layer, f"archive {mtype.rsplit('.', 2)[-2]}"))
                continue
            if path is None:
                docker_unnamed.append((i, layer))
                continue
        if path is None:
            if producer == "oras":
                plan.skipped.append((layer, "no org.opencontainers.image.title"))
                continue
            raise FormatError(
                f"{where} names no file path",
                hint="the artifact lacks org.cncf.model.filepath / org.opencontainers.image.title",
            )
        plan.raw.append(RawLayer(i, path, layer, layer_mode(layer)))
    plan.split = _plan_parts(parts)
    plan.raw += _docker_names(docker_unnamed, plan)
    plan.raw.sort(key=lambda r: r.index)
    return plan


def _docker_names(layers: Sequence[tuple[int, Descriptor]], plan: LayerPlan) -> list[RawLayer]:
    by_type: dict[str, list[tuple[int, Descriptor]]] = {}
    for i, desc in layers:
        if desc.media_type not in _DOCKER_NAMES:
            plan.skipped.append((desc, f"Docker layer type {desc.media_type} names no file"))
            continue
        by_type.setdefault(desc.media_type, []).append((i, desc))
    out = []
    for mtype, members in by_type.items():
        stem, ext = _DOCKER_NAMES[mtype]
        n = len(members)
        for k, (i, desc) in enumerate(members, start=1):
            if n == 1:
                name = f"{stem}{ext}"
            elif stem == "LICENSE":
                name = f"LICENSE-{k}"
            else:
                name = f"{stem}-{k:05d}-of-{n:05d}{ext}"
            out.append(RawLayer(i, name, desc))
    return out
