"""Hugging Face cache snapshots: push what ``huggingface_hub`` downloaded, without network.

The hub cache (``~/.cache/huggingface/hub``) keeps one directory per repository::

    models--ORG--NAME/
        blobs/<sha256 or git sha1>         the file contents, once
        refs/main                          "<commit>"
        snapshots/<commit>/config.json  -> ../../blobs/<...>
        snapshots/<commit>/sub/x.bin    -> ../../../blobs/<...>

A snapshot directory is a model directory whose files are symlinks into the
repository's ``blobs/``. :func:`detect_snapshot` recognises one from its path
alone; packing then follows those links **only** into that ``blobs/``
directory (a link anywhere else is refused, as for any model directory), and
records ``name = ORG/NAME``, ``revision = <commit>`` and
``sourceURL = https://huggingface.co/ORG/NAME``.

:func:`require_snapshot` also takes the repository folder itself
(``models--ORG--NAME``) and follows ``refs/main`` to its snapshot, as
``huggingface_hub`` does for the default revision; nothing else of the folder
(``blobs/``, other snapshots) is packed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from modelreg.errors import InvalidInputError, UnsafeContentError

__all__ = ["HFSnapshot", "detect_snapshot", "require_snapshot"]

_KINDS: Final = {"models": "", "datasets": "datasets/", "spaces": "spaces/"}
_NAME_PART: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REVISION: Final = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@dataclass(frozen=True, slots=True)
class HFSnapshot:
    """A snapshot directory of the Hugging Face hub cache."""

    root: Path
    """``.../models--ORG--NAME/snapshots/<revision>`` (as given, not resolved)."""
    blobs: Path
    """The repository's ``blobs/`` directory (resolved): the only place links may lead."""
    repo_id: str
    """``ORG/NAME`` (or ``NAME`` for repositories without an organisation)."""
    revision: str
    kind: str
    """``models``, ``datasets`` or ``spaces``."""

    @property
    def source_url(self) -> str:
        return f"https://huggingface.co/{_KINDS[self.kind]}{self.repo_id}"


def detect_snapshot(path: str | os.PathLike[str]) -> HFSnapshot | None:
    """The snapshot ``path`` is, or None when it does not look like one."""
    root = Path(path)
    absolute = Path(os.path.abspath(root))
    snapshots = absolute.parent
    repo_dir = snapshots.parent
    if snapshots.name != "snapshots" or "--" not in repo_dir.name:
        return None
    kind, _, rest = repo_dir.name.partition("--")
    if kind not in _KINDS or not rest:
        return None
    parts = rest.split("--")
    if not all(_NAME_PART.match(p) for p in parts) or len(parts) > 2:
        return None
    revision = absolute.name
    if not _REVISION.match(revision):
        return None
    blobs = repo_dir / "blobs"
    if not blobs.is_dir() or blobs.is_symlink() or not absolute.is_dir():
        return None
    return HFSnapshot(
        root=root,
        blobs=blobs.resolve(),
        repo_id="/".join(parts),
        revision=revision,
        kind=kind,
    )


def require_snapshot(path: str | os.PathLike[str], *, ref: str = "main") -> HFSnapshot:
    """The snapshot ``path`` is, or the one ``refs/<ref>`` names when ``path`` is a
    ``models--ORG--NAME`` folder; :class:`InvalidInputError` saying what to give otherwise.
    The snapshot's ``root`` is what to pack; a link in it that leads anywhere but the
    repository's ``blobs/`` is refused here, with a hint that fits ``import hf`` (which,
    unlike ``push``, has no ``--allow-outside-links``)."""
    snap = detect_snapshot(path)
    if snap is None:
        followed = _follow_ref(Path(path), ref)
        snap = detect_snapshot(followed) if followed is not None else None
    if snap is None:
        raise InvalidInputError(
            f"{os.fspath(path)!r} is not a Hugging Face cache snapshot",
            hint="give .../hub/models--ORG--NAME (its refs/main is followed) or "
            ".../hub/models--ORG--NAME/snapshots/<revision> (a directory whose files "
            "link into ../../blobs/)",
        )
    _check_links(snap)
    return snap


def _check_links(snap: HFSnapshot) -> None:
    """Every link of the snapshot leads into its ``blobs/`` (or stays in the snapshot)."""
    real_root = snap.root.resolve()
    for dirpath, dirnames, filenames in os.walk(snap.root, followlinks=False):
        for name in (*dirnames, *filenames):
            full = Path(dirpath) / name
            if not full.is_symlink():
                continue
            target = full.resolve()
            if any(target == base or base in target.parents for base in (snap.blobs, real_root)):
                continue
            rel = full.relative_to(snap.root).as_posix()
            raise UnsafeContentError(
                f"{rel!r} in the Hugging Face snapshot links to {str(target)!r}, outside "
                f"its cache's blobs/",
                hint="a hub cache links only into blobs/: download the revision again "
                f"(huggingface-cli download {snap.repo_id} --revision {snap.revision}), or "
                "copy the files into a plain directory and `modelreg push` it (where "
                "--allow-outside-links is available)",
            )


def _follow_ref(repo_dir: Path, ref: str) -> Path | None:
    """``repo_dir/snapshots/<refs/ref>`` for a hub repository folder; None for other paths."""
    kind = repo_dir.resolve().name.partition("--")[0]
    snapshots = repo_dir / "snapshots"
    if kind not in _KINDS or not snapshots.is_dir() or not (repo_dir / "blobs").is_dir():
        return None
    available = sorted(p.name for p in snapshots.iterdir() if p.is_dir())
    listing = ", ".join(f"snapshots/{name}" for name in available) or "none"
    ref_file = repo_dir / "refs" / ref
    try:
        revision = ref_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InvalidInputError(
            f"{os.fspath(repo_dir)!r} has no refs/{ref} to follow",
            hint=f"give one of its snapshots instead ({listing})",
        ) from exc
    if not _REVISION.match(revision) or not (snapshots / revision).is_dir():
        raise InvalidInputError(
            f"refs/{ref} of {os.fspath(repo_dir)!r} names {revision[:64]!r}, "
            "which is not one of its snapshots",
            hint=f"download that revision again, or give a snapshot ({listing})",
        )
    return snapshots / revision
