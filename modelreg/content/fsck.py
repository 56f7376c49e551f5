"""Checking every blob of the local store against its digest, and repairing it.

A read of a store blob already refuses damage as it happens
(:meth:`~modelreg.content.layout.LayoutStore.open_blob` quarantines and raises
:class:`~modelreg.errors.CorruptCacheError`); :func:`verify` looks for it before
anyone reads: ``modelreg cache verify`` (alias ``fsck``).

The steps, each named below:

1. *Learn descriptors* (:func:`_known_descriptors`): sizes and media types of every
   blob something in the store names: the ``index.json`` entries and every
   descriptor inside the manifests and indexes they reach (read as plain JSON,
   each hashed first: a damaged manifest names nothing). A blob no manifest names
   is checked by digest alone and cannot be repaired (nothing says what it is).
2. *Re-hash* every file under ``blobs/<alg>/`` (:meth:`LayoutStore.check_blob`);
   one that does not match its name (or its known size) is moved into
   ``quarantine/`` (:meth:`LayoutStore.quarantine`), never deleted: the bytes are
   evidence, and a file hard-linked into a pulled model keeps its inode.
3. *Collect earlier damage*: blobs quarantined by a read before this run and still
   absent from ``blobs/`` are outstanding too when something in the store names them.
4. *Repair* (only with sources): each outstanding blob with a known descriptor is
   fetched from the first source that has it, verified by that source's reader and
   again by the store's writer, and committed under its digest.

Nothing is removed but by the quarantine rename; a concurrent writer that commits
a good copy between the hash and the rename is not undone (the rename checks the
inode it read). The result says what was damaged, what was repaired and what is
still outstanding; the CLI exits 5 while anything is outstanding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelreg._json import camel_fields, loads_strict
from modelreg.content.base import CHUNK, ReadOnlyTarget
from modelreg.content.layout import LayoutStore
from modelreg.errors import FormatError, ModelRegError, NotFoundError
from modelreg.events import Event, ProgressCallback, emit
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import MAX_MANIFEST_BYTES

__all__ = ["Damage", "VerifyResult", "verify"]


@dataclass(frozen=True, slots=True)
class Damage:
    """One blob that did not verify (``problem``), where it was moved, and what
    repair did: ``repaired_from`` names the source, ``repair_error`` why not."""

    digest: str
    problem: str
    quarantined: str | None = None
    repaired_from: str | None = None
    repair_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return camel_fields(
            self, "digest", "problem", "quarantined", "repaired_from", "repair_error"
        )


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What :func:`verify` checked and found. ``outstanding``: damaged blobs still
    absent from the store after repair (the store cannot serve them)."""

    store: str
    checked_blobs: int = 0
    checked_bytes: int = 0
    damaged: tuple[Damage, ...] = ()
    quarantine_files: int = 0

    @property
    def outstanding(self) -> tuple[Damage, ...]:
        return tuple(d for d in self.damaged if d.repaired_from is None)

    @property
    def clean(self) -> bool:
        return not self.outstanding

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "checked": {"blobs": self.checked_blobs, "bytes": self.checked_bytes},
            "damaged": [d.to_dict() for d in self.damaged],
            "repaired": sum(1 for d in self.damaged if d.repaired_from is not None),
            "outstanding": [d.digest for d in self.outstanding],
            "quarantineFiles": self.quarantine_files,
            "clean": self.clean,
        }


# ------------------------------------------------------------ 1. descriptors
def _descriptors_in(node: Any) -> Iterator[Descriptor]:
    """Every well-formed descriptor in a manifest-like JSON document."""
    if isinstance(node, list):
        for item in node:
            yield from _descriptors_in(item)
        return
    if not isinstance(node, dict):
        return
    if {"mediaType", "digest", "size"} <= node.keys():
        with contextlib.suppress(ModelRegError, TypeError, ValueError):
            yield Descriptor(node["mediaType"], Digest.parse(node["digest"]), int(node["size"]))
    for value in node.values():
        if isinstance(value, dict | list):
            yield from _descriptors_in(value)


def _manifest_json(store: LayoutStore, desc: Descriptor) -> Any:
    """A manifest blob as JSON, only if it is whole and verifies; else None."""
    if desc.size > MAX_MANIFEST_BYTES:
        return None
    try:
        data = store.blob_path(desc.digest).read_bytes()
    except OSError:
        return None
    if len(data) != desc.size or Digest.from_bytes(data, desc.digest.algorithm) != desc.digest:
        return None
    try:
        return loads_strict(data, what=f"manifest {desc.digest}")
    except FormatError:
        return None


def _known_descriptors(store: LayoutStore) -> dict[Digest, Descriptor]:
    """Descriptors of everything the store names, from index.json down."""
    known: dict[Digest, Descriptor] = {}
    try:
        pending = [Descriptor(e.media_type, e.digest, e.size) for e in store.entries()]
    except ModelRegError:
        return known
    while pending:
        desc = pending.pop()
        if desc.digest in known:
            continue
        known[desc.digest] = desc
        if "manifest" in desc.media_type or "index" in desc.media_type:
            pending.extend(_descriptors_in(_manifest_json(store, desc)))
    return known


# ---------------------------------------------------------------- 2. re-hash
def _stored_blobs(root: Path) -> Iterator[Digest]:
    try:
        algorithms = [a for a in os.scandir(root / "blobs") if a.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return
    for alg in sorted(algorithms, key=lambda a: a.name):
        for entry in sorted(os.scandir(alg.path), key=lambda e: e.name):
            if not entry.is_file(follow_symlinks=False):
                continue
            with contextlib.suppress(ModelRegError):
                yield Digest(alg.name, entry.name)


def _rehash(
    store: LayoutStore,
    known: dict[Digest, Descriptor],
    progress: ProgressCallback | None,
) -> tuple[int, int, list[Damage]]:
    checked = total = 0
    damaged: list[Damage] = []
    for digest in _stored_blobs(store.root):
        desc = known.get(digest)
        try:
            size = store.blob_path(digest).stat().st_size
            problem = store.check_blob(digest, desc.size if desc is not None else None)
        except FileNotFoundError:
            continue  # pruned meanwhile
        except OSError as exc:
            problem = f"cannot be read: {exc.strerror}"
        checked += 1
        total += size
        if problem is None:
            continue
        moved = store.quarantine(digest)
        emit(progress, Event("message", f"damaged: {digest} ({problem})"))
        damaged.append(Damage(str(digest), problem, str(moved) if moved else None))
    return checked, total, damaged


# --------------------------------------------------------- 3. earlier damage
def _quarantined_digest(path: Path) -> Digest | None:
    alg, sep, rest = path.name.partition("-")
    if not sep:
        return None
    try:
        return Digest(alg, rest.partition(".")[0])
    except ModelRegError:
        return None


def _earlier_damage(
    store: LayoutStore, known: dict[Digest, Descriptor], found: list[Damage]
) -> list[Damage]:
    seen = {d.digest for d in found}
    out: list[Damage] = []
    for path in store.quarantined():
        digest = _quarantined_digest(path)
        if digest is None or str(digest) in seen or digest not in known:
            continue
        if store.has_blob(digest):
            continue  # fetched again since
        seen.add(str(digest))
        out.append(Damage(str(digest), "quarantined by an earlier read", str(path)))
    return out


# ----------------------------------------------------------------- 4. repair
def _repair_one(
    store: LayoutStore, desc: Descriptor, sources: Sequence[ReadOnlyTarget]
) -> tuple[str | None, str | None]:
    """(source name, None) when fetched again; (None, why not) otherwise."""
    errors: list[str] = []
    for source in sources:
        try:
            with source.fetch(desc) as reader, store.ingest(desc, verified_by=reader) as out:
                while block := reader.read(CHUNK):
                    out.write(block)
        except ModelRegError as exc:
            errors.append(f"{source.name}: {exc.message}")
            continue
        return source.name, None
    return None, "; ".join(errors) or "no source given"


def _repair(
    store: LayoutStore,
    damaged: list[Damage],
    known: dict[Digest, Descriptor],
    sources: Sequence[ReadOnlyTarget],
    progress: ProgressCallback | None,
) -> list[Damage]:
    out: list[Damage] = []
    for damage in damaged:
        desc = known.get(Digest.parse(damage.digest))
        if desc is None:
            why = "no manifest in the store names it: nothing says what to fetch"
            out.append(dataclasses.replace(damage, repair_error=why))
            continue
        source, error = _repair_one(store, desc, sources)
        if source is not None:
            emit(progress, Event("message", f"repaired {damage.digest} from {source}"))
        out.append(dataclasses.replace(damage, repaired_from=source, repair_error=error))
    return out


# ----------------------------------------------------------------- public
def verify(
    store: LayoutStore | str | os.PathLike[str],
    *,
    repair_from: Sequence[ReadOnlyTarget] = (),
    progress: ProgressCallback | None = None,
) -> VerifyResult:
    """Re-hash every blob of the store, quarantine the damaged ones and, with
    ``repair_from``, fetch them again from the first of those targets that has
    them (see the module documentation)."""
    if not isinstance(store, LayoutStore):
        root = Path(store)
        if not root.exists():
            return VerifyResult(store=str(root))
        if not (root / "oci-layout").is_file():
            raise NotFoundError(
                f"{str(root)!r} is not an OCI image layout (no oci-layout file)",
                hint="point at the store directory ($MODELREG_HOME/store)",
            )
        store = LayoutStore(root, create=False)
    emit(progress, Event("message", "reading the store's manifests"))
    known = _known_descriptors(store)
    emit(progress, Event("message", "re-hashing every blob"))
    checked, total, damaged = _rehash(store, known, progress)
    damaged += _earlier_damage(store, known, damaged)
    if repair_from and damaged:
        damaged = _repair(store, damaged, known, repair_from, progress)
    return VerifyResult(
        store=str(store.root),
        checked_blobs=checked,
        checked_bytes=total,
        damaged=tuple(damaged),
        quarantine_files=len(store.quarantined()),
    )
