"""A local OCI image layout directory: the cache and the embedded default store.

Layout (image-spec ``image-layout.md``): ``oci-layout``, ``index.json``,
``blobs/<alg>/<hex>``. modelreg adds ``ingest/`` for in-flight writes (same
filesystem, so the final rename is atomic) and ``index.json.lock`` for
serialising index updates between processes.

* Blobs are written to ``ingest/``, verified (size and digest), fsynced, then
  renamed into place: a crash or a bad source never leaves a blob under a digest
  it does not have. Writing a blob that another process wrote first is harmless.
* ``index.json`` is changed only under an exclusive ``flock`` with a
  read-modify-write and an atomic replace, so concurrent processes never lose
  each other's tags.
* One store holds every repository: in the embedded store a tag is recorded as
  ``org.opencontainers.image.ref.name = "<repository>:<tag>"``; in a plain
  ``oci:`` layout (``repository=None``) as the bare tag, as skopeo and oras do.
* A write the filesystem refuses (full, over quota, file too large, read-only)
  raises :class:`~modelreg.errors.LocalStorageError` naming the store, with
  nothing left in ``ingest/`` (the temporary file is removed first).
* Reads are verified like every other read (:meth:`LayoutStore.open_blob`). A blob
  that no longer matches its digest (disk damage; a file pulled with ``--link``
  and edited in place, which edits the blob through the shared inode) is never
  served: the read that finds it moves it into ``quarantine/`` and raises
  :class:`~modelreg.errors.CorruptCacheError` carrying the digest, so that the
  caller fetches it again from the source (SECURITY.md case 28). Moved, not
  deleted: the damaged bytes are kept for inspection (and a hard-linked output
  file keeps its inode); ``modelreg cache verify`` lists and re-hashes them.
  The rename happens only if the path still names the file that was read: a
  writer that committed a good copy meanwhile is not undone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from modelreg._fs import AtomicFile, atomic_write
from modelreg._json import loads_strict
from modelreg.content.base import CHUNK, BlobSource, PushResult, VerifyingReader
from modelreg.content.fallback_entries import complete_entries
from modelreg.content.registry.target import referrers_tag
from modelreg.errors import (
    CorruptCacheError,
    FormatError,
    IntegrityError,
    InvalidInputError,
    ModelRegError,
    NotFoundError,
    SizeLimitError,
    local_storage,
)
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import (
    MAX_MANIFEST_BYTES,
    Index,
    canonical_json,
    parse_manifest_or_index,
)

__all__ = ["QUARANTINE_DIR", "LayoutStore", "LayoutTarget", "StoreBlobReader"]

_LAYOUT_FILE = {"imageLayoutVersion": "1.0.0"}
_MAX_INDEX_BYTES = 64 * MAX_MANIFEST_BYTES
_FILE_MODE = 0o600
"""What every file of the store has been written with (``mkstemp``'s mode) and keeps."""
QUARANTINE_DIR = "quarantine"
"""Where blobs found corrupt are moved: ``<alg>-<hex>.<nanoseconds>`` (never served)."""


class LayoutStore:
    """One OCI layout directory shared by any number of repositories and processes."""

    def __init__(
        self, root: str | os.PathLike[str], *, create: bool = True, fsync: bool = True
    ) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self._lock = threading.Lock()
        if create:
            self._init()
        elif not (self.root / "oci-layout").is_file():
            raise NotFoundError(
                f"{str(self.root)!r} is not an OCI image layout (no oci-layout file)",
                hint="point at a directory written by modelreg, oras or skopeo (oci:DIR)",
            )

    # ------------------------------------------------------------ structure
    def _init(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise InvalidInputError(
                f"{str(self.root)!r} exists and is not a directory",
                hint="choose another path for the OCI layout",
            )
        try:
            (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
            (self.root / "ingest").mkdir(exist_ok=True)
            layout = self.root / "oci-layout"
            if not layout.exists():
                self._atomic_write(layout, canonical_json(_LAYOUT_FILE))
            index = self.root / "index.json"
            if not index.exists():
                with self._index_lock():
                    if not index.exists():
                        self._write_index([])
        except PermissionError as exc:
            raise InvalidInputError(
                f"cannot write the local store at {str(self.root)!r}: {exc.strerror}",
                hint="set MODELREG_HOME to a writable directory",
            ) from exc

    def blob_path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def has_blob(self, digest: Digest) -> bool:
        return self.blob_path(digest).is_file()

    # ----------------------------------------------------------------- write
    def _atomic_write(self, path: Path, data: bytes) -> None:
        with local_storage(path, "write", needed=len(data)):
            atomic_write(path, data, mode=_FILE_MODE, fsync=self.fsync)

    def _blob_file(self, digest: Digest) -> AtomicFile:
        """A blob being written: in ``ingest/`` until committed under its digest."""
        final = self.blob_path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        return AtomicFile(final, mode=_FILE_MODE, fsync=self.fsync, tmp_dir=self.root / "ingest")

    def ingest(self, desc: Descriptor, *, verified_by: VerifyingReader | None = None) -> BlobWriter:
        """A writer that lands the blob under its digest only if the bytes match.

        When every byte written comes from ``verified_by`` (a reader of the same
        descriptor), the writer does not hash them again: it commits only if that
        reader reached EOF verified, and the byte count matches.
        """
        return BlobWriter(self, desc, verified_by=verified_by)

    def write_blob(self, desc: Descriptor, stream: BinaryIO) -> int:
        """Copy ``stream`` into the store, verifying; returns bytes written (0 if present)."""
        if self.has_blob(desc.digest):
            return 0
        with (
            VerifyingReader(stream, desc) as reader,
            self.ingest(desc, verified_by=reader) as writer,
        ):
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while n := reader.readinto(buf):
                writer.write(view[:n])
        return desc.size

    def add_clone(
        self, desc: Descriptor, src: Path, clone: Callable[[Path, BinaryIO], bool]
    ) -> bool:
        """Store the file ``src``, already verified against ``desc`` by the caller, under
        its digest as a copy-on-write clone (``clone(src, dst)``, e.g. FICLONE): no byte is
        written. False, with nothing stored, when the filesystem cannot clone it."""
        if self.has_blob(desc.digest):
            return True
        with local_storage(self.root, "store a blob in", needed=desc.size):
            return self._add_clone(desc, src, clone)

    def _add_clone(
        self, desc: Descriptor, src: Path, clone: Callable[[Path, BinaryIO], bool]
    ) -> bool:
        out = self._blob_file(desc.digest)
        try:
            if not clone(src, out.file) or os.fstat(out.file.fileno()).st_size != desc.size:
                return False
            out.commit()
            return True
        finally:
            out.discard()

    def evict(self, digest: Digest) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.blob_path(digest).unlink()

    # ------------------------------------------------------------ integrity
    def open_blob(self, desc: Descriptor) -> StoreBlobReader:
        """The blob as a verifying stream that quarantines it if it does not verify
        (:class:`StoreBlobReader`); NotFoundError when the store lacks it."""
        path = self.blob_path(desc.digest)
        try:
            f = open(path, "rb")  # noqa: SIM115 (closed by the reader)
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"blob {desc.digest} is not in the local store {str(self.root)!r}"
            ) from exc
        return StoreBlobReader(self, f, desc)

    def check_blob(self, digest: Digest, size: int | None = None) -> str | None:
        """Re-hash a stored blob: None when it matches ``digest`` (and ``size`` if
        given), else what is wrong. Raises FileNotFoundError when it is absent."""
        hasher = digest.hasher()
        with open(self.blob_path(digest), "rb") as f:
            while block := f.read(CHUNK):
                hasher.update(block)
        if size is not None and hasher.size != size:
            return f"{hasher.size} bytes, its descriptor declares {size}"
        actual = hasher.digest()
        if actual != digest:
            return f"its content hashes to {actual}"
        return None

    def quarantine(self, digest: Digest, *, read: os.stat_result | None = None) -> Path | None:
        """Move the blob into ``quarantine/``; the new path, or None when there was
        nothing to move. With ``read`` (the ``fstat`` of the file found corrupt), only
        if the blob path still names that file (not a good copy written since)."""
        src = self.blob_path(digest)
        dst_dir = self.root / QUARANTINE_DIR
        dst = dst_dir / f"{digest.algorithm}-{digest.hex}.{time.time_ns()}"
        with local_storage(self.root, "quarantine a blob in"):
            dst_dir.mkdir(exist_ok=True)
            try:
                now = src.stat()
                if read is not None and (now.st_ino, now.st_dev) != (read.st_ino, read.st_dev):
                    return None
                os.rename(src, dst)
            except FileNotFoundError:
                return None
        return dst

    def quarantined(self) -> list[Path]:
        """The files in ``quarantine/``, oldest first."""
        try:
            return sorted((self.root / QUARANTINE_DIR).iterdir())
        except FileNotFoundError:
            return []

    def corrupt(
        self, digest: Digest, problem: str, *, read: os.stat_result | None = None
    ) -> CorruptCacheError:
        """Quarantine a blob found corrupt; the error to raise for it."""
        moved = self.quarantine(digest, read=read)
        where = f"moved to {moved}" if moved is not None else "already moved aside"
        return CorruptCacheError(
            f"the local copy of {digest} in {self.root} is damaged ({problem}); "
            f"it was {where} and will not be used",
            hint="fetch it again from its source: pull again from the registry, or run "
            "`modelreg cache verify --repair --from REGISTRY/REPO`",
            digest=str(digest),
            quarantined=str(moved) if moved is not None else None,
        )

    # ----------------------------------------------------------------- index
    @contextlib.contextmanager
    def _index_lock(self) -> Iterator[None]:
        with self._lock, open(self.root / "index.json.lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def read_index(self, *, missing_ok: bool = True) -> list[Any]:
        """The ``manifests`` list of ``index.json`` as stored, items unchecked.

        No file is an empty index, or with ``missing_ok=False`` a FormatError (a
        reader that must know what is tagged cannot assume nothing is); so is a file
        too large, not strict JSON (:mod:`modelreg._json`) or without the list."""
        path = self.root / "index.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            if missing_ok:
                return []
            raise FormatError(f"{path} is missing") from exc
        if len(data) > _MAX_INDEX_BYTES:
            raise FormatError(f"{path} is unreasonably large ({len(data)} bytes)")
        obj = loads_strict(
            data, what=str(path), hint="the local store is damaged; restore it or remove the file"
        )
        manifests = obj.get("manifests") if isinstance(obj, dict) else None
        if not isinstance(manifests, list):
            raise FormatError(f"{path} has no manifests list")
        return manifests

    def _read_index(self) -> list[dict[str, Any]]:
        return [m for m in self.read_index() if isinstance(m, dict)]

    def _write_index(self, entries: list[dict[str, Any]]) -> None:
        doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
        self._atomic_write(self.root / "index.json", canonical_json(doc))

    def entries(self) -> list[Descriptor]:
        return [Descriptor.from_dict(e, "index.json entry") for e in self._read_index()]

    def add_manifest(self, desc: Descriptor, ref_name: str | None) -> None:
        """Record a manifest in index.json, tagged with ``ref_name`` or untagged."""
        with self._index_lock():
            entries = self._read_index()
            kept = []
            for entry in entries:
                name = (entry.get("annotations") or {}).get(mt.ANN_REF_NAME)
                if ref_name is not None and name == ref_name:
                    continue  # the tag moves to the new manifest
                if ref_name is None and entry.get("digest") == str(desc.digest):
                    return  # already recorded
                kept.append(entry)
            annotations = dict(desc.annotations)
            annotations.pop(mt.ANN_REF_NAME, None)
            if ref_name is not None:
                annotations[mt.ANN_REF_NAME] = ref_name
            kept.append(desc.with_annotations(annotations).to_dict())
            self._write_index(kept)

    def remove_ref(self, ref_name: str) -> bool:
        return bool(
            self.drop_entries(
                lambda e: (e.get("annotations") or {}).get(mt.ANN_REF_NAME) == ref_name
            )
        )

    def drop_entries(self, drop: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Remove the ``index.json`` entries ``drop`` selects, in one read-modify-write
        under the index lock (``drop`` sees the entries as they are then); returns them."""
        with self._index_lock():
            kept: list[dict[str, Any]] = []
            dropped: list[dict[str, Any]] = []
            for entry in self._read_index():
                (dropped if drop(entry) else kept).append(entry)
            if dropped:
                self._write_index(kept)
            return dropped

    def target(self, repository: str | None) -> LayoutTarget:
        return LayoutTarget(self, repository)


class StoreBlobReader(VerifyingReader):
    """A verifying read of a store blob: a mismatch quarantines the blob and raises
    :class:`~modelreg.errors.CorruptCacheError` (an :class:`IntegrityError`)."""

    def __init__(self, store: LayoutStore, f: BinaryIO, desc: Descriptor) -> None:
        super().__init__(f, desc, what=f"local blob {desc.digest}")
        self._store = store
        self._stat = os.fstat(f.fileno())

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            return super().readinto(buffer)
        except CorruptCacheError:
            raise
        except IntegrityError as exc:
            self.close()
            raise self._store.corrupt(self.descriptor.digest, exc.message, read=self._stat) from exc


class BlobWriter:
    """Writes one blob into ``ingest/`` and commits it under its digest when verified."""

    def __init__(
        self, store: LayoutStore, desc: Descriptor, *, verified_by: VerifyingReader | None = None
    ) -> None:
        if verified_by is not None and (
            verified_by.descriptor.digest != desc.digest or verified_by.descriptor.size != desc.size
        ):
            raise ValueError("verified_by must read the blob being written")
        self._store = store
        self._desc = desc
        self._verified_by = verified_by
        with self._storage():
            self._out = store._blob_file(desc.digest)
        self._hasher = desc.digest.hasher()
        self._written = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._verified_by is None:
            self._hasher.update(data)
        self._written += len(data)
        with self._storage():
            self._out.write(data)

    def _storage(self) -> contextlib.AbstractContextManager[None]:
        return local_storage(self._store.root, "store a blob in", needed=self._desc.size)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                with self._storage():
                    self._commit()
        finally:
            self._out.discard()

    def _commit(self) -> None:
        if self._verified_by is not None:
            if not self._verified_by.verified or self._written != self._desc.size:
                raise IntegrityError(
                    f"blob {self._desc.digest}: {self._written} bytes written from a read that "
                    "did not verify to the end",
                    hint="the source is corrupt or the copy stopped early; nothing was stored",
                )
        elif self._hasher.size != self._desc.size or self._hasher.digest() != self._desc.digest:
            raise IntegrityError(
                f"blob {self._desc.digest}: wrote {self._hasher.size} bytes hashing to "
                f"{self._hasher.digest()}, expected {self._desc.size} bytes",
                hint="the source is corrupt; nothing was stored",
            )
        self._out.commit()


class LayoutTarget:
    """A repository view of a :class:`LayoutStore`; implements the Target protocol."""

    def __init__(self, store: LayoutStore, repository: str | None) -> None:
        self.store = store
        self.repository = repository

    def __repr__(self) -> str:
        return f"LayoutTarget({str(self.store.root)!r}, {self.repository!r})"

    @property
    def name(self) -> str:
        """As a reference names it: the store's repository, or ``oci:PATH`` for a layout."""
        return self.repository or f"oci:{self.store.root}"

    def _ref_name(self, tag: str) -> str:
        return f"{self.repository}:{tag}" if self.repository else tag

    # ------------------------------------------------------------------ read
    def _open(self, desc: Descriptor) -> BinaryIO:
        try:
            return open(self.store.blob_path(desc.digest), "rb")
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"blob {desc.digest} is not in the local store {str(self.store.root)!r}"
            ) from exc

    def fetch(self, desc: Descriptor) -> VerifyingReader:
        """A verifying read; a blob found corrupt is quarantined (CorruptCacheError)."""
        return self.store.open_blob(desc)

    def fetch_range(self, desc: Descriptor, offset: int, length: int) -> bytes:
        with self._open(desc) as f:
            f.seek(offset)
            return f.read(length)

    def exists(self, desc: Descriptor) -> bool:
        """Whether the blob is here. A blob found here is touched (mtime): a writer
        that skips it because it exists is about to reference it, and `cache prune`
        spares blobs younger than its grace period."""
        path = self.store.blob_path(desc.digest)
        try:
            if path.stat().st_size != desc.size:
                return False
        except FileNotFoundError:
            return False
        with contextlib.suppress(OSError):  # read-only store: nothing to protect from here
            os.utime(path)
        return True

    def resolve(self, reference: str) -> Descriptor:
        entries = self.store.entries()
        if reference.count(":") == 1 and reference.split(":")[0] in ("sha256", "sha512"):
            digest = Digest.parse(reference)
            for entry in entries:
                if entry.digest == digest:
                    return entry.with_annotations({})
            path = self.store.blob_path(digest)
            if not path.is_file():
                raise NotFoundError(
                    f"manifest {digest} not found in {self._where()}",
                    hint="list what is there with `modelreg tags`",
                )
            size = path.stat().st_size
            if size > MAX_MANIFEST_BYTES:
                raise FormatError(f"blob {digest} is too large to be a manifest")
            data = path.read_bytes()
            node = parse_manifest_or_index(data, None, f"manifest {digest}")
            return Descriptor(node.media_type, digest, size)
        want = self._ref_name(reference)
        for entry in reversed(entries):
            if entry.annotations.get(mt.ANN_REF_NAME) == want:
                return entry.with_annotations({})
        raise NotFoundError(
            f"tag {reference!r} not found in {self._where()}",
            hint="list the tags with `modelreg tags " + (self.repository or "oci:DIR") + "`",
        )

    def _where(self) -> str:
        if self.repository:
            return f"repository {self.repository!r} of the local store ({self.store.root})"
        return f"OCI layout {str(self.store.root)!r}"

    def referrers(self, desc: Descriptor, artifact_type: str | None = None) -> list[Descriptor]:
        out: list[Descriptor] = []
        seen: set[Digest] = set()
        for entry in self.store.entries():
            if entry.media_type not in mt.ALL_MANIFEST_TYPES or entry.digest in seen:
                continue
            seen.add(entry.digest)
            path = self.store.blob_path(entry.digest)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            node = parse_manifest_or_index(data, entry.media_type)
            if not node.is_referrer_of(desc.digest, artifact_type):
                continue
            out.append(
                Descriptor(
                    node.media_type,
                    entry.digest,
                    entry.size,
                    annotations=dict(node.annotations),
                    artifact_type=node.effective_artifact_type,
                )
            )
        for listed in self._fallback_referrers(desc):
            wanted = not artifact_type or listed.artifact_type == artifact_type
            if wanted and listed.digest not in {d.digest for d in out}:
                out.append(listed)
        return out

    def _fallback_referrers(self, desc: Descriptor) -> list[Descriptor]:
        """What a tag-schema index tagged ``sha256-<hex>`` lists (skopeo copies one
        into a layout like any tag; its entries may have lost ``artifactType``)."""
        try:
            tagged = self.resolve(referrers_tag(desc.digest))
        except NotFoundError:
            return []
        if tagged.media_type not in mt.INDEX_TYPES:
            return []
        index = parse_manifest_or_index(self._verified_blob(tagged), tagged.media_type)
        if not isinstance(index, Index):
            return []
        where = f"the referrers index at tag {referrers_tag(desc.digest)!r} in {self._where()}"
        entries = complete_entries(index.manifests, desc, self._listed_manifest, where=where)
        return [d for d in entries if d.media_type in mt.ALL_MANIFEST_TYPES]

    def _listed_manifest(self, entry: Descriptor) -> bytes | None:
        try:
            return self._verified_blob(entry)
        except NotFoundError:
            return None

    def _verified_blob(self, desc: Descriptor) -> bytes:
        """A manifest-sized blob of the store, read whole and checked against its digest."""
        if desc.size > MAX_MANIFEST_BYTES:
            raise SizeLimitError(
                f"{desc.digest} in {self._where()} is over {MAX_MANIFEST_BYTES} bytes",
                hint="a referrers index or referrer manifest is never that large",
            )
        try:
            data = self.store.blob_path(desc.digest).read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"{desc.digest} is not in {self._where()}") from exc
        if Digest.from_bytes(data, desc.digest.algorithm) != desc.digest:
            raise IntegrityError(
                f"{desc.digest} in {self._where()} does not hash to its digest",
                hint="the store is damaged; run `modelreg cache verify`",
            )
        return data

    def tags(self) -> Iterator[str]:
        names = []
        for entry in self.store.entries():
            name = entry.annotations.get(mt.ANN_REF_NAME)
            if name is None:
                continue
            if self.repository:
                repo, sep, tag = name.rpartition(":")
                if sep and repo == self.repository:
                    names.append(tag)
            elif ":" not in name or "/" not in name:
                names.append(name)
        return iter(sorted(set(names)))

    # ----------------------------------------------------------------- write
    def push(self, desc: Descriptor, source: BlobSource) -> PushResult:
        if self.exists(desc):
            return PushResult(existed=True)
        try:
            with source(0) as stream:
                sent = self.store.write_blob(desc, stream)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise ModelRegError(
                    f"no space left writing blob {desc.digest} into {self.store.root}",
                    hint="free disk space or set MODELREG_HOME to a larger disk",
                ) from exc
            raise
        return PushResult(sent=sent)

    def push_manifest(self, desc: Descriptor, data: bytes, tag: str | None = None) -> None:
        if not self.exists(desc):
            self.store.write_blob(desc, io.BytesIO(data))
        else:
            computed = Digest.from_bytes(data, desc.digest.algorithm)
            if computed != desc.digest or len(data) != desc.size:
                raise IntegrityError(f"manifest bytes do not match {desc.digest}")
        self.store.add_manifest(desc, self._ref_name(tag) if tag else None)

    def tag(self, desc: Descriptor, tag: str) -> None:
        if not self.store.has_blob(desc.digest):
            raise NotFoundError(f"manifest {desc.digest} is not in {self._where()}; cannot tag it")
        self.store.add_manifest(desc, self._ref_name(tag))

    def untag(self, tag: str) -> bool:
        return self.store.remove_ref(self._ref_name(tag))
