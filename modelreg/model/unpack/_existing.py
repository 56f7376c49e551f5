"""What the output directory already holds, and what a pull may do to it (SECURITY.md case 29).

A pull never destroys work. For every path the model writes:

* nothing there: the file is written;
* a regular file with the same size and digest (hashed through the digest cache,
  :class:`~modelreg.model.digests.DigestCache`, so an unchanged file is read once):
  **kept as it is**, not rewritten (same inode, same mtime) and, when known before
  the transfer, not fetched either; counted as reused;
* anything else (different content, a symbolic link, another kind of file):
  **refused** before the transfer, naming the first :data:`SHOWN` such paths and
  their count, unless ``overwrite``; with ``overwrite`` it is replaced at the commit.

Raw and split files are judged from the plan (:func:`survey`), before a byte is
fetched. Archive members and compressed layers are known only once staged: they
are judged at the commit (:func:`check_commit`), still before anything moves, and
so are planned paths where something appeared during the transfer.

Files of the output directory that the model does not name are left alone; the
model is then mixed with them (:func:`unrelated` lets the pull say so).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from modelreg.errors import InvalidInputError
from modelreg.model.digests import DigestCache, hash_file
from modelreg.model.unpack._result import FileEntry
from modelreg.oci.digest import Digest

SHOWN: Final = 10
"""How many differing paths a refusal names."""


def holds(path: Path, size: int, digest: Digest, digests: DigestCache | None) -> bool | None:
    """None: nothing at ``path``; True: a regular file with this content; False:
    something else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        return False
    try:
        if digests is not None:
            found, _ = digests.digest(path, digest.algorithm)
        else:
            found, _ = hash_file(path, digest.algorithm)
    except OSError:
        return False
    return found == digest


def refusal(out: Path, differing: Sequence[str]) -> InvalidInputError:
    shown = ", ".join(differing[:SHOWN])
    more = f" and {len(differing) - SHOWN} more" if len(differing) > SHOWN else ""
    return InvalidInputError(
        f"{out} already holds {len(differing)} file(s) the pull would replace with "
        f"different content: {shown}{more}",
        hint="pass --overwrite (overwrite=True) to replace them, or pull into an empty directory",
    )


def survey(
    out: Path,
    wanted: Sequence[FileEntry],
    *,
    overwrite: bool,
    digests: DigestCache | None,
) -> set[str]:
    """The planned files already in place with the same content (kept, not fetched);
    refuses the pull when others differ, unless ``overwrite``."""
    kept: set[str] = set()
    differing: list[str] = []
    for entry in wanted:
        same = holds(out / entry.path, entry.descriptor.size, entry.descriptor.digest, digests)
        if same:
            kept.add(entry.path)
        elif same is False:
            differing.append(entry.path)
    if differing and not overwrite:
        raise refusal(out, differing)
    return kept


def _same_link(staged: Path, final: Path) -> bool | None:
    """For a staged symbolic link: whether ``final`` is the same link; None otherwise."""
    if not staged.is_symlink():
        return None
    return final.is_symlink() and os.readlink(staged) == os.readlink(final)


def check_commit(
    out: Path,
    root: Path,
    entries: Sequence[FileEntry],
    overwrite: bool,
    digests: DigestCache | None,
) -> set[str]:
    """At the commit: the staged paths whose destination already holds the same
    content (kept, the staged copy dropped); refuses when others differ, unless
    ``overwrite``."""
    kept: set[str] = set()
    differing: list[str] = []
    for entry in entries:
        final = out / entry.path
        if not os.path.lexists(final):
            continue
        same = _same_link(root / entry.path, final)
        if same is None:
            same = bool(holds(final, entry.descriptor.size, entry.descriptor.digest, digests))
        if same:
            kept.add(entry.path)
        elif not overwrite:
            differing.append(entry.path)
    if differing:
        raise refusal(out, sorted(differing))
    return kept


def top_level(out: Path, skip_prefix: str) -> set[str]:
    """Names directly in ``out`` (staging directories left out)."""
    try:
        with os.scandir(out) as entries:
            return {e.name for e in entries if not e.name.startswith(skip_prefix)}
    except OSError:
        return set()


def unrelated(before: set[str], written: Sequence[str]) -> list[str]:
    """Names that were in the output before the pull and are no part of the model."""
    ours = {p.split("/", 1)[0] for p in written}
    return sorted(before - ours)
