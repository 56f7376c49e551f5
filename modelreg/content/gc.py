"""What the local store costs on disk, and pruning it back.

``$MODELREG_HOME/store`` is one OCI image layout that is two things at once: the
embedded default store (models pushed to ``NAME:TAG``, their tags in
``index.json``) and the blob cache that pulls fill. Inside it,
``modelreg-chunks/`` holds verified chunks of lazy reads: those belong to
:mod:`modelreg.lazy`, a layer above this one, so :mod:`modelreg.cache` adds their
numbers to these and trims them; here they are only a directory of temporary files
to clean (``temp_dirs``), and the chunk fields of the results stay 0.

:func:`usage` counts the bytes of each kind; :func:`prune` removes

* cached blobs that nothing tagged reaches. The walk starts at every tagged entry
  of ``index.json`` and follows every descriptor of each manifest or index it
  reaches (config, layers, child manifests, subject, descriptors in annotations),
  then the untagged entries that refer to something reached (signatures,
  attestations, chunk indexes: the layout keeps referrers as untagged entries).
  Untagged entries that nothing tagged needs (a referrer of a deleted tag, a
  manifest pushed by digest) are cache too: their blobs go and so do their
  ``index.json`` entries. With ``keep_tagged=False`` only tags written within
  ``older_than`` are roots: the whole store is treated as a cache;
* only blobs whose mtime is at least ``older_than`` seconds old: a concurrent pull
  or push may have just written a blob it has not tagged yet;
* temporary files left by interrupted writes more than a day ago (in ``ingest/``,
  the layout's own, and every file in the caller's ``temp_dirs``).

Safe against concurrent readers: files are only unlinked (a reader that opened one
keeps reading it; one that looks afterwards finds it absent, as for any blob not
in the cache). When the walk cannot be sure what is reachable (``index.json``
unreadable, a tagged manifest missing, a manifest on the way corrupt), no blob is
removed and the reason is reported; files the layout does not define are left alone and counted.

``index.json`` is read and changed only through :class:`LayoutStore`
(:meth:`~LayoutStore.read_index`, :meth:`~LayoutStore.drop_entries`): one parser and
one lock for the store and its pruning. This module lists ``blobs/<alg>/<hex>`` and
``ingest/`` itself and reads manifests as plain JSON documents, since a damaged one
must be reported, not refused.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from modelreg._fs import scan_dir
from modelreg._json import loads_strict
from modelreg.content.layout import LayoutStore
from modelreg.errors import FormatError, InvalidInputError, ModelRegError, NotFoundError
from modelreg.events import Event, ProgressCallback, emit
from modelreg.oci import mediatypes as mt
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import MAX_MANIFEST_BYTES

__all__ = [
    "DEFAULT_OLDER_THAN",
    "TEMP_MAX_AGE",
    "PruneResult",
    "Usage",
    "prune",
    "usage",
]

DEFAULT_OLDER_THAN: Final = 3600
"""Seconds a blob must have been on disk before :func:`prune` may remove it."""
TEMP_MAX_AGE: Final = 24 * 3600
"""Seconds after which a temporary file is a leftover of an interrupted write."""

_DESCRIPTOR_KEYS: Final = frozenset({"manifests", "subject"})
_TEMP_PREFIXES: Final = (".index.json.", ".oci-layout.")


@dataclass(frozen=True, slots=True)
class Usage:
    """Bytes and file counts of each kind of content under one store.

    ``referenced``: blobs that :func:`prune` keeps whatever their age (reached from a
    tag in ``index.json``, or a referrer of what is); ``unreferenced``: cached blobs
    it may remove (none when the walk is unsure, see ``problems``); ``missing_blobs``:
    reached but absent (a subject or child manifest never copied, or damage);
    ``temp``: leftovers older than a day; ``other``: files under ``blobs/`` that are
    not blobs (left alone); ``state``: the databases under ``$MODELREG_HOME/state``,
    when asked for.
    """

    store: str
    referenced_blobs: int = 0
    referenced_bytes: int = 0
    unreferenced_blobs: int = 0
    unreferenced_bytes: int = 0
    chunks: int = 0
    chunk_bytes: int = 0
    temp_files: int = 0
    temp_bytes: int = 0
    other_files: int = 0
    other_bytes: int = 0
    missing_blobs: int = 0
    tags: int = 0
    state_bytes: int | None = None
    problems: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> int:
        return (
            self.referenced_bytes
            + self.unreferenced_bytes
            + self.chunk_bytes
            + self.temp_bytes
            + self.other_bytes
            + (self.state_bytes or 0)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "totalBytes": self.total_bytes,
            "tags": self.tags,
            "referenced": {"blobs": self.referenced_blobs, "bytes": self.referenced_bytes},
            "unreferenced": {"blobs": self.unreferenced_blobs, "bytes": self.unreferenced_bytes},
            "chunks": {"files": self.chunks, "bytes": self.chunk_bytes},
            "temp": {"files": self.temp_files, "bytes": self.temp_bytes},
            "other": {"files": self.other_files, "bytes": self.other_bytes},
            "missingBlobs": self.missing_blobs,
            "stateBytes": self.state_bytes,
            "problems": list(self.problems),
        }


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What :func:`prune` removed, or with ``dry_run`` would remove.

    ``kept_recent_*``: unreferenced blobs kept because younger than ``older_than``.
    ``blobs_skipped``: no blob was considered, the walk being unsure (``problems``).
    ``dropped_entries``: ``index.json`` entries whose manifest was removed (their tag,
    or their digest when untagged).
    """

    store: str
    dry_run: bool
    removed_blobs: tuple[str, ...] = ()
    blob_bytes: int = 0
    kept_recent_blobs: int = 0
    kept_recent_bytes: int = 0
    temp_files: int = 0
    temp_bytes: int = 0
    chunks: int = 0
    chunk_bytes: int = 0
    chunks_left: int = 0
    chunk_bytes_left: int = 0
    dropped_entries: tuple[str, ...] = ()
    blobs_skipped: bool = False
    problems: tuple[str, ...] = ()

    @property
    def freed_bytes(self) -> int:
        return self.blob_bytes + self.temp_bytes + self.chunk_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "dryRun": self.dry_run,
            "freedBytes": self.freed_bytes,
            "blobs": {"removed": len(self.removed_blobs), "bytes": self.blob_bytes},
            "removedBlobs": list(self.removed_blobs),
            "keptRecent": {"blobs": self.kept_recent_blobs, "bytes": self.kept_recent_bytes},
            "temp": {"removed": self.temp_files, "bytes": self.temp_bytes},
            "chunks": {
                "removed": self.chunks,
                "bytes": self.chunk_bytes,
                "left": self.chunks_left,
                "bytesLeft": self.chunk_bytes_left,
            },
            "droppedEntries": list(self.dropped_entries),
            "blobsSkipped": self.blobs_skipped,
            "problems": list(self.problems),
        }


# ------------------------------------------------------------------ scanning
@dataclass(frozen=True, slots=True)
class _File:
    path: Path
    size: int
    mtime: float


@dataclass(slots=True)
class _Scan:
    blobs: dict[Digest, _File] = field(default_factory=dict)
    other: list[_File] = field(default_factory=list)


def _root(store: LayoutStore | str | os.PathLike[str]) -> Path:
    return store.root if isinstance(store, LayoutStore) else Path(store)


def _open(store: LayoutStore | str | os.PathLike[str]) -> LayoutStore | None:
    """None when there is no store yet (nothing to count); raises for a non-layout."""
    root = _root(store)
    if not root.exists():
        return None
    if isinstance(store, LayoutStore):
        return store
    if not root.is_dir() or not (root / "oci-layout").is_file():
        raise NotFoundError(
            f"{str(root)!r} is not an OCI image layout (no oci-layout file)",
            hint="point at the store directory ($MODELREG_HOME/store) or a layout modelreg wrote",
        )
    return LayoutStore(root, create=False)


def _scan_blobs(root: Path) -> _Scan:
    scan = _Scan()
    try:
        algorithms = list(os.scandir(root / "blobs"))
    except FileNotFoundError:
        return scan
    for alg in algorithms:
        if not alg.is_dir(follow_symlinks=False):
            scan.other.extend(_files([alg]))
            continue
        for entry in scan_dir(alg.path):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            digest = _digest_or_none(alg.name, entry.name)
            if digest is None or not stat.S_ISREG(st.st_mode):
                size = st.st_size if stat.S_ISREG(st.st_mode) else 0
                scan.other.append(_File(Path(entry.path), size, st.st_mtime))
            else:
                scan.blobs[digest] = _File(Path(entry.path), st.st_size, st.st_mtime)
    return scan


def _digest_or_none(algorithm: str, encoded: str) -> Digest | None:
    try:
        return Digest(algorithm, encoded)
    except ModelRegError:
        return None


def _files(entries: Iterable[os.DirEntry[str]]) -> Iterator[_File]:
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            yield _File(Path(entry.path), st.st_size, st.st_mtime)


def _stale_temp(root: Path, now: float, temp_dirs: Iterable[Path]) -> list[_File]:
    """Temporary files of writes that stopped more than :data:`TEMP_MAX_AGE` ago."""
    candidates = list(_files(scan_dir(root / "ingest")))
    candidates += [f for f in _files(scan_dir(root)) if f.path.name.startswith(_TEMP_PREFIXES)]
    for directory in temp_dirs:
        candidates += list(_files(scan_dir(directory)))
    return [f for f in candidates if now - f.mtime >= TEMP_MAX_AGE]


def _tree_bytes(path: Path) -> int:
    total = 0
    for base, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(base, name)).st_size
    return total


# ------------------------------------------------------------------- marking
@dataclass(frozen=True, slots=True)
class _Entry:
    digest: Digest
    name: str | None


def _read_index(store: LayoutStore) -> tuple[list[_Entry], list[str]]:
    """The ``index.json`` entries that parse, and problems with the rest.

    Raises :class:`FormatError` when the file itself is missing or unreadable."""
    try:
        # an image layout always has one: without it, nothing says what is tagged
        raw = store.read_index(missing_ok=False)
    except OSError as exc:
        raise FormatError(f"cannot read {store.root / 'index.json'}: {exc.strerror}") from exc
    entries: list[_Entry] = []
    problems: list[str] = []
    for item in raw:
        if not isinstance(item, dict):
            problems.append(f"index.json has an entry that is not an object: {item!r:.80}")
            continue
        name = _ref_name(item)
        try:
            digest = Digest.parse(str(item.get("digest")))
        except ModelRegError:
            problems.append(
                f"index.json entry {name or ''!s} has a bad digest {item.get('digest')!r}"
            )
            continue
        entries.append(_Entry(digest, name if isinstance(name, str) else None))
    return entries, problems


def _descriptors(node: Any, key: str | None = None) -> Iterator[tuple[str, bool]]:
    """``(digest, is_manifest)`` of every descriptor in a manifest-like JSON document,
    also inside JSON annotation values (a chunk index is named that way)."""
    if isinstance(node, list):
        for item in node:
            yield from _descriptors(item, key)
        return
    if not isinstance(node, dict):
        return
    digest = node.get("digest")
    if isinstance(digest, str) and isinstance(node.get("mediaType"), str):
        manifest = key in _DESCRIPTOR_KEYS or node["mediaType"] in mt.ALL_MANIFEST_TYPES
        yield digest, manifest
    for name, value in node.items():
        if name == "annotations" and isinstance(value, dict):
            for text in value.values():
                if isinstance(text, str) and text.startswith("{") and len(text) <= 65536:
                    with contextlib.suppress(FormatError):
                        yield from _descriptors(loads_strict(text, what="annotation"), name)
        elif isinstance(value, dict | list):
            yield from _descriptors(value, name)


class _Graph:
    """What is reachable from a set of roots, reading manifests from the layout."""

    def __init__(self, store: LayoutStore, blobs: dict[Digest, _File]) -> None:
        self.store = store
        self.blobs = blobs
        self.reachable: set[Digest] = set()
        self.missing: set[Digest] = set()
        self.problems: list[str] = []
        self.uncertain = False
        self._docs: dict[Digest, Any] = {}

    def document(self, digest: Digest, what: str) -> Any:
        """The parsed JSON of a manifest blob; None (and a problem) when unusable."""
        if digest in self._docs:
            return self._docs[digest]
        doc: Any = None
        try:
            with open(self.store.blob_path(digest), "rb") as f:
                data = f.read(MAX_MANIFEST_BYTES + 1)
        except FileNotFoundError:
            data = None
        except OSError as exc:
            self._unsure(f"{what} {digest} cannot be read: {exc.strerror}")
            data = None
        if data is not None:
            if len(data) > MAX_MANIFEST_BYTES:
                self._unsure(f"{what} {digest} is too large to be a manifest")
            elif Digest.from_bytes(data, digest.algorithm) != digest:
                self._unsure(f"{what} {digest} is corrupt (its bytes hash to another digest)")
            else:
                try:
                    doc = loads_strict(data, what=f"{what} {digest}")
                except FormatError as exc:
                    self._unsure(exc.message)
        self._docs[digest] = doc
        return doc

    def _unsure(self, problem: str) -> None:
        self.problems.append(problem)
        self.uncertain = True

    def mark(self, roots: Iterable[_Entry]) -> None:
        stack: list[tuple[Digest, bool]] = []
        for entry in roots:
            label = f"manifest tagged {entry.name!r}" if entry.name else "index.json manifest"
            if entry.digest not in self.blobs:
                self._unsure(f"{label} {entry.digest} is missing from the store")
            stack.append((entry.digest, True))
        while stack:
            digest, is_manifest = stack.pop()
            if digest in self.reachable:
                continue
            self.reachable.add(digest)
            if digest not in self.blobs:
                self.missing.add(digest)
                continue
            if not is_manifest:
                continue
            doc = self.document(digest, "manifest")
            for text, child_is_manifest in _descriptors(doc):
                try:
                    child = Digest.parse(text)
                except ModelRegError:
                    self._unsure(f"manifest {digest} names a bad digest {text!r:.80}")
                    continue
                stack.append((child, child_is_manifest))

    def subject(self, digest: Digest) -> Digest | None:
        if digest not in self.blobs:
            return None
        doc = self.document(digest, "manifest")
        subject = doc.get("subject") if isinstance(doc, dict) else None
        text = subject.get("digest") if isinstance(subject, dict) else None
        return _parse_or_none(text)

    def mark_referrers(self, entries: list[_Entry]) -> None:
        """Add the entries whose subject is reachable, until nothing changes."""
        pending = [e for e in entries if e.digest not in self.reachable]
        changed = True
        while changed and pending:
            changed = False
            for entry in list(pending):
                subject = self.subject(entry.digest)
                if subject is not None and subject in self.reachable:
                    pending.remove(entry)
                    self.mark([entry])
                    changed = True


def _parse_or_none(text: object) -> Digest | None:
    if not isinstance(text, str):
        return None
    try:
        return Digest.parse(text)
    except ModelRegError:
        return None


def _graph(store: LayoutStore, scan: _Scan, entries: list[_Entry], roots: list[_Entry]) -> _Graph:
    graph = _Graph(store, scan.blobs)
    graph.mark(roots)
    graph.mark_referrers(entries)
    return graph


@dataclass(frozen=True, slots=True)
class _Walk:
    """The outcome of marking: ``graph`` is None when index.json is unreadable;
    ``sure`` only when nothing stood in the way (no problem at all)."""

    graph: _Graph | None
    problems: list[str]
    tags: int

    @property
    def sure(self) -> bool:
        return self.graph is not None and not self.problems

    def unreferenced(self, digest: Digest) -> bool:
        return self.sure and self.graph is not None and digest not in self.graph.reachable


def _walk(
    store: LayoutStore, scan: _Scan, *, recent_roots: tuple[float, float] | None = None
) -> _Walk:
    """Mark from every tagged index.json entry (with ``recent_roots=(now, older_than)``
    only those whose manifest is younger than that), then from the entries that refer
    to something marked (referrers: signatures, attestations, chunk indexes)."""
    try:
        entries, problems = _read_index(store)
    except FormatError as exc:
        return _Walk(None, [exc.message], 0)
    roots = [e for e in entries if e.name]
    if recent_roots is not None:
        now, older_than = recent_roots
        roots = [
            e
            for e in roots
            if e.digest in scan.blobs and not _old(scan.blobs[e.digest].mtime, now, older_than)
        ]
    graph = _graph(store, scan, entries, roots)
    return _Walk(graph, problems + graph.problems, sum(1 for e in entries if e.name))


def _old(mtime: float, now: float, older_than: float) -> bool:
    return older_than <= 0 or now - mtime >= older_than


# -------------------------------------------------------------------- public
def usage(
    store: LayoutStore | str | os.PathLike[str],
    *,
    state: str | os.PathLike[str] | None = None,
    temp_dirs: Sequence[str | os.PathLike[str]] = (),
) -> Usage:
    """Bytes and counts of the store's content (see :class:`Usage`); ``state``: also
    the size of that directory (``$MODELREG_HOME/state``); ``temp_dirs``: directories
    that hold only temporary files. Reads no blob but manifests."""
    root = _root(store)
    state_bytes = _tree_bytes(Path(state)) if state is not None else None
    layout = _open(store)
    if layout is None:
        return Usage(store=str(root), state_bytes=state_bytes)
    now = time.time()
    scan = _scan_blobs(root)
    walk = _walk(layout, scan)
    referenced = [f for d, f in scan.blobs.items() if not walk.unreferenced(d)]
    unreferenced = [f for d, f in scan.blobs.items() if walk.unreferenced(d)]
    temp = _stale_temp(root, now, map(Path, temp_dirs))
    return Usage(
        store=str(root),
        referenced_blobs=len(referenced),
        referenced_bytes=sum(f.size for f in referenced),
        unreferenced_blobs=len(unreferenced),
        unreferenced_bytes=sum(f.size for f in unreferenced),
        temp_files=len(temp),
        temp_bytes=sum(f.size for f in temp),
        other_files=len(scan.other),
        other_bytes=sum(f.size for f in scan.other),
        missing_blobs=len(walk.graph.missing) if walk.graph is not None else 0,
        tags=walk.tags,
        state_bytes=state_bytes,
        problems=tuple(walk.problems),
    )


def prune(
    store: LayoutStore | str | os.PathLike[str],
    *,
    keep_tagged: bool = True,
    older_than: float = DEFAULT_OLDER_THAN,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    temp_dirs: Sequence[str | os.PathLike[str]] = (),
    only: Collection[Digest] | None = None,
) -> PruneResult:
    """Remove what nothing needs from the store (see the module documentation).

    ``keep_tagged=False`` also removes tagged models (and their tags) whose manifest
    was written more than ``older_than`` seconds ago: the store becomes a pure cache.
    ``dry_run``: remove nothing, report what would go. ``progress`` receives
    ``message`` events (phases and each removed blob). ``temp_dirs``: directories
    that hold only temporary files (stale ones are removed with the store's).
    ``only``: consider only these blobs (``modelreg rm`` frees what the manifests it
    deleted reached, with ``older_than=0``, and leaves other processes' fresh blobs).
    """
    if older_than < 0:
        raise InvalidInputError(f"older_than must not be negative, not {older_than!r}")
    root = _root(store)
    layout = _open(store)
    if layout is None:
        return PruneResult(store=str(root), dry_run=dry_run)
    now = time.time()
    emit(progress, Event("message", "reading the store"))
    scan = _scan_blobs(root)
    walk = _walk(layout, scan, recent_roots=None if keep_tagged else (now, older_than))
    problems = list(walk.problems)
    removed: list[tuple[Digest, _File]] = []
    recent: list[_File] = []
    dropped: list[str] = []
    for digest, f in sorted(scan.blobs.items(), key=lambda item: str(item[0])):
        if not walk.unreferenced(digest) or (only is not None and digest not in only):
            continue
        if not _old(f.mtime, now, older_than):
            recent.append(f)
            continue
        outcome = "gone" if dry_run else _unlink_if_old(f.path, now, older_than)
        if outcome == "recent":
            recent.append(f)
        elif outcome == "gone":
            removed.append((digest, f))
            verb = "would remove" if dry_run else "removed"
            emit(progress, Event("message", f"{verb} {digest} ({f.size} bytes)"))
    gone = {d for d, _f in removed}
    if gone:
        try:
            dropped = _drop_entries(layout, gone, dry_run=dry_run)
        except ModelRegError as exc:  # damaged, or a full disk (LocalStorageError)
            problems.append(f"index.json not updated: {exc.message}")
        except OSError as exc:
            problems.append(f"index.json not updated: {exc.strerror or exc}")
    if gone and not dry_run:
        problems += _removed_but_needed(layout, gone)
    temp = _stale_temp(root, now, map(Path, temp_dirs))
    temp_removed: list[_File] = []
    for f in temp:
        if dry_run:
            temp_removed.append(f)
            continue
        try:
            f.path.unlink()
        except FileNotFoundError:
            continue  # the write finished or another prune took it
        except OSError as exc:
            problems.append(f"cannot remove {f.path}: {exc.strerror}")
            continue
        temp_removed.append(f)
    return PruneResult(
        store=str(root),
        dry_run=dry_run,
        removed_blobs=tuple(str(d) for d, _f in removed),
        blob_bytes=sum(f.size for _d, f in removed),
        kept_recent_blobs=len(recent),
        kept_recent_bytes=sum(f.size for f in recent),
        temp_files=len(temp_removed),
        temp_bytes=sum(f.size for f in temp_removed),
        dropped_entries=tuple(dropped),
        blobs_skipped=not walk.sure,
        problems=tuple(problems),
    )


def _unlink_if_old(path: Path, now: float, older_than: float) -> str:
    """``gone`` (removed, or already gone), ``recent`` (rewritten meanwhile), ``kept``."""
    try:
        if not _old(path.lstat().st_mtime, now, older_than):
            return "recent"
        path.unlink()
    except FileNotFoundError:
        return "gone"
    except OSError:
        return "kept"
    return "gone"


def _removed_but_needed(store: LayoutStore, gone: set[Digest]) -> list[str]:
    """Blobs removed that ``index.json`` reaches now: another process tagged a manifest
    that needs them while the prune ran (it deduplicated against the cache)."""
    try:
        entries, _problems = _read_index(store)
    except FormatError:
        return []
    graph = _graph(store, _scan_blobs(store.root), entries, [e for e in entries if e.name])
    lost = sorted(str(d) for d in gone & graph.reachable if d in graph.missing)
    if not lost:
        return []
    return [
        f"blob {digest} was removed while another process tagged a model that needs it; "
        "push or pull that model again"
        for digest in lost
    ]


def _drop_entries(store: LayoutStore, gone: set[Digest], *, dry_run: bool) -> list[str]:
    """Remove from ``index.json`` the entries whose manifest was removed (and was not
    written again since), under the layout's lock; their names (or digests). Dry: the
    entries that would go."""
    if dry_run:
        try:
            entries, _problems = _read_index(store)
        except FormatError:
            return []
        return [e.name or str(e.digest) for e in entries if e.digest in gone]

    def removed(item: dict[str, Any]) -> bool:
        digest = _parse_or_none(item.get("digest"))
        return digest is not None and digest in gone and not store.blob_path(digest).exists()

    dropped = store.drop_entries(removed)
    return [str(_ref_name(item) or _parse_or_none(item.get("digest"))) for item in dropped]


def _ref_name(item: dict[str, Any]) -> object:
    annotations = item.get("annotations")
    return annotations.get(mt.ANN_REF_NAME) if isinstance(annotations, dict) else None
