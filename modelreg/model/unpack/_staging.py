"""The staging directory: where a pull writes, and the one step that commits it.

Every file of a pull is written into a fresh directory inside the output
directory (same filesystem, so the final ``rename`` is atomic per file and no
byte is copied twice). Nothing reaches the output until every layer is written
and verified and :meth:`Staging.commit` has checked, for the whole pull:

* the destinations again, now with archive members known
  (:func:`~._plan.check_destinations`: SECURITY.md case 6, and case 29: the
  output is not changed under a path the user made a directory);
* what already stands at each path (:mod:`._existing`, case 29): the same
  content is kept as it is, different content is refused unless ``overwrite``;
* every staged link of every layer together, resolved the way the kernel would
  through what the output already holds (:func:`~modelreg.model._linkcheck.check_staged`,
  case 7).

A pull that fails anywhere before the moves leaves the output as it was
(case 29): :meth:`Staging.remove` deletes the staging directory, whatever it
holds, in the pull's ``finally``.

Staging left by a killed pull
=============================

A ``kill -9`` runs no ``finally``. So that its staging directory is found again,
its name says who owns it, ``.modelreg-pull-<host>-<pid>-<start>-<random>``
(``host``: 8 hex of the host name's hash; ``start``: the process's start time in
clock ticks from ``/proc``, ``0`` where there is no ``/proc``), and a record of
its path is kept in the state directory (``state/pull-staging/``) while it lives.

A staging directory is **stale** when its owner is gone: on this host, no
process with that pid, a zombie, or a process with that pid but another start
time (the pid was reused). A live concurrent pull's directory is never stale.
When the owner cannot be judged (another host sharing the directory, a name
from before this scheme, no ``/proc`` to tell a reused pid), it is stale only
once nothing in it changed for :data:`STALE_AGE`.

Who removes stale staging: the next pull into the same output directory
(:func:`sweep`, before it creates its own), and ``modelreg cache prune``
(:func:`prune_recorded`), which can only know the directories recorded in
the state directory of the same ``MODELREG_HOME``; a directory a pull of another
home left behind is removed by the next pull into it, or by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from modelreg import settings
from modelreg.model._linkcheck import check_staged
from modelreg.model.digests import DigestCache
from modelreg.model.unpack import _existing as existing
from modelreg.model.unpack._plan import check_destinations
from modelreg.model.unpack._result import FileEntry

PREFIX: Final = ".modelreg-pull-"
STALE_AGE: Final = 24 * 3600.0
"""Staging whose owner cannot be judged is stale once unchanged this long (seconds)."""
RECORDS: Final = "pull-staging"
"""The state directory's folder of live staging records (one file each: the path)."""


@dataclass(frozen=True)
class Owner:
    """The process a staging directory belongs to, as its name says."""

    host: str
    pid: int
    start: str

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        return cls(_host(), pid, _start_time(pid) or "0")

    @classmethod
    def of(cls, name: str) -> Owner | None:
        """The owner a staging directory's name gives; None for an older name."""
        fields = name.removeprefix(PREFIX).split("-")
        if not name.startswith(PREFIX) or len(fields) != 4 or not fields[1].isdigit():
            return None
        return cls(fields[0], int(fields[1]), fields[2])

    @property
    def token(self) -> str:
        return f"{self.host}-{self.pid}-{self.start}"

    def gone(self) -> bool | None:
        """True when the owner has certainly exited, False when it runs, None when
        this host cannot tell (another host; no ``/proc`` to check a pid's start)."""
        if self.host != _host():
            return None
        if not _pid_exists(self.pid):
            return True
        start = _start_time(self.pid)
        if start is None:
            return None if self.start == "0" else True  # no /proc now; it had one: gone
        if start == "Z":
            return True
        return self.start != "0" and start != self.start


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of ``/proc/PID/stat``), ``Z``
    for a zombie, None without ``/proc``."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rpartition(")")[2].split()
    if len(fields) < 20:
        return None
    return "Z" if fields[0] in ("Z", "X") else fields[19]


def _newest_change(root: Path) -> float:
    """The latest mtime of the directory and what it holds at its top level."""
    newest = root.lstat().st_mtime
    with contextlib.suppress(OSError), os.scandir(root) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    return newest


def is_stale(path: Path, now: float | None = None) -> bool:
    """Whether the staging directory ``path`` belongs to no running pull (see above)."""
    owner = Owner.of(path.name)
    gone = None if owner is None else owner.gone()
    if gone is not None:
        return gone
    try:
        age = (time.time() if now is None else now) - _newest_change(path)
    except FileNotFoundError:
        return False
    return age > STALE_AGE


def _records_dir() -> Path:
    return settings.state_dir() / RECORDS


def _record_path(root: Path) -> Path:
    name = hashlib.sha256(os.fsencode(root)).hexdigest()[:32]
    return _records_dir() / name


def _record(root: Path) -> None:
    """Remember a live staging directory (best effort: a read-only state directory
    must not stop a pull; the next pull into the output still finds it)."""
    with contextlib.suppress(OSError):
        record = _record_path(root)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(os.fspath(root))


def _forget(root: Path) -> None:
    with contextlib.suppress(OSError):
        _record_path(root).unlink()


def _size(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def _staging_dirs(out: Path) -> list[Path]:
    found = []
    with contextlib.suppress(OSError), os.scandir(out) as entries:
        for entry in entries:
            if entry.name.startswith(PREFIX) and entry.is_dir(follow_symlinks=False):
                found.append(Path(entry.path))
    return found


def sweep(out: Path) -> list[Path]:
    """Remove the stale staging directories of killed pulls inside ``out``."""
    removed = []
    for root in _staging_dirs(out):
        if is_stale(root):
            shutil.rmtree(root, ignore_errors=True)
            _forget(root.absolute())
            removed.append(root)
    return removed


@dataclass(frozen=True)
class StalePrune:
    """What :func:`prune_recorded` removed (or with ``dry_run`` would remove)."""

    dirs: tuple[str, ...] = ()
    bytes: int = 0


def prune_recorded(*, dry_run: bool = False) -> StalePrune:
    """Remove the stale staging directories recorded in the state directory (records of
    directories already gone are dropped)."""
    dirs: list[str] = []
    total = 0
    records = _records_dir()
    if not records.is_dir():
        return StalePrune()
    for record in sorted(records.iterdir()):
        try:
            root = Path(record.read_text())
        except OSError:
            continue
        if not (root.is_dir() and not root.is_symlink() and root.name.startswith(PREFIX)):
            if not dry_run:
                record.unlink(missing_ok=True)
            continue
        if not is_stale(root):
            continue
        dirs.append(os.fspath(root))
        total += _size(root)
        if not dry_run:
            shutil.rmtree(root, ignore_errors=True)
            record.unlink(missing_ok=True)
    return StalePrune(tuple(dirs), total)


class Staging:
    """A pull's staging directory inside ``out``, named for its owner and recorded."""

    def __init__(self, out: Path) -> None:
        self.out = out
        prefix = f"{PREFIX}{Owner.current().token}-"
        self.root = Path(tempfile.mkdtemp(prefix=prefix, dir=out)).absolute()
        _record(self.root)

    def __truediv__(self, rel: str) -> Path:
        return self.root / rel

    def commit(
        self,
        entries: Sequence[FileEntry],
        link_owners: dict[str, str],
        *,
        overwrite: bool = False,
        digests: DigestCache | None = None,
    ) -> list[str]:
        """Check the whole pull, then move every staged file to its final place.

        ``link_owners`` names the layer that wrote each staged symbolic link. A path
        that already holds the same content keeps it (the staged copy is dropped);
        different content is refused unless ``overwrite``. Returns the kept paths.
        """
        paths = [e.path for e in entries]
        check_destinations(self.out, paths)
        kept = existing.check_commit(self.out, self.root, entries, overwrite, digests)
        # every layer's links together, before anything moves (SECURITY.md case 7)
        check_staged(self.out, self.root, paths, link_owners)
        for rel in paths:
            if rel in kept:
                continue
            final = self.out / rel
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.root / rel, final)
        return sorted(kept)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        _forget(self.root)
