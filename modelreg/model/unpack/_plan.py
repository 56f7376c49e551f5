"""Planning a pull: which layer becomes which file, and what the cache keeps.

Everything here runs before a byte of any layer is read, and decides only from
the manifest, the arguments and what the output directory already holds:

* :func:`plan` maps raw layers and split files to output paths, each through
  :func:`~modelreg.model.paths.safe_relpath` and claimed in one
  :class:`~modelreg.model.archive.PathClaims` that archive members later claim
  too (SECURITY.md case 6: ``..``, absolute paths, backslashes, NUL, collisions
  after normalisation), and filters them by ``--include`` globs. Archive layers
  are planned as layers: their members are known only when read.
* :func:`check_destinations` refuses what the output holds in the way of a
  planned path (a directory where a file goes, a file where a directory goes, a
  parent that is a symbolic link leading outside). It runs once here, for the
  planned files, and again at commit time, for archive members too.
* :func:`cache_mode_for` and :class:`CachePlan` settle what the cache keeps of
  what it lacks (see the package docstring), refusing contradictory arguments
  before any directory is created.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from modelreg.errors import FormatError, InvalidInputError, UnsafeContentError
from modelreg.model import archive as arch
from modelreg.model.paths import safe_relpath
from modelreg.model.producers import ArchiveLayer, LayerPlan, RawLayer, SplitFile, plan_manifest
from modelreg.model.unpack._result import FileEntry
from modelreg.oci.manifest import Manifest

CacheMode = Literal["auto", "copy", "reference"]
CACHE_MODES: tuple[CacheMode, ...] = get_args(CacheMode)


def parse_cache_mode(value: str, what: str = "cache mode") -> CacheMode:
    """``value`` as a cache mode, or :class:`InvalidInputError` naming ``what`` gave it."""
    mode = value.strip().lower()
    if mode not in CACHE_MODES:
        raise InvalidInputError(
            f"{what} {value!r} is not one of {', '.join(CACHE_MODES)}",
            hint="auto: reflink into the cache, else remember the pulled file; copy: the cache "
            "keeps its own copy; reference: the cache remembers the pulled file only",
        )
    return mode


def cache_mode_for(cache_mode: str, link: bool) -> CacheMode:
    """The cache mode a pull runs with: ``link`` needs (and implies) ``copy``."""
    mode = parse_cache_mode(cache_mode)
    if not link:
        return mode
    if mode == "reference":
        raise InvalidInputError(
            "hard links (--link) need the cache's own copy; cache mode 'reference' keeps none",
            hint="use --cache-mode copy (or auto) with --link",
        )
    return "copy"


@dataclass(frozen=True)
class CachePlan:
    """What the cache does in one pull, decided before anything is read.

    ``keeps``: the cache is to keep what it lacks (there is a cache, and it is not
    itself the source). ``tee``: raw blobs the cache lacks are written into it on
    the way (``copy`` mode where staged files cannot be cloned into it);
    otherwise a staged raw file is cloned into the cache or remembered after it
    is verified (:meth:`Unpacker.keep_raw`).
    """

    mode: CacheMode
    keeps: bool
    reflink: bool = False

    @property
    def tee(self) -> bool:
        return self.keeps and self.mode == "copy" and not self.reflink

    @property
    def remembers(self) -> bool:
        """Whether verified output files are remembered (no own copy in the cache)."""
        return self.keeps and self.mode != "copy"


@dataclass
class Planned:
    """What goes where: every file the pull writes, by kind, with its safe path."""

    plan: LayerPlan
    raw: list[tuple[str, RawLayer]]
    split: list[tuple[str, SplitFile]]
    archives: list[ArchiveLayer]
    claims: arch.PathClaims
    """Paths already taken; archive members claim theirs here as they are read."""

    def raw_groups(self) -> list[list[tuple[str, RawLayer]]]:
        """Uncompressed raw layers grouped by digest: one blob may back several
        files, and is fetched once."""
        by_digest: dict[str, list[tuple[str, RawLayer]]] = {}
        for path, r in self.raw:
            if not r.compressed:
                by_digest.setdefault(str(r.descriptor.digest), []).append((path, r))
        return list(by_digest.values())

    def compressed(self) -> list[tuple[str, RawLayer]]:
        return [(path, r) for path, r in self.raw if r.compressed]

    def entries(self) -> list[FileEntry]:
        """The planned files whose content the manifest gives (uncompressed raw and
        split files): what an existing file at their path can be compared with."""
        out = [FileEntry(p, r.descriptor, r.mode) for p, r in self.raw if not r.compressed]
        return out + [FileEntry(p, s.descriptor, s.mode) for p, s in self.split]

    def without(self, paths: set[str]) -> Planned:
        """The plan without ``paths`` (files already in place: nothing to write)."""
        if not paths:
            return self
        raw = [(p, r) for p, r in self.raw if p not in paths]
        split = [(p, s) for p, s in self.split if p not in paths]
        return Planned(self.plan, raw, split, self.archives, self.claims)

    def paths(self) -> list[str]:
        """The planned files' paths (archive members not included)."""
        return [p for p, _ in self.raw] + [p for p, _ in self.split]


def matches(path: str, include: Sequence[str]) -> bool:
    return not include or any(fnmatch.fnmatchcase(path, p) for p in include)


def plan(manifest: Manifest, include: Sequence[str]) -> Planned:
    """Safe, unique output paths for the manifest's files (SECURITY.md case 6)."""
    layers = plan_manifest(manifest)
    claims = arch.PathClaims()
    raw: list[tuple[str, RawLayer]] = []
    split: list[tuple[str, SplitFile]] = []
    for r in layers.raw:
        path = safe_relpath(r.path, f"layer {r.index} path")
        if matches(path, include):
            claims.claim_file(path, f"layer {r.path!r}")
            raw.append((path, r))
    for s in layers.split:
        path = safe_relpath(s.path, "split file path")
        if matches(path, include):
            claims.claim_file(path, f"split file {s.path!r}")
            split.append((path, s))
    _refuse_empty(layers, include, bool(raw or split))
    return Planned(layers, raw, split, layers.archives, claims)


def _refuse_empty(layers: LayerPlan, include: Sequence[str], any_file: bool) -> None:
    if any_file or layers.archives:
        return
    if include:
        raise InvalidInputError(
            f"no file of the model matches --include {' '.join(include)!r}",
            hint="see the file list with `modelreg inspect REF`",
        )
    why = "; ".join(f"{d.digest.short}: {reason}" for d, reason in layers.skipped[:3])
    raise FormatError(
        "the artifact has no layer that names a file" + (f" ({why})" if why else ""),
        hint="this is not a model or file artifact (a container image?)",
    )


def plan_files(manifest: Manifest, include: Sequence[str] = ()) -> list[FileEntry]:
    """Map file layers (and split files) to safe, unique output paths.

    Archive layers are not listed: their members are known only when read.
    """
    planned = plan(manifest, include)
    out = [FileEntry(path, r.descriptor, r.mode) for path, r in planned.raw]
    out += [FileEntry(path, s.descriptor, s.mode) for path, s in planned.split]
    return out


def prepare_output(output: str | os.PathLike[str]) -> Path:
    """The output directory, created if missing."""
    return create_output(output)[0]


def create_output(output: str | os.PathLike[str]) -> tuple[Path, list[Path]]:
    """The output directory, created if missing, and the directories this created
    (deepest first: what :func:`remove_created` removes after a failed pull)."""
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(
            f"output path {str(out)!r} exists and is not a directory",
            hint="choose a directory with -o/--output",
        )
    missing: list[Path] = []
    for d in (out, *out.parents):
        if os.path.lexists(d):
            break
        missing.append(d)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot create output directory {str(out)!r}: {exc.strerror}"
        ) from exc
    return out, missing


def remove_created(created: Sequence[Path]) -> None:
    """Remove the directories a failed pull created, deepest first, each only if empty
    (anything another process put there meanwhile stays)."""
    for d in created:
        try:
            d.rmdir()
        except OSError:
            return


def check_destinations(out: Path, paths: Sequence[str]) -> None:
    """Refuse before writing anything: a file where a directory must go, a directory
    where a file must go, or an existing symlinked parent that leads outside ``out``."""
    real_out = out.resolve()
    for rel in paths:
        final = out / rel
        if final.is_dir() and not final.is_symlink():
            raise InvalidInputError(
                f"{str(final)!r} is a directory but the model has a file there",
                hint="remove it or pull into an empty directory",
            )
        parent = final.parent
        while parent != out:
            if parent.exists() or parent.is_symlink():
                _check_parent(parent, rel, real_out)
            parent = parent.parent


def _check_parent(parent: Path, rel: str, real_out: Path) -> None:
    if not parent.is_dir():
        raise InvalidInputError(
            f"{str(parent)!r} exists and is not a directory; the model puts {rel!r} below it",
            hint="remove it or pull into an empty directory",
        )
    real = parent.resolve()
    if real != real_out and real_out not in real.parents:
        raise UnsafeContentError(
            f"{str(parent)!r} is a symlink leading outside the output directory",
            hint="remove the link or pull into an empty directory",
        )
