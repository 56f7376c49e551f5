"""Turn a model directory into a CNCF ModelPack artifact (FORMATS.md §2).

One ``raw`` layer per file, with the role media type guessed from its name,
``org.cncf.model.filepath``, ``org.opencontainers.image.title`` and a
deterministic ``org.cncf.model.file.metadata+json``. Nothing machine-specific
goes into the manifest (no mtimes, owners or creation times unless asked for),
so the same directory gives the same manifest digest on any machine.

Packing reads each file once to hash it (reusing cached digests) and keeps no
file content in memory: :meth:`PackedModel.as_target` serves the layers
straight from the files, verified, to the copy engine.
"""

from __future__ import annotations

import fnmatch
import io
import os
import stat
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelreg.content.base import PushResult, VerifyingReader
from modelreg.errors import InvalidInputError, NotFoundError, UnsafeContentError
from modelreg.events import Event, ProgressCallback, emit
from modelreg.model.digests import DigestCache
from modelreg.model.roles import ROLE_ORDER, guess_role
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import Manifest, canonical_json

__all__ = [
    "DEFAULT_IGNORE",
    "ModelMetadata",
    "PackedFile",
    "PackedModel",
    "pack_directory",
    "scan_directory",
]

DEFAULT_IGNORE = (
    ".git",
    ".git/*",
    ".hg",
    ".svn",
    "__pycache__",
    "*/__pycache__",
    ".DS_Store",
    "*/.DS_Store",
    ".ipynb_checkpoints",
    ".cache",
    ".cache/*",
)
EPOCH = "1970-01-01T00:00:00Z"
TYPEFLAG_REGULAR = 48  # tar.TypeReg, '0'


@dataclass(frozen=True)
class ModelMetadata:
    """The ``descriptor`` part of the ModelPack config, and extra ``config`` fields."""

    name: str | None = None
    version: str | None = None
    family: str | None = None
    authors: tuple[str, ...] = ()
    licenses: tuple[str, ...] = ()
    vendor: str | None = None
    title: str | None = None
    description: str | None = None
    source_url: str | None = None
    doc_url: str | None = None
    revision: str | None = None
    datasets_url: tuple[str, ...] = ()
    created_at: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)

    def descriptor_dict(self, default_name: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.created_at:
            out["createdAt"] = self.created_at
        if self.authors:
            out["authors"] = list(self.authors)
        if self.family:
            out["family"] = self.family
        out["name"] = self.name or default_name
        for key, value in (
            ("docURL", self.doc_url),
            ("sourceURL", self.source_url),
        ):
            if value:
                out[key] = value
        if self.datasets_url:
            out["datasetsURL"] = list(self.datasets_url)
        for key, value in (
            ("version", self.version),
            ("revision", self.revision),
            ("vendor", self.vendor),
        ):
            if value:
                out[key] = value
        if self.licenses:
            out["licenses"] = list(self.licenses)
        for key, value in (("title", self.title), ("description", self.description)):
            if value:
                out[key] = value
        return out


@dataclass(frozen=True)
class PackedFile:
    path: str
    """Relative POSIX path inside the model directory."""
    source: Path
    descriptor: Descriptor


@dataclass(frozen=True)
class PackedModel:
    manifest: Manifest
    config: bytes
    files: tuple[PackedFile, ...]

    @property
    def descriptor(self) -> Descriptor:
        return self.manifest.descriptor()

    def as_target(self) -> PackedTarget:
        return PackedTarget(self)


class PackedTarget:
    """Read-only target serving a packed model from memory (manifest, config) and files."""

    def __init__(self, model: PackedModel) -> None:
        self._model = model
        self._small: dict[Digest, bytes] = {
            model.manifest.digest: model.manifest.raw,
            model.manifest.config.digest: model.config,
        }
        self._files: dict[Digest, Path] = {f.descriptor.digest: f.source for f in model.files}

    def fetch(self, desc: Descriptor) -> VerifyingReader:
        data = self._small.get(desc.digest)
        if data is not None:
            return VerifyingReader(io.BytesIO(data), desc)
        path = self._files.get(desc.digest)
        if path is None:
            raise NotFoundError(f"blob {desc.digest} is not part of this model")
        return VerifyingReader(
            open(path, "rb"), desc, what=f"file {str(path)!r} (changed since it was hashed?)"
        )

    def fetch_range(self, desc: Descriptor, offset: int, length: int) -> bytes:
        with self.fetch(desc) as reader:
            reader.read(offset)
            return reader.read(length)

    def exists(self, desc: Descriptor) -> bool:
        return desc.digest in self._small or desc.digest in self._files

    def resolve(self, reference: str) -> Descriptor:
        return self._model.descriptor

    def referrers(self, desc: Descriptor, artifact_type: str | None = None) -> list[Descriptor]:
        return []

    def tags(self) -> Iterator[str]:
        return iter(())

    def push(self, desc: Descriptor, source: object) -> PushResult:  # pragma: no cover
        raise InvalidInputError("a packed directory is read-only")


def _check_rel_path(rel: str, root: Path) -> str:
    rel = unicodedata.normalize("NFC", rel)
    if "\\" in rel or "\x00" in rel or any(ord(c) < 0x20 for c in rel):
        raise UnsafeContentError(
            f"file name {rel!r} in {str(root)!r} contains a backslash or control character",
            hint="rename the file; such names are refused because they are unsafe on other systems",
        )
    return rel


def _ignored(rel: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) for p in patterns)


def scan_directory(
    root: str | os.PathLike[str],
    *,
    ignore: Sequence[str] = DEFAULT_IGNORE,
    allow_outside_links: bool = False,
) -> list[tuple[str, Path]]:
    """List the regular files of a model directory as (relative POSIX path, real path).

    Symlinks are followed only when they point inside ``root`` (or anywhere with
    ``allow_outside_links``); devices, FIFOs and sockets are refused.
    """
    base = Path(root)
    if not base.exists():
        raise InvalidInputError(
            f"model directory {str(root)!r} does not exist", hint="check the path"
        )
    if not base.is_dir():
        raise InvalidInputError(
            f"{str(root)!r} is not a directory",
            hint="push takes a directory holding the model files",
        )
    real_root = base.resolve()
    out: list[tuple[str, Path]] = []
    seen: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        rel_dir = os.path.relpath(dirpath, base)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        kept_dirs = []
        for d in sorted(dirnames):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if _ignored(rel, ignore):
                continue
            full = Path(dirpath) / d
            if full.is_symlink():
                # A linked directory: treat its files like linked files.
                filenames.append(d)
                continue
            kept_dirs.append(d)
        dirnames[:] = kept_dirs
        for name in sorted(filenames):
            rel = _check_rel_path(f"{rel_dir}/{name}" if rel_dir else name, base)
            if _ignored(rel, ignore):
                continue
            full = Path(dirpath) / name
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                target = full.resolve()
                inside = target == real_root or real_root in target.parents
                if not inside and not allow_outside_links:
                    raise UnsafeContentError(
                        f"{rel!r} is a symlink pointing outside the model directory "
                        f"(to {str(target)!r})",
                        hint="copy the file into the directory, or pass --allow-outside-links "
                        "if you trust where it points",
                    )
                if not target.exists():
                    raise InvalidInputError(
                        f"{rel!r} is a dangling symlink", hint="fix or remove it"
                    )
                if target.is_dir():
                    for sub_rel, sub_real in scan_directory(
                        full, ignore=ignore, allow_outside_links=allow_outside_links
                    ):
                        out.append((f"{rel}/{sub_rel}", sub_real))
                    continue
                st = target.stat()
                full = target
            if not stat.S_ISREG(st.st_mode):
                raise UnsafeContentError(
                    f"{rel!r} is not a regular file (device, FIFO or socket)",
                    hint="remove it from the model directory",
                )
            key = rel.casefold()
            if key in seen:
                raise UnsafeContentError(
                    f"{rel!r} and {seen[key]!r} differ only in case",
                    hint="rename one: they would collide on case-insensitive filesystems",
                )
            seen[key] = rel
            out.append((rel, full))
    out.sort(key=lambda item: item[0])
    return out


def file_metadata(name: str, size: int, executable: bool) -> str:
    """The deterministic ``org.cncf.model.file.metadata+json`` annotation value."""
    meta = {
        "name": name,
        "mode": 0o755 if executable else 0o644,
        "uid": 0,
        "gid": 0,
        "size": size,
        "mtime": EPOCH,
        "typeflag": TYPEFLAG_REGULAR,
    }
    return canonical_json(meta).decode()


def _format_from_files(paths: Sequence[str]) -> str | None:
    exts = {Path(p).suffix.lower() for p in paths}
    for ext, fmt in (
        (".safetensors", "safetensors"),
        (".gguf", "gguf"),
        (".onnx", "onnx"),
        (".pt", "pytorch"),
        (".pth", "pytorch"),
        (".bin", "pytorch"),
        (".ckpt", "pytorch"),
        (".h5", "keras"),
        (".keras", "keras"),
        (".tflite", "tflite"),
        (".pkl", "pickle"),
        (".npz", "numpy"),
    ):
        if ext in exts:
            return fmt
    return None


Analyzer = Callable[[Sequence["PackedFile"]], Mapping[str, Any]]
"""Computes extra ModelPack ``config`` fields (architecture, paramSize, ...) from the files."""


def pack_directory(
    root: str | os.PathLike[str],
    *,
    metadata: ModelMetadata | None = None,
    digest_cache: DigestCache | None = None,
    ignore: Sequence[str] = DEFAULT_IGNORE,
    include: Sequence[str] = (),
    allow_outside_links: bool = False,
    annotations: Mapping[str, str] | None = None,
    analyzer: Analyzer | None = None,
    progress: ProgressCallback | None = None,
    workers: int = 2,
) -> PackedModel:
    """Describe a directory as a ModelPack artifact without copying any file."""
    metadata = metadata or ModelMetadata()
    files = scan_directory(root, ignore=ignore, allow_outside_links=allow_outside_links)
    if include:
        files = [f for f in files if any(fnmatch.fnmatchcase(f[0], p) for p in include)]
    if not files:
        raise InvalidInputError(
            f"model directory {str(root)!r} holds no files to pack",
            hint="a ModelPack artifact needs at least one file",
        )
    cache = digest_cache or DigestCache(None)

    def digest_one(item: tuple[str, Path]) -> PackedFile:
        rel, real = item
        emit(progress, Event("message", f"hashing {rel}"))
        digest, size = cache.digest(real)
        guess = guess_role(rel)
        executable = bool(os.stat(real).st_mode & 0o111)
        ann = {
            mt.ANN_FILEPATH: rel,
            mt.ANN_FILE_METADATA: file_metadata(Path(rel).name, size, executable),
        }
        if guess.untested:
            ann[mt.ANN_UNTESTED] = "true"
        ann[mt.ANN_TITLE] = rel
        desc = Descriptor(mt.model_layer(guess.role), digest, size, annotations=ann)
        return PackedFile(rel, real, desc)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        packed = list(pool.map(digest_one, files))

    def order(f: PackedFile) -> tuple[int, str]:
        role = f.descriptor.media_type[len(mt.MODEL_LAYER_PREFIX) :].rsplit(".v1.", 1)[0]
        return (ROLE_ORDER.index(role), f.path)

    packed.sort(key=order)
    config_fields: dict[str, Any] = {}
    fmt = _format_from_files([f.path for f in packed])
    if fmt:
        config_fields["format"] = fmt
    if analyzer is not None:
        config_fields.update(analyzer(packed))
    config_fields.update(metadata.config)
    config_doc = {
        "descriptor": metadata.descriptor_dict(Path(root).resolve().name or "model"),
        "config": config_fields,
        "modelfs": {"type": "layers", "diffIds": [str(f.descriptor.digest) for f in packed]},
    }
    config_bytes = canonical_json(config_doc)
    manifest = Manifest(
        config=Descriptor.for_bytes(mt.MODEL_CONFIG, config_bytes),
        layers=tuple(f.descriptor for f in packed),
        artifact_type=mt.MODEL_ARTIFACT,
        annotations=dict(annotations or {}),
    )
    return PackedModel(manifest=manifest, config=config_bytes, files=tuple(packed))
