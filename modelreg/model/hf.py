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
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from modelreg.errors import InvalidInputError

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


def require_snapshot(path: str | os.PathLike[str]) -> HFSnapshot:
    snap = detect_snapshot(path)
    if snap is None:
        raise InvalidInputError(
            f"{os.fspath(path)!r} is not a Hugging Face cache snapshot",
            hint="give .../hub/models--ORG--NAME/snapshots/<revision> "
            "(a directory whose files link into ../../blobs/)",
        )
    return snap
