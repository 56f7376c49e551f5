"""Turn a model directory into a CNCF ModelPack artifact (FORMATS.md §2).

One ``raw`` layer per file, with the role media type guessed from its name,
``org.cncf.model.filepath``, ``org.opencontainers.image.title`` and a
deterministic ``org.cncf.model.file.metadata+json``. Nothing machine-specific
goes into the manifest (no mtimes, owners or creation times unless asked for),
so the same directory gives the same manifest digest on any machine.

What is read from the model itself (headers only, never weights): the ModelPack
config fields of :func:`modelreg.model.metadata.analyze` (the default
``analyzer``), and whether each weight file is pickle-based (such layers carry
``dev.modelreg.file.unsafe: "pickle"``). What the packager says comes from
``modelreg.toml`` or a KitOps ``Kitfile`` in the directory, then from the
``metadata`` argument (flags), each overriding the previous; a Hugging Face
cache snapshot contributes its repository name and revision.

With ``split=True`` big safetensors/GGUF files become tensor-aligned parts
(:mod:`modelreg.model.split`, layout in :mod:`modelreg.model.annotations`).

Small files (below ``grouping.threshold``, default 1 MiB) of a (role, top
directory) bucket holding at least ``grouping.min_files`` of them travel as
deterministic tar layers instead (:mod:`modelreg.model.grouping`: the rule, the
tar, why). Groups are decided from names, sizes and roles only, so the layer
count and an estimate of the manifest size are checked after a ``stat`` of every
file and before anything is hashed. A grouped file is still a
:class:`PackedFile` (its own digest and size, for verification and statements),
but its :attr:`PackedFile.layers` is empty: its bytes are in a
:class:`PackedGroup`. Pickle-based files are never grouped (their layer carries
the ``unsafe`` annotation policies read). Grouped files get no chunk table: the
lazy reader names their group and says to pull it.

Packing reads each file once to hash it (reusing cached digests) and keeps no
file content in memory: :meth:`PackedModel.as_target` serves the layers
straight from the files, verified, to the copy engine.

Anything else that needs every byte of every file rides that one read: with
``chunking`` (a function choosing a :class:`~modelreg.model.digests.ChunkGeometry`
per file), the digest pass also hashes each file's chunks
(:meth:`DigestCache.digest_with_chunks`, cached with the digest), the tables land
in :attr:`PackedFile.chunks`, and ``annotator`` turns the hashed files into
manifest annotations before the manifest is built. That is how ``push`` names
the chunk index of :mod:`modelreg.lazy` in the manifest without reading a file
twice; this module knows neither the index format nor the geometry rules.
"""

from __future__ import annotations

import fnmatch
import functools
import io
import os
import stat
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from modelreg.content.base import BlobSource, PushResult, VerifyingReader
from modelreg.content.copies import FileIdentity
from modelreg.errors import (
    InvalidInputError,
    ModelRegError,
    NotFoundError,
    SizeLimitError,
    UnsafeContentError,
)
from modelreg.events import Event, ProgressCallback, emit
from modelreg.model import annotations as ann
from modelreg.model import grouping as grp
from modelreg.model import split as splitting
from modelreg.model.digests import ChunkGeometry, ChunkTable, DigestCache
from modelreg.model.formats import (
    PREFIX_READ,
    UNSAFE_EXTENSIONS,
    FileSource,
    ModelFileInfo,
    detect_format,
    inspect_file,
    is_pickle_based,
)
from modelreg.model.hf import HFSnapshot, detect_snapshot
from modelreg.model.metadata import (
    ModelMetadata,
    PackagingFile,
    analyze,
    load_packaging_file,
    readme_licenses,
)
from modelreg.model.roles import ROLE_ORDER, RoleGuess, guess_role
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import MAX_LAYERS, Manifest, canonical_json
from modelreg.units import parse_size

__all__ = [
    "DEFAULT_IGNORE",
    "Analyzer",
    "Annotator",
    "BlobReady",
    "Chunking",
    "GroupReady",
    "HashStarting",
    "ModelMetadata",
    "PackedFile",
    "PackedGroup",
    "PackedModel",
    "PackedPart",
    "group_source",
    "pack_directory",
    "scan_directory",
    "slice_source",
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
_T = TypeVar("_T")
_R = TypeVar("_R")
EPOCH = "1970-01-01T00:00:00Z"
TYPEFLAG_REGULAR = 48  # tar.TypeReg, '0'
_PARSED_ROLES = frozenset({"weight"})


@dataclass(frozen=True, slots=True)
class PackedPart:
    """One layer of a split file: bytes ``[offset, offset + descriptor.size)``."""

    descriptor: Descriptor
    offset: int


@dataclass(frozen=True, slots=True)
class PackedFile:
    path: str
    """Relative POSIX path inside the model directory."""
    source: Path
    descriptor: Descriptor
    """The file as one blob: its layer, or (when split) what its layer would be."""
    info: ModelFileInfo | None = None
    """The parsed header (weights only), or None when not parsed or not parseable."""
    unsafe: bool = False
    """Pickle-based: loading it runs code."""
    parts: tuple[PackedPart, ...] = ()
    """When split: the layers holding the file, in order."""
    identity: FileIdentity | None = None
    """The file as it was just before it was hashed (None if it could not be stat'ed)."""
    chunks: ChunkTable | None = None
    """The whole file's chunk digests, when packing was asked for them (``chunking``)."""
    grouped: bool = False
    """Its bytes travel in a :class:`PackedGroup` (no layer of its own)."""

    def changed(self) -> bool:
        """Whether the file is no longer the one that was hashed."""
        return self.identity is None or FileIdentity.of_path(self.source) != self.identity

    @property
    def size(self) -> int:
        return self.descriptor.size

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        if self.grouped:
            return ()
        return tuple(p.descriptor for p in self.parts) if self.parts else (self.descriptor,)


@dataclass(frozen=True, slots=True)
class PackedGroup:
    """Small files of one role and top directory, as one tar layer."""

    descriptor: Descriptor
    members: tuple[grp.Member, ...]

    @property
    def path(self) -> str:
        """Its first member's path (where it sorts among layers)."""
        return self.members[0].path

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        return (self.descriptor,)


@dataclass(frozen=True)
class PackedModel:
    manifest: Manifest
    config: bytes
    files: tuple[PackedFile, ...]
    warnings: tuple[str, ...] = ()
    groups: tuple[PackedGroup, ...] = ()

    @property
    def descriptor(self) -> Descriptor:
        return self.manifest.descriptor()

    def as_target(self) -> PackedTarget:
        return PackedTarget(self)


class _Slice(io.RawIOBase):
    """``length`` bytes of a file from ``offset`` (then EOF)."""

    def __init__(self, path: Path, offset: int, length: int) -> None:
        super().__init__()
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self._f.seek(offset)
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._left <= 0 or not len(view):
            return 0
        n = self._f.readinto(view[: min(len(view), self._left)]) or 0
        self._left -= n
        return n

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            super().close()


def slice_source(path: Path, start: int, length: int) -> BlobSource:
    """A BlobSource over bytes ``[start, start + length)`` of a file (for uploads)."""

    def open_at(offset: int) -> BinaryIO:
        # a small buffer: large reads go straight to the file, without a copy
        return io.BufferedReader(_Slice(path, start + offset, length - offset), 64 * 1024)

    return open_at


def group_source(group: PackedGroup) -> BlobSource:
    """A BlobSource streaming ``group``'s tar from its members' files (for uploads)."""

    def open_at(offset: int) -> BinaryIO:
        return io.BufferedReader(
            grp.GroupStream(group.members, group.descriptor.size, offset), 64 * 1024
        )

    return open_at


class PackedTarget:
    """Read-only target serving a packed model from memory (manifest, config) and files."""

    def __init__(self, model: PackedModel) -> None:
        self._model = model
        self._small: dict[Digest, bytes] = {
            model.manifest.digest: model.manifest.raw,
            model.manifest.config.digest: model.config,
        }
        self._files: dict[Digest, tuple[Path, int, int]] = {}
        for f in model.files:
            if f.parts:
                for part in f.parts:
                    self._files[part.descriptor.digest] = (
                        f.source,
                        part.offset,
                        part.descriptor.size,
                    )
            elif not f.grouped:
                self._files[f.descriptor.digest] = (f.source, 0, f.descriptor.size)
        self._groups = {g.descriptor.digest: g for g in model.groups}

    def fetch(self, desc: Descriptor) -> VerifyingReader:
        data = self._small.get(desc.digest)
        if data is not None:
            return VerifyingReader(io.BytesIO(data), desc)
        group = self._groups.get(desc.digest)
        if group is not None:
            return VerifyingReader(
                grp.GroupStream(group.members, group.descriptor.size),
                desc,
                what=f"the group of {group.path!r} (a file changed since it was hashed?)",
            )
        where = self._files.get(desc.digest)
        if where is None:
            raise NotFoundError(f"blob {desc.digest} is not part of this model")
        path, offset, length = where
        return VerifyingReader(
            _Slice(path, offset, length),
            desc,
            what=f"file {str(path)!r} (changed since it was hashed?)",
        )

    @property
    def name(self) -> str:
        return "the packed model"

    def fetch_range(self, desc: Descriptor, offset: int, length: int) -> bytes:
        data = self._small.get(desc.digest)
        if data is not None:
            return data[offset : offset + length]
        group = self._groups.get(desc.digest)
        if group is not None:
            with grp.GroupStream(group.members, group.descriptor.size, offset) as stream:
                return io.BufferedReader(stream).read(
                    max(0, min(length, group.descriptor.size - offset))
                )
        where = self._files.get(desc.digest)
        if where is None:
            raise NotFoundError(f"blob {desc.digest} is not part of this model")
        path, start, size = where
        length = max(0, min(length, size - offset))
        with open(path, "rb") as f:
            f.seek(start + offset)
            return f.read(length)

    def exists(self, desc: Descriptor) -> bool:
        return (
            desc.digest in self._small or desc.digest in self._files or desc.digest in self._groups
        )

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
    link_roots: Sequence[Path] = (),
) -> list[tuple[str, Path]]:
    """List the regular files of a model directory as (relative POSIX path, real path).

    Symlinks are followed only when they point inside ``root`` or inside one of
    ``link_roots`` (resolved directories, e.g. a Hugging Face cache's ``blobs/``),
    or anywhere with ``allow_outside_links``; devices, FIFOs and sockets are refused.
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
                inside = any(
                    target == allowed or allowed in target.parents
                    for allowed in (real_root, *link_roots)
                )
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
                        full,
                        ignore=ignore,
                        allow_outside_links=allow_outside_links,
                        link_roots=link_roots,
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


Analyzer = Callable[[Sequence[PackedFile]], Mapping[str, Any]]
"""Computes extra ModelPack ``config`` fields (architecture, paramSize, ...) from the files."""

Annotator = Callable[[Sequence[PackedFile]], Mapping[str, str]]
"""Computes manifest annotations from the hashed files (in path order), e.g. the
chunk index; what it returns overrides the ``annotations`` argument."""

Chunking = Callable[[Path, int], ChunkGeometry]
"""``chunking(path, size)``: how to cut a file into chunks for its chunk table."""

BlobReady = Callable[[Descriptor, Path, int], None]
"""Told a layer's descriptor, file and offset as soon as its digest is known."""

HashStarting = Callable[[str, Path, int], None]
"""Told a file's relative path, real path and size just before it is hashed whole
(its digest was not cached)."""

GroupReady = Callable[["PackedGroup", Sequence["PackedFile"]], None]
"""Told a small-file group and its files as soon as it is laid out and hashed."""


def _inspect_local(rel: str, real: Path) -> tuple[RoleGuess, ModelFileInfo | None, bool, str]:
    """(role, parsed header or None, pickle-based?, warning) for one file; reads headers only.

    The role comes from the name, then from the first bytes when the name says
    nothing (:func:`~modelreg.model.roles.guess_role`). Every file is checked for
    pickle content (a pickle renamed ``weights.dat`` or a zip of pickles is flagged
    whatever its name); only weights are parsed.
    """
    ext = Path(rel).suffix.lower()
    try:
        with FileSource(real) as source:
            first = source.read_at(0, min(source.size, PREFIX_READ))
            try:
                unsafe = is_pickle_based(rel, first, source)
            except ModelRegError:
                unsafe = ext in UNSAFE_EXTENSIONS
            guess = guess_role(rel)
            if guess.untested:
                guess = guess_role(rel, content_format=detect_format("", first, source))
            if guess.role not in _PARSED_ROLES:
                return guess, None, unsafe, ""
            try:
                info = inspect_file(source, rel)
            except (ModelRegError, ValueError) as exc:
                known = ext in (".safetensors", ".gguf", ".onnx")
                why = exc.message if isinstance(exc, ModelRegError) else str(exc)
                warning = f"{rel}: header not understood ({why})" if known else ""
                return guess, None, unsafe, warning
    except OSError as exc:
        raise InvalidInputError(f"cannot read {rel!r}: {exc.strerror}") from exc
    return guess, info, unsafe or info.unsafe, ""


def _describe(
    rel: str,
    real: Path,
    digest: Digest,
    size: int,
    role: str,
    untested: bool,
    unsafe: bool,
) -> Descriptor:
    executable = bool(os.stat(real).st_mode & 0o111)
    annotations = {
        mt.ANN_FILEPATH: rel,
        mt.ANN_FILE_METADATA: file_metadata(Path(rel).name, size, executable),
    }
    if untested:
        annotations[mt.ANN_UNTESTED] = "true"
    if unsafe:
        annotations[ann.ANN_FILE_UNSAFE] = ann.UNSAFE_PICKLE
    annotations[mt.ANN_TITLE] = rel
    return Descriptor(mt.model_layer(role), digest, size, annotations=annotations)


def _parts(
    rel: str,
    whole: Descriptor,
    spans: Sequence[splitting.Span],
    digests: Sequence[Digest],
) -> tuple[PackedPart, ...]:
    out = []
    for index, (span, digest) in enumerate(zip(spans, digests, strict=True)):
        annotations = {
            ann.ANN_PART_PATH: rel,
            ann.ANN_PART_INDEX: str(index),
            ann.ANN_PART_COUNT: str(len(spans)),
            ann.ANN_PART_OFFSET: str(span.offset),
            ann.ANN_FILE_DIGEST: str(whole.digest),
            ann.ANN_FILE_SIZE: str(whole.size),
        }
        if index == 0:
            annotations[ann.ANN_FILE_METADATA] = whole.annotations[mt.ANN_FILE_METADATA]
        if ann.ANN_FILE_UNSAFE in whole.annotations:
            annotations[ann.ANN_FILE_UNSAFE] = whole.annotations[ann.ANN_FILE_UNSAFE]
        desc = Descriptor(ann.PART_MEDIA_TYPE, digest, span.length, annotations=annotations)
        out.append(PackedPart(desc, span.offset))
    return tuple(out)


def _source_metadata(root: Path, snapshot: HFSnapshot | None) -> ModelMetadata:
    """What the directory itself tells about its origin (lowest precedence)."""
    licenses = readme_licenses(root / "README.md")
    if snapshot is None:
        return ModelMetadata(licenses=licenses)
    return ModelMetadata(
        name=snapshot.repo_id,
        revision=snapshot.revision,
        source_url=snapshot.source_url,
        licenses=licenses,
    )


def pack_directory(
    root: str | os.PathLike[str],
    *,
    metadata: ModelMetadata | None = None,
    digest_cache: DigestCache | None = None,
    ignore: Sequence[str] = DEFAULT_IGNORE,
    include: Sequence[str] = (),
    allow_outside_links: bool = False,
    annotations: Mapping[str, str] | None = None,
    analyzer: Analyzer | None = analyze,
    split: bool | None = None,
    part_size: int | str | None = None,
    packaging_file: bool = True,
    progress: ProgressCallback | None = None,
    workers: int = 2,
    on_blob: BlobReady | None = None,
    on_hash: HashStarting | None = None,
    on_group: GroupReady | None = None,
    chunking: Chunking | None = None,
    annotator: Annotator | None = None,
    grouping: grp.GroupPolicy | None = None,
) -> PackedModel:
    """Describe a directory as a ModelPack artifact without copying any file.

    ``split`` and ``part_size`` default to what ``modelreg.toml`` says, else
    whole files and :data:`~modelreg.model.split.DEFAULT_PART_SIZE`. A Hugging
    Face cache snapshot is recognised by its path (:mod:`modelreg.model.hf`).
    ``on_blob(descriptor, path, offset)`` is called for every layer as soon as its
    digest is known, while other files (or later parts) are still being hashed.
    ``on_hash(relative_path, path, size)`` is called once for a file that is not
    split and whose digest is not cached, just before it is read to be hashed (for
    the largest file of the directory: before the other files are even inspected,
    so a push starts sending it at once); ``on_blob`` follows once its digest is
    known, on the thread that hashed it. ``on_group(group, files)`` is called for each
    small-file group once it is hashed, on the thread that hashed it, so a push can
    send it while big files are still being hashed. None of these changes what is
    returned.

    ``chunking`` asks for every file's chunk table (:attr:`PackedFile.chunks`),
    computed in the same read as its digest (or taken from the digest cache);
    ``annotator(files)`` then adds manifest annotations computed from them
    (files with a layer of their own: grouped files have no chunk table).

    ``grouping`` says which small files share tar layers
    (:class:`~modelreg.model.grouping.GroupPolicy`; ``grouping.OFF``: none);
    None means what ``modelreg.toml``'s ``[pack]`` says, else the defaults. A
    model whose manifest would still be too big is refused before any file is
    hashed (:class:`~modelreg.errors.SizeLimitError`).
    """
    base = Path(root)
    snapshot = detect_snapshot(base)
    link_roots = (snapshot.blobs,) if snapshot is not None else ()
    pkg = load_packaging_file(base) if packaging_file and base.is_dir() else None
    file_meta = pkg.metadata if pkg is not None else ModelMetadata()
    meta = (metadata or ModelMetadata()).merged_over(
        file_meta.merged_over(_source_metadata(base, snapshot))
    )
    if split is None:
        split = bool(pkg is not None and pkg.split)
    if part_size is None:
        part_size = pkg.part_size if pkg is not None and pkg.part_size is not None else None
    target_size = (
        splitting.parse_size(part_size) if part_size is not None else splitting.DEFAULT_PART_SIZE
    )
    patterns = (*ignore, *(pkg.ignore if pkg is not None else ()))
    files = scan_directory(
        root, ignore=patterns, allow_outside_links=allow_outside_links, link_roots=link_roots
    )
    if include:
        files = [f for f in files if any(fnmatch.fnmatchcase(f[0], p) for p in include)]
    if not files:
        raise InvalidInputError(
            f"model directory {str(root)!r} holds no files to pack",
            hint="a ModelPack artifact needs at least one file",
        )
    policy = grouping if grouping is not None else _policy_from(pkg)
    entries = _stat_files(files)
    _check_before_hashing(entries, policy, split)
    cache = digest_cache or DigestCache(None)
    warnings: list[str] = []

    def inspect_one(item: tuple[str, Path, int]) -> _Inspected:
        rel, real, size = item
        guess, info, unsafe, warning = _inspect_local(rel, real)
        if warning:
            warnings.append(warning)
            emit(progress, Event("message", f"warning: {warning}"))
        return _Inspected(rel, real, size, guess, info, unsafe)

    hashing = _Hashing(
        cache=cache,
        split=split,
        target_size=target_size,
        chunking=chunking,
        on_blob=on_blob,
        on_hash=on_hash,
        progress=progress,
    )

    hashing.announce_largest(entries, policy)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        window = 4 * max(1, workers)
        inspected = _inspect_in_batches(pool, inspect_one, entries, window)
        plan = _final_groups(inspected, policy)
        in_group = {i for g in plan for i in g}
        singles = [item for i, item in enumerate(inspected) if i not in in_group]
        packed, groups = _hash_largest_first(
            pool, hashing, singles, [[inspected[i] for i in g] for g in plan], window, on_group
        )
    packed.sort(key=lambda f: f.path)
    # the chunk index covers files with a layer of their own (grouped ones: pull them)
    extra = dict(annotator([f for f in packed if not f.grouped])) if annotator is not None else {}
    packed.sort(key=_layer_order)
    groups.sort(key=_layer_order)
    config_bytes, manifest = _assemble(
        packed, groups, meta, base, analyzer, annotations={**(annotations or {}), **extra}
    )
    return PackedModel(
        manifest=manifest,
        config=config_bytes,
        files=tuple(packed),
        warnings=tuple(warnings),
        groups=tuple(groups),
    )


_INSPECT_BATCH = 64
"""Files inspected per pool task (5,000 small files: 0.41 s one per task, 0.25 s in 64s)."""


def _inspect_in_batches(
    pool: ThreadPoolExecutor,
    inspect_one: Callable[[tuple[str, Path, int]], _Inspected],
    entries: Sequence[tuple[str, Path, int]],
    window: int,
) -> list[_Inspected]:
    """``inspect_one`` of every entry on ``pool``, in order, :data:`_INSPECT_BATCH` to a
    task: a small file's header is read faster than a task is handed to a thread."""

    def batch(items: Sequence[tuple[str, Path, int]]) -> list[_Inspected]:
        return [inspect_one(item) for item in items]

    batches = (entries[i : i + _INSPECT_BATCH] for i in range(0, len(entries), _INSPECT_BATCH))
    return [f for done in _bounded_map(pool, batch, batches, window) for f in done]


_Packed = tuple[PackedGroup | None, list[PackedFile]]
"""What one hashing job gives: a group's layer and its files, or a single file."""


def _hash_largest_first(
    pool: ThreadPoolExecutor,
    hashing: _Hashing,
    singles: Sequence[_Inspected],
    groups: Sequence[Sequence[_Inspected]],
    window: int,
    on_group: GroupReady | None,
) -> tuple[list[PackedFile], list[PackedGroup]]:
    """Hash each file with a layer of its own and pack each group on ``pool``, the jobs
    with the most bytes first; the files (grouped ones included) and the groups.

    A big file's upload streams while it is hashed (``on_hash``), so it is the longest
    job of a push. Started first it runs from the beginning, the groups and small
    files being packed beside it on the other workers; queued behind every group, it
    started late by all of their packing (2 s for 5,000 small files beside 4 GiB of
    weights). Each group is handed to ``on_group`` on the worker that packed it (its
    failure fails the pack, as an ``on_blob`` failure does). The order of the results
    does not matter: the caller sorts them.
    """

    def single(item: _Inspected) -> _Packed:
        return None, [hashing.digest(item)]

    def group(members: Sequence[_Inspected]) -> _Packed:
        layer, files = _pack_group(members)
        if on_group is not None:
            on_group(layer, files)
        return layer, files

    jobs: list[tuple[int, Callable[[], _Packed]]] = [
        *((item.size, functools.partial(single, item)) for item in singles),
        *((sum(m.size for m in g), functools.partial(group, g)) for g in groups),
    ]
    jobs.sort(key=lambda job: job[0], reverse=True)  # stable: equal sizes keep path order
    files: list[PackedFile] = []
    layers: list[PackedGroup] = []
    for layer, done in _bounded_map(pool, lambda job: job[1](), jobs, window):
        if layer is not None:
            layers.append(layer)
        files.extend(done)
    return files, layers


def _bounded_map(
    pool: ThreadPoolExecutor, fn: Callable[[_T], _R], items: Iterable[_T], window: int
) -> Iterator[_R]:
    """``pool.map`` with at most ``window`` tasks submitted at a time, results in order.

    ``Executor.map`` submits every item at once: a future (with its condition and
    lock) per file, about 1.5 KB each, 30 MB for 20,000 files before the first one
    is done."""
    pending: deque[Future[_R]] = deque()
    try:
        for item in items:
            if len(pending) >= window:
                yield pending.popleft().result()
            pending.append(pool.submit(fn, item))
        while pending:
            yield pending.popleft().result()
    finally:
        for fut in pending:
            fut.cancel()


@dataclass(frozen=True)
class _Hashing:
    """How :func:`pack_directory` digests a file that has a layer (or parts) of its own:
    from the digest cache or in one read, with its chunk table when asked, announcing
    each layer (``on_blob``) as soon as its digest is known."""

    cache: DigestCache
    split: bool
    target_size: int
    chunking: Chunking | None
    on_blob: BlobReady | None
    on_hash: HashStarting | None
    progress: ProgressCallback | None
    announced: set[Path] = field(default_factory=set)
    """Files ``on_hash`` was told of early (:meth:`announce_largest`): not told again."""

    def announce_largest(
        self, entries: Sequence[tuple[str, Path, int]], policy: grp.GroupPolicy
    ) -> None:
        """Tell ``on_hash`` of the largest file now, before the directory is inspected,
        if it will be hashed whole (it is never grouped, nothing is split) and its
        digest is not cached.

        Inspecting thousands of small files takes a second; a push starts sending the
        largest file (its longest job) meanwhile instead of after. Nothing is read
        here beyond a stat and the digest cache: the file is hashed in its turn, and a
        failure before that ends the push, which drops what was sent.
        """
        if self.on_hash is None or self.split or not entries:
            return
        rel, real, size = max(entries, key=lambda e: e[2])
        if policy.is_small(size):
            return
        try:
            geometry = self.chunking(real, size) if self.chunking is not None else None
            if self.cache.cached(real, geometry):
                return
        except OSError:
            return  # hashing reports it, in its turn
        self.announced.add(real)
        self.on_hash(rel, real, size)

    def digest(self, item: _Inspected) -> PackedFile:
        rel, real, guess, info, unsafe = item.rel, item.real, item.guess, item.info, item.unsafe
        spans = None
        if self.split and info is not None:
            spans = splitting.plan_spans(info, os.stat(real).st_size, self.target_size)
        emit(self.progress, Event("message", f"hashing {rel}"))
        identity = FileIdentity.of_path(real)
        geometry = None
        if self.chunking is not None and identity is not None:
            geometry = self.chunking(real, identity.size)
        table: ChunkTable | None = None
        if spans is not None:

            def ready(index: int, digest: Digest) -> None:
                if self.on_blob is not None:
                    span = spans[index]
                    self.on_blob(
                        Descriptor(ann.PART_MEDIA_TYPE, digest, span.length), real, span.offset
                    )

            digest, part_digests, table = self.cache.split_digests_with_chunks(
                real, spans, geometry, on_span=ready
            )
            size = spans[-1].end
        else:
            before = (
                functools.partial(self.on_hash, rel, real)
                if self.on_hash is not None and real not in self.announced
                else None
            )
            try:
                if geometry is not None:
                    digest, size, table = self.cache.digest_with_chunks(
                        real, geometry, before_hash=before
                    )
                else:
                    digest, size = self.cache.digest(real, before_hash=before)
            except OSError as exc:
                raise InvalidInputError(
                    f"cannot read {rel!r}: {exc.strerror or exc}",
                    hint="check that the file is still there and readable",
                ) from exc
            if self.on_blob is not None:
                self.on_blob(Descriptor(mt.model_layer(guess.role), digest, size), real, 0)
        desc = _describe(rel, real, digest, size, guess.role, item.untested, unsafe)
        parts = _parts(rel, desc, spans, part_digests) if spans is not None else ()
        if table is not None and table.size != size:
            raise InvalidInputError(
                f"{rel!r} changed while it was being hashed",
                hint="push again once nothing writes to the file",
            )
        return PackedFile(
            rel,
            real,
            desc,
            info=info,
            unsafe=unsafe,
            parts=parts,
            identity=identity,
            chunks=table,
        )


@dataclass(frozen=True, slots=True)
class _Inspected:
    """A file once its headers were read (role, parsed header, pickle check)."""

    rel: str
    real: Path
    size: int
    guess: RoleGuess
    info: ModelFileInfo | None
    unsafe: bool

    @property
    def untested(self) -> bool:
        # a weight named by its extension whose content is no format we recognise: a guess
        return self.guess.untested or (
            self.guess.role == "weight" and self.info is None and not self.unsafe
        )


def _policy_from(pkg: PackagingFile | None) -> grp.GroupPolicy:
    """The grouping ``modelreg.toml`` asks for, else the default."""
    if pkg is None:
        return grp.GroupPolicy()
    threshold = grp.DEFAULT_THRESHOLD
    if pkg.small_file_threshold is not None:
        threshold = parse_size(pkg.small_file_threshold, "[pack] small_file_threshold")
    target = grp.DEFAULT_GROUP_TARGET
    if pkg.group_target is not None:
        target = parse_size(pkg.group_target, "[pack] group_target")
    return grp.GroupPolicy(threshold=threshold, target=target)


def _stat_files(files: Sequence[tuple[str, Path]]) -> list[tuple[str, Path, int]]:
    out = []
    for rel, real in files:
        try:
            out.append((rel, real, os.stat(real).st_size))
        except OSError as exc:
            raise InvalidInputError(
                f"cannot read {rel!r}: {exc.strerror or exc}",
                hint="check that the file is still there and readable",
            ) from exc
    return out


def _check_before_hashing(
    entries: Sequence[tuple[str, Path, int]], policy: grp.GroupPolicy, split: bool
) -> None:
    """Refuse a model whose manifest would be too big, from names and sizes alone.

    Roles come from names here (the exact plan may read a few header bytes), and
    split files count one layer: an estimate, checked again exactly once hashed.
    """
    named = [(rel, size, guess_role(rel).role) for rel, _, size in entries]
    plan = grp.plan_groups(named, policy)
    in_group = {i for g in plan for i in g}
    raw = [rel for i, (rel, _, _) in enumerate(entries) if i not in in_group]
    grouped = [entries[i][0] for i in in_group]
    layers = len(raw) + len(plan)
    grp.check_manifest_estimate(
        layers,
        grp.estimate_manifest(raw, len(plan), grouped_paths=grouped),
        MAX_LAYERS // 2,
        policy,
    )


def _final_groups(inspected: Sequence[_Inspected], policy: grp.GroupPolicy) -> list[list[int]]:
    """Groups by the files' real roles; pickle-based files keep their own (annotated) layer."""
    rows = [(f.rel, policy.threshold if f.unsafe else f.size, f.guess.role) for f in inspected]
    return grp.plan_groups(rows, policy)


def _pack_group(items: Sequence[_Inspected]) -> tuple[PackedGroup, list[PackedFile]]:
    """Lay out and hash one group: its layer and its files (each file read once)."""
    entries = []
    for f in items:
        entries.append((f.rel, f.real, f.size, bool(os.stat(f.real).st_mode & 0o100)))
    members, size = grp.build_layout(entries)
    by_path = {f.rel: f for f in items}
    files: list[PackedFile] = []
    digests: list[Digest] = []

    def on_file(member: grp.Member, digest: Digest) -> None:
        digests.append(digest)
        f = by_path[member.path]
        identity = FileIdentity.of_path(f.real)
        # no annotations: a grouped file has no layer of its own (the member table in its
        # group's descriptor names it), and 20,000 of them would keep megabytes alive
        desc = Descriptor(mt.model_layer(f.guess.role), digest, member.size)
        files.append(
            PackedFile(
                f.rel, f.real, desc, info=f.info, unsafe=f.unsafe, identity=identity, grouped=True
            )
        )

    digest = grp.hash_group(members, on_file)
    role = items[0].guess.role
    # named by its top directory, as modctl names the tar of a directory (readers name
    # the group by it; extraction goes by member names, from the model root)
    top = grp.top_dir(members[0].path)
    annotations = {mt.ANN_FILEPATH: top} if top else {}
    # where each member's bytes are, with its digest: lazy reads and per-file signatures
    annotations[grp.ANN_GROUP_FILES] = grp.member_table(members, digests)
    layer = Descriptor(mt.model_layer(role, "tar"), digest, size, annotations=annotations)
    group = PackedGroup(layer, members)
    return group, files


def _layer_order(f: PackedFile | PackedGroup) -> tuple[int, str]:
    """Layers by role (:data:`ROLE_ORDER`), then path."""
    role = f.descriptor.media_type[len(mt.MODEL_LAYER_PREFIX) :].rsplit(".v1.", 1)[0]
    return (ROLE_ORDER.index(role), f.path)


def _assemble(
    packed: Sequence[PackedFile],
    groups: Sequence[PackedGroup],
    meta: ModelMetadata,
    base: Path,
    analyzer: Analyzer | None,
    *,
    annotations: Mapping[str, str],
) -> tuple[bytes, Manifest]:
    """The config blob and the manifest of ``packed`` files, in layer order."""
    items: list[PackedFile | PackedGroup] = [*packed, *groups]
    items.sort(key=_layer_order)
    layers = tuple(layer for f in items for layer in f.layers)
    if len(layers) > MAX_LAYERS // 2:
        raise SizeLimitError(
            f"the model would have {len(layers)} layers, over the {MAX_LAYERS // 2} modelreg "
            "writes in one manifest",
            hint="raise the small-file threshold (push --pack-small 4MiB), use a larger "
            "--part-size, or pack fewer, larger files",
        )
    config_fields: dict[str, Any] = {}
    fmt = _format_from_files([f.path for f in packed])
    if fmt:
        config_fields["format"] = fmt
    if analyzer is not None:
        config_fields.update(analyzer(packed))
    config_fields.update(meta.config)
    config_doc = {
        "descriptor": meta.descriptor_dict(base.resolve().name or "model"),
        "config": config_fields,
        "modelfs": {"type": "layers", "diffIds": [str(layer.digest) for layer in layers]},
    }
    config_bytes = canonical_json(config_doc)
    manifest = Manifest(
        config=Descriptor.for_bytes(mt.MODEL_CONFIG, config_bytes),
        layers=layers,
        artifact_type=mt.MODEL_ARTIFACT,
        annotations=dict(annotations),
    )
    return config_bytes, manifest
