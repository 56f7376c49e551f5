"""Write a model artifact's files into a directory, every byte verified.

* Which layer is which file: :mod:`modelreg.model.producers` (ModelPack, legacy
  ``vnd.cnai``, KitOps, Docker model artifacts, plain ORAS; parts of split files).
* Paths are refused when absolute, containing ``..``, backslashes, NUL or
  control characters, or colliding after normalisation (SECURITY.md case 6);
  archive layers are extracted by :mod:`modelreg.model.archive` (cases 7, 9).
  Before anything leaves the staging directory, every staged link of every layer
  is followed together, the way the kernel would, through what the output
  directory already holds: none may lead outside it (:mod:`modelreg.model._linkcheck`).
* Files are written into a staging directory inside the output directory, each
  verified against its layer digest, and renamed into place only when every
  file is complete: a failed pull leaves the output directory as it was.
* Split files are reassembled by writing each verified part at its offset
  (parts in parallel, bounded buffers), then the whole file is hashed and
  checked against the digest its parts declare.
* Blobs come from the local cache when present, else from a remembered copy
  (:mod:`modelreg.content.copies`: a file written by an earlier pull, still
  unchanged, read while verifying every byte), else from the source. Output files
  are reflinked from the cache where the filesystem can, hard-linked only on
  request (``link=True``: editing a hard-linked file would corrupt the cache), else
  copied with verification.
* What the cache keeps of a raw layer or split part it lacked (``cache_mode``):
  ``copy``, its own copy (reflinked from the output file where the filesystem can,
  else written on the way, so every byte is written twice); ``reference``, nothing
  but the path and identity of the verified output file, recorded once it is in
  place (each byte is written once); ``auto``, a reflink where the filesystem can,
  else a reference. Compressed and archive layers are always written to the cache
  on the way. Reused bytes count as from the cache, never as fetched.
* A raw layer is received and hashed on the calling thread while a writer thread
  writes the previous blocks (a small pool of buffers, shared by the pull); with
  ``fsync`` a helper thread flushes the file every 256 MiB, so the final fsync is
  short.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import fnmatch
import io
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, get_args

from modelreg.content.base import CHUNK, ReadOnlyTarget, VerifyingReader
from modelreg.content.copies import Copies, Copy
from modelreg.content.layout import LayoutStore
from modelreg.errors import (
    FormatError,
    IntegrityError,
    InvalidInputError,
    UnsafeContentError,
)
from modelreg.events import Event, ProgressCallback, emit
from modelreg.model import archive as arch
from modelreg.model._linkcheck import check_staged
from modelreg.model.paths import safe_relpath
from modelreg.model.producers import (
    ArchiveLayer,
    LayerPlan,
    PartRef,
    RawLayer,
    SplitFile,
    layer_mode,
    layer_path,
    plan_manifest,
)
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Hasher
from modelreg.oci.manifest import Manifest

__all__ = [
    "CACHE_MODES",
    "CacheMode",
    "FileEntry",
    "UnpackResult",
    "layer_mode",
    "layer_path",
    "parse_cache_mode",
    "plan_files",
    "safe_relpath",
    "unpack",
]

_FICLONE = 0x40049409

CacheMode = Literal["auto", "copy", "reference"]
CACHE_MODES: tuple[CacheMode, ...] = get_args(CacheMode)

_WRITE_BUFFERS = 8
"""Blocks of :data:`CHUNK` shared by a pull's writer threads (32 MiB at most)."""
_SYNC_EVERY = 256 * 1024 * 1024
"""With fsync, flush a file being written every this many bytes (a short final fsync)."""


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


@dataclass(frozen=True)
class FileEntry:
    path: str
    descriptor: Descriptor
    mode: int


@dataclass
class UnpackResult:
    files: list[FileEntry] = field(default_factory=list)
    bytes_fetched: int = 0
    bytes_from_cache: int = 0
    producer: str = "modelpack"
    skipped: list[str] = field(default_factory=list)
    """Layers not written, with the reason (e.g. ORAS layers without a title)."""
    blobs: list[str] = field(default_factory=list)
    """Digests of every layer read."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, fetched: int, cached: int) -> None:
        with self._lock:
            self.bytes_fetched += fetched
            self.bytes_from_cache += cached


@dataclass
class _Planned:
    plan: LayerPlan
    raw: list[tuple[str, RawLayer]]
    split: list[tuple[str, SplitFile]]
    archives: list[ArchiveLayer]
    claims: arch.PathClaims


def _matches(path: str, include: Sequence[str]) -> bool:
    return not include or any(fnmatch.fnmatchcase(path, p) for p in include)


def _plan(manifest: Manifest, include: Sequence[str]) -> _Planned:
    plan = plan_manifest(manifest)
    claims = arch.PathClaims()
    raw: list[tuple[str, RawLayer]] = []
    split: list[tuple[str, SplitFile]] = []
    for r in plan.raw:
        path = safe_relpath(r.path, f"layer {r.index} path")
        if _matches(path, include):
            claims.claim_file(path, f"layer {r.path!r}")
            raw.append((path, r))
    for s in plan.split:
        path = safe_relpath(s.path, "split file path")
        if _matches(path, include):
            claims.claim_file(path, f"split file {s.path!r}")
            split.append((path, s))
    if include and not raw and not split and not plan.archives:
        raise InvalidInputError(
            f"no file of the model matches --include {' '.join(include)!r}",
            hint="see the file list with `modelreg inspect REF`",
        )
    if not raw and not split and not plan.archives and not include:
        why = "; ".join(f"{d.digest.short}: {reason}" for d, reason in plan.skipped[:3])
        raise FormatError(
            "the artifact has no layer that names a file" + (f" ({why})" if why else ""),
            hint="this is not a model or file artifact (a container image?)",
        )
    return _Planned(plan, raw, split, plan.archives, claims)


def plan_files(manifest: Manifest, include: Sequence[str] = ()) -> list[FileEntry]:
    """Map file layers (and split files) to safe, unique output paths.

    Archive layers are not listed: their members are known only when read.
    """
    planned = _plan(manifest, include)
    out = [FileEntry(path, r.descriptor, r.mode) for path, r in planned.raw]
    out += [FileEntry(path, s.descriptor, s.mode) for path, s in planned.split]
    return out


def _try_clone(src: Path, dst: BinaryIO) -> bool:
    try:
        with open(src, "rb") as s:
            fcntl.ioctl(dst.fileno(), _FICLONE, s.fileno())
        return True
    except OSError:
        return False


def _check_destinations(out: Path, paths: Sequence[str]) -> None:
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
                if not parent.is_dir():
                    raise InvalidInputError(
                        f"{str(parent)!r} exists and is not a directory; the model puts "
                        f"{rel!r} below it",
                        hint="remove it or pull into an empty directory",
                    )
                real = parent.resolve()
                if real != real_out and real_out not in real.parents:
                    raise UnsafeContentError(
                        f"{str(parent)!r} is a symlink leading outside the output directory",
                        hint="remove the link or pull into an empty directory",
                    )
            parent = parent.parent


def prepare_output(output: str | os.PathLike[str]) -> Path:
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(
            f"output path {str(out)!r} exists and is not a directory",
            hint="choose a directory with -o/--output",
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot create output directory {str(out)!r}: {exc.strerror}"
        ) from exc
    return out


class _Tee(io.RawIOBase):
    """Reads a verifying reader, copying every byte into a cache writer, counting."""

    def __init__(
        self,
        reader: io.RawIOBase,
        writer: object | None,
        on_bytes: Callable[[int], None] | None,
    ) -> None:
        super().__init__()
        self._reader = reader
        self._writer = writer
        self._on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._reader.readinto(buffer) or 0
        if n:
            view = memoryview(buffer)[:n]
            if self._writer is not None:
                self._writer.write(view)  # type: ignore[attr-defined]
            if self._on_bytes is not None:
                self._on_bytes(n)
        return n


class _BufferPool:
    """At most ``count`` blocks of ``size`` bytes, made on demand and reused."""

    def __init__(self, count: int, size: int = CHUNK) -> None:
        self._count = count
        self._size = size
        self._free: list[bytearray] = []
        self._made = 0
        self._cond = threading.Condition()

    def get(self) -> bytearray:
        with self._cond:
            while not self._free and self._made >= self._count:
                self._cond.wait()
            if self._free:
                return self._free.pop()
            self._made += 1
        return bytearray(self._size)

    def put(self, buf: bytearray) -> None:
        with self._cond:
            self._free.append(buf)
            self._cond.notify()


class _Syncer:
    """Flushes a file to disk on request, on a thread of its own, while writes go on."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._cond = threading.Condition()
        self._pending = False
        self._stopping = False
        self.error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="pull-sync", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        with self._cond:
            self._pending = True
            self._cond.notify()

    def stop(self) -> None:
        """Wait for a flush under way; skip any requested (a final fsync follows)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                self._pending = False
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                self.error = exc
                return


class _BlockWriter:
    """Writes filled blocks to sinks on a thread of its own, returning them to the pool."""

    def __init__(
        self,
        pool: _BufferPool,
        sinks: Sequence[Callable[[memoryview], object]],
        sync_fd: int | None,
    ) -> None:
        self._pool = pool
        self._sinks = sinks
        self._queue: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        self._syncer = _Syncer(sync_fd) if sync_fd is not None else None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pull-write", daemon=True)
        self._thread.start()

    def put(self, buf: bytearray, n: int) -> None:
        if self._error is not None:
            self._pool.put(buf)
            raise self._error
        self._queue.put((buf, n))

    def close(self) -> None:
        """Wait until every block is written; raise what went wrong writing."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._syncer is not None and self._syncer.error is not None:
            raise self._syncer.error

    def abort(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        written = synced = 0
        try:
            while (item := self._queue.get()) is not None:
                buf, n = item
                try:
                    if self._error is None:
                        view = memoryview(buf)[:n]
                        for sink in self._sinks:
                            sink(view)
                        view.release()
                        written += n
                        if self._syncer is not None and written - synced >= _SYNC_EVERY:
                            self._syncer.kick()
                            synced = written
                except BaseException as exc:  # reported by put() and close()
                    self._error = exc
                finally:
                    self._pool.put(buf)
        finally:
            if self._syncer is not None:
                self._syncer.stop()


def _preallocate(fd: int, size: int) -> None:
    """Allocate the blocks of a file about to be written (best effort).

    Buffered writes into allocated blocks cost about half the CPU of writes that
    allocate as they go (ext4, measured), and the file is not fragmented. The
    ``fallocate`` system call itself, never glibc's ``posix_fallocate``, which
    emulates it where the filesystem lacks it by writing every block.
    """
    global _fallocate
    if _fallocate is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            call = libc.fallocate
            call.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            call.restype = ctypes.c_int
            _fallocate = call
        except (OSError, AttributeError):
            _fallocate = False
    if _fallocate is not False and size > 0:
        _fallocate(fd, 0, 0, size)  # a failure leaves the writes to allocate


_fallocate: Callable[[int, int, int, int], int] | Literal[False] | None = None


def _fd_sink(fd: int) -> Callable[[memoryview], object]:
    def write(view: memoryview) -> None:
        done = 0
        while done < len(view):
            done += os.write(fd, view[done:])

    return write


def _fill(stream: io.RawIOBase, buf: bytearray) -> int:
    view = memoryview(buf)
    total = 0
    while total < len(buf):
        n = stream.readinto(view[total:])
        if not n:
            break
        total += n
    return total


def _pump(
    stream: io.RawIOBase,
    sinks: Sequence[Callable[[memoryview], object]],
    pool: _BufferPool,
    advance: Callable[[int], None],
    sync_fd: int | None,
    *,
    threaded: bool = True,
) -> None:
    """Copy ``stream`` to EOF into every sink; receiving (and verifying) the next block
    overlaps writing the previous ones when ``threaded``."""
    if not threaded:
        buf = pool.get()
        try:
            while n := _fill(stream, buf):
                view = memoryview(buf)[:n]
                for sink in sinks:
                    sink(view)
                view.release()
                advance(n)
        finally:
            pool.put(buf)
        return
    writer = _BlockWriter(pool, sinks, sync_fd)
    try:
        while True:
            buf = pool.get()
            try:
                n = _fill(stream, buf)
            except BaseException:
                pool.put(buf)
                raise
            if not n:
                pool.put(buf)
                break
            writer.put(buf, n)
            advance(n)
    except BaseException:
        writer.abort()
        raise
    writer.close()


def _reflinks(staging: Path, cache: LayoutStore) -> bool:
    """Whether a file written in ``staging`` can be cloned into ``cache`` (a small probe)."""
    probe: str | None = None
    clone: str | None = None
    try:
        fd, probe = tempfile.mkstemp(dir=staging, prefix=".modelreg-probe-")
        with os.fdopen(fd, "wb") as f:
            f.write(b"\0" * 4096)
        fd, clone = tempfile.mkstemp(dir=cache.root / "ingest", prefix="reflink-probe-")
        with os.fdopen(fd, "wb") as dst:
            return _try_clone(Path(probe), dst)
    except OSError:
        return False
    finally:
        for path in (probe, clone):
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


class _Reader:
    """Opens layers from the cache when there, else from the source (teeing into the cache)."""

    def __init__(
        self,
        source: ReadOnlyTarget,
        cache: LayoutStore | None,
        result: UnpackResult,
        progress: ProgressCallback | None,
    ) -> None:
        self.source = source
        self.cache = cache
        self.result = result
        self.progress = progress
        self.remote = not (cache is not None and getattr(source, "store", None) is cache)

    def cached_path(self, desc: Descriptor) -> Path | None:
        if self.cache is not None and self.cache.has_blob(desc.digest):
            return self.cache.blob_path(desc.digest)
        return None

    @contextlib.contextmanager
    def open(self, desc: Descriptor, name: str, *, keep: bool = True) -> Iterator[io.RawIOBase]:
        """A stream over the layer, verified as it is read; must be read to EOF. Bytes
        fetched from the source are written to the cache on the way when ``keep``."""

        def advance(n: int) -> None:
            emit(self.progress, Event("advance", name, desc, n=n, total=desc.size))

        emit(self.progress, Event("start", name, desc, total=desc.size))
        cached = self.cached_path(desc)
        with contextlib.ExitStack() as stack:
            raw = None
            if cached is not None:
                # `cache prune` may remove it between the check and the open: not cached
                with contextlib.suppress(FileNotFoundError):
                    raw = stack.enter_context(open(cached, "rb"))
            if raw is not None:
                reader = stack.enter_context(
                    VerifyingReader(raw, desc, what=f"cached blob {desc.digest}")
                )
                yield _Tee(reader, None, advance)
                self.result.add(0, desc.size)
            else:
                writer = None
                reader = stack.enter_context(self.source.fetch(desc))
                if self.cache is not None and self.remote and keep:
                    # the reader verifies every byte: the cache writer need not hash them again
                    writer = stack.enter_context(self.cache.ingest(desc, verified_by=reader))
                yield _Tee(reader, writer, advance)
                self.result.add(desc.size, 0)
        emit(self.progress, Event("done", name, desc, total=desc.size))


def _finish_file(f: BinaryIO, fsync: bool) -> None:
    if fsync:
        f.flush()
        os.fsync(f.fileno())


def _read_to_end(stream: io.RawIOBase) -> None:
    buf = bytearray(CHUNK)
    while stream.readinto(buf):
        pass


def unpack(
    source: ReadOnlyTarget,
    manifest: Manifest,
    output: str | os.PathLike[str],
    *,
    cache: LayoutStore | None = None,
    include: Sequence[str] = (),
    link: bool = False,
    concurrency: int = 4,
    progress: ProgressCallback | None = None,
    fsync: bool = True,
    expand_ratio: int = arch.DEFAULT_EXPAND_RATIO,
    cache_mode: CacheMode = "copy",
    copies: Copies | None = None,
) -> UnpackResult:
    """Write the files of ``manifest`` into ``output``; all or nothing.

    ``cache_mode`` says what ``cache`` keeps of what it lacked (see the module
    docstring); ``copies`` is where verified output files are remembered and looked
    up (used only with a ``cache``). ``link`` implies ``copy``.
    """
    mode = parse_cache_mode(cache_mode)
    if link:
        if mode == "reference":
            raise InvalidInputError(
                "hard links (--link) need the cache's own copy; cache mode 'reference' keeps none",
                hint="use --cache-mode copy (or auto) with --link",
            )
        mode = "copy"
    if cache is None:
        copies = None
    planned = _plan(manifest, include)
    out = prepare_output(output)
    _check_destinations(out, [p for p, _ in planned.raw] + [p for p, _ in planned.split])
    staging = Path(tempfile.mkdtemp(prefix=".modelreg-pull-", dir=out))
    result = UnpackResult(producer=planned.plan.producer)
    result.skipped = [f"{d.digest.short}: {why}" for d, why in planned.plan.skipped]
    result.blobs = [str(d.digest) for d in planned.plan.blobs]
    reader = _Reader(source, cache, result, progress)
    files_lock = threading.Lock()
    matcher = (lambda p: _matches(p, include)) if include else None
    link_owners: dict[str, str] = {}  # staged symbolic link -> the layer that wrote it

    def add_files(entries: Sequence[FileEntry]) -> None:
        with files_lock:
            result.files.extend(entries)

    # one blob may back several files: fetch it once
    by_digest: dict[str, list[tuple[str, RawLayer]]] = {}
    for path, r in planned.raw:
        if not r.compressed:
            by_digest.setdefault(str(r.descriptor.digest), []).append((path, r))

    buffers = _BufferPool(_WRITE_BUFFERS)
    keeps = cache is not None and reader.remote  # the cache is to keep what it lacks
    reflink = False  # whether staged files clone into the cache: probed below
    records: list[tuple[str, str, int, int]] = []  # (digest, path, offset, length) to remember
    records_lock = threading.Lock()

    def remember(digest: str, paths: Sequence[str], offset: int, length: int) -> None:
        if copies is not None:
            with records_lock:
                records.extend((digest, p, offset, length) for p in paths)

    def stream_into(
        stream: io.RawIOBase, desc: Descriptor, name: str | None, dst_path: Path, tee: bool
    ) -> None:
        """Write ``stream`` (verifying ``desc``) to ``dst_path``, and to the cache if
        ``tee``; progress is reported under ``name`` unless None."""

        def advance(n: int) -> None:
            if name is not None:
                emit(progress, Event("advance", name, desc, n=n, total=desc.size))

        fd = os.open(dst_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            if desc.size > CHUNK:
                _preallocate(fd, desc.size)
            with contextlib.ExitStack() as stack:
                sinks = [_fd_sink(fd)]
                if tee:
                    assert cache is not None and isinstance(stream, VerifyingReader)
                    # the reader verifies every byte: the cache writer need not hash them again
                    sinks.append(stack.enter_context(cache.ingest(desc, verified_by=stream)).write)
                _pump(
                    stream,
                    sinks,
                    buffers,
                    advance,
                    fd if fsync else None,
                    threaded=desc.size > CHUNK,
                )
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def reuse_raw(desc: Descriptor, name: str, dst_path: Path, tee: bool) -> bool:
        """Write the blob from a remembered copy, verifying it; False if none holds."""
        if copies is None:
            return False
        for copy, raw in copies.usable(str(desc.digest), desc.size):
            emit(progress, Event("start", name, desc, total=desc.size))
            try:
                with VerifyingReader(raw, desc, what=f"{copy.path!r} (a copy of {name})") as src:
                    stream_into(src, desc, name, dst_path, tee)
            except IntegrityError:
                copies.forget(copy)
                emit(progress, Event("message", f"{copy.path} changed; fetching {name}"))
                continue
            emit(progress, Event("done", name, desc, total=desc.size))
            result.add(0, desc.size)
            return True
        return False

    def fetch_raw(desc: Descriptor, name: str, dst_path: Path, tee: bool) -> None:
        emit(progress, Event("start", name, desc, total=desc.size))
        with source.fetch(desc) as stream:
            stream_into(stream, desc, name, dst_path, tee)
        emit(progress, Event("done", name, desc, total=desc.size))
        result.add(desc.size, 0)

    def keep_raw(desc: Descriptor, staged: Path, paths: Sequence[str]) -> None:
        """Give the cache what ``mode`` says of a verified staged file it lacks."""
        assert cache is not None
        if reflink and cache.add_clone(desc, staged, _try_clone):
            return
        if mode == "copy":
            with open(staged, "rb") as f:
                cache.write_blob(desc, f)
        else:
            remember(str(desc.digest), paths, 0, desc.size)

    def write_from_cache(cached: Path, desc: Descriptor, group: list[tuple[str, RawLayer]]) -> bool:
        """Write the group's files from the cached blob; False (nothing left staged) if
        the blob vanished meanwhile (``cache prune`` in another process)."""
        emit(progress, Event("start", group[0][0], desc, total=desc.size))
        try:
            for path, _ in group:
                dst_path = staging / path
                if link:
                    os.link(cached, dst_path)
                    continue
                with open(dst_path, "wb") as dst:
                    cloned = _try_clone(cached, dst)
                    if cloned:
                        _finish_file(dst, fsync)
                if not cloned:
                    with VerifyingReader(open(cached, "rb"), desc) as verifying:
                        stream_into(verifying, desc, None, dst_path, tee=False)
        except FileNotFoundError:
            for path, _ in group:
                # unlink, never truncate: a hard link made above shares the cache's inode
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(staging / path)
            return False
        return True

    def write_raw(group: list[tuple[str, RawLayer]]) -> None:
        first_path, first = group[0]
        desc = first.descriptor
        for path, _ in group:
            (staging / path).parent.mkdir(parents=True, exist_ok=True)
        cached = reader.cached_path(desc)
        if cached is not None and write_from_cache(cached, desc, group):
            emit(progress, Event("advance", first_path, desc, n=desc.size, total=desc.size))
            emit(progress, Event("done", first_path, desc, total=desc.size))
            result.add(0, desc.size)
        else:
            staged = staging / first_path
            # copy mode without reflinks: the cache's copy is written on the way
            tee = keeps and mode == "copy" and not reflink
            if not reuse_raw(desc, first_path, staged, tee):
                fetch_raw(desc, first_path, staged, tee)
            for path, _ in group[1:]:
                shutil.copyfile(staged, staging / path)
                if fsync:
                    with open(staging / path, "rb+") as f:
                        os.fsync(f.fileno())
            if keeps and not tee:
                keep_raw(desc, staged, [p for p, _ in group])
        for path, r in group:
            os.chmod(staging / path, r.mode)
        add_files([FileEntry(path, r.descriptor, r.mode) for path, r in group])

    def write_compressed(path: str, r: RawLayer) -> None:
        desc = r.descriptor
        (staging / path).parent.mkdir(parents=True, exist_ok=True)
        limit = arch.expansion_limit(desc.size, r.declared_size, expand_ratio)
        with reader.open(desc, path) as stream, open(staging / path, "wb") as dst:
            digest, size = arch.decompress_file(
                stream,  # type: ignore[arg-type]
                dst,
                label=f"compressed layer {r.path!r}",
                limit=limit,
            )
            _read_to_end(stream)
            _finish_file(dst, fsync)
        os.chmod(staging / path, r.mode)
        add_files([FileEntry(path, Descriptor(desc.media_type, digest, size), r.mode)])

    def write_archive(a: ArchiveLayer) -> None:
        desc = a.descriptor
        if a.declared_size is not None:
            declared: int | None = a.declared_size + 1024 * 1024  # tar headers and padding
        else:
            declared = None
        limit = arch.expansion_limit(desc.size, declared, expand_ratio)
        with reader.open(desc, a.label) as stream:
            extracted = arch.extract_archive(
                stream,  # type: ignore[arg-type]
                staging,
                label=a.label,
                limit=limit,
                claims=planned.claims,
                include=matcher,
                prefix=a.prefix,
                tar_digest=a.tar_digest,
            )
            _read_to_end(stream)
        with files_lock:
            link_owners.update(
                (f.path, f"{a.label}: member {f.path!r}") for f in extracted if f.link is not None
            )
        add_files(
            [
                FileEntry(f.path, Descriptor(desc.media_type, f.digest, f.size), f.mode)
                for f in extracted
            ]
        )

    split_fds: dict[str, int] = {}

    def write_part(path: str, sf: SplitFile, k: int) -> None:
        part = sf.parts[k]
        desc = part.descriptor
        name = f"{path} [part {k + 1}/{len(sf.parts)}]"
        fd = split_fds[path]
        pos = part.offset
        cached = reader.cached_path(desc)
        if cached is not None and _copy_range(cached, fd, pos, desc.size):
            # a kernel copy, not hashed here: the whole-file digest covers these bytes, and
            # check_split looks for the bad cached part if it does not match
            from_cache[path].append(k)
            emit(progress, Event("skipped", name, desc, total=desc.size))
            result.add(0, desc.size)
            checks[path].part_done(k)
            return
        buf = buffers.get()
        try:
            if reuse_part(path, k, desc, name, fd, pos, buf):
                checks[path].part_done(k)
                return
            # copy mode: the cache keeps the part (parts are not block-aligned: no reflinks)
            with reader.open(desc, name, keep=mode == "copy") as stream:
                _pwrite_all(stream, fd, pos, buf, None)
        except IntegrityError as exc:
            raise IntegrityError(
                f"part {k + 1} of {len(sf.parts)} of {path!r}: {exc.message}", hint=exc.hint
            ) from exc
        finally:
            buffers.put(buf)
        checks[path].part_done(k)

    def reuse_part(
        path: str, k: int, desc: Descriptor, name: str, fd: int, pos: int, buf: bytearray
    ) -> bool:
        """Write a part from a remembered copy; False if none holds. Unless the cache
        is to keep a copy of it, the part is copied in the kernel, not hashed here:
        the whole-file digest covers it, and :func:`check_split` repairs the file
        from the source if it does not match."""
        if copies is None:
            return False

        def advance(n: int) -> None:
            emit(progress, Event("advance", name, desc, n=n, total=desc.size))

        for copy, opened in copies.usable(str(desc.digest), desc.size):
            emit(progress, Event("start", name, desc, total=desc.size))
            raw: io.RawIOBase | None = opened
            if not (keeps and mode == "copy"):
                with opened:
                    copied = _kernel_copy(opened.fileno(), copy.offset, fd, pos, desc.size)
                if copied:
                    reused[path].append((k, copy))
                    emit(progress, Event("advance", name, desc, n=desc.size, total=desc.size))
                    emit(progress, Event("done", name, desc, total=desc.size))
                    result.add(0, desc.size)
                    return True
                raw = copy.open()  # no kernel copy here: read it, verifying
                if raw is None:
                    copies.forget_file(copy)
                    continue
            assert raw is not None
            try:
                with contextlib.ExitStack() as stack:
                    src = stack.enter_context(
                        VerifyingReader(raw, desc, what=f"{copy.path!r} (a copy of {name})")
                    )
                    writer = None
                    if keeps and mode == "copy":
                        assert cache is not None
                        writer = stack.enter_context(cache.ingest(desc, verified_by=src))
                    _pwrite_all(src, fd, pos, buf, writer, advance)
            except IntegrityError:
                copies.forget(copy)
                emit(progress, Event("message", f"{copy.path} changed; fetching {name}"))
                continue
            emit(progress, Event("done", name, desc, total=desc.size))
            result.add(0, desc.size)
            return True
        return False

    def repair(path: str, sf: SplitFile) -> Hasher | None:
        """The parts copied unhashed (from the cache or remembered files) that do not
        match their digest in the staged file, fetched again; then the file is hashed
        again. None when every such part matched (the artifact itself is wrong)."""
        fd = split_fds[path]
        copied = {k: None for k in from_cache[path]} | dict(reused[path])
        bad = [k for k in sorted(copied) if not _range_matches(fd, sf.parts[k])]
        if not bad:
            return None
        buf = buffers.get()
        try:
            for k in bad:
                desc = sf.parts[k].descriptor
                copy = copied[k]
                if copy is not None:
                    assert copies is not None
                    copies.forget(copy)
                elif cache is not None:
                    cache.evict(desc.digest)
                emit(progress, Event("message", f"{path}: part {k + 1} was not intact; fetching"))
                result.add(0, -desc.size)  # reader.open counts it as fetched
                with reader.open(desc, f"{path} [part {k + 1}/{len(sf.parts)}]") as stream:
                    _pwrite_all(stream, fd, sf.parts[k].offset, buf, None)
            hasher = Hasher(sf.digest.algorithm)
            pos = 0
            while pos < sf.size:
                n = os.preadv(fd, [memoryview(buf)[: min(len(buf), sf.size - pos)]], pos)
                if n <= 0:
                    break
                hasher.update(memoryview(buf)[:n])
                pos += n
            return hasher
        finally:
            buffers.put(buf)

    def check_split(path: str, sf: SplitFile) -> None:
        hasher = checks[path].result()
        if hasher.size != sf.size or hasher.digest() != sf.digest:
            repaired = repair(path, sf)
            if repaired is not None and repaired.size == sf.size and repaired.digest() == sf.digest:
                hasher = repaired
        if hasher.size != sf.size or hasher.digest() != sf.digest:
            raise IntegrityError(
                f"{path!r} reassembled from {len(sf.parts)} verified parts hashes to "
                f"{hasher.digest()} ({hasher.size} bytes); its parts declare {sf.digest} "
                f"({sf.size} bytes)",
                hint="the artifact is inconsistent or tampered; nothing was kept",
            )
        if fsync:
            os.fsync(split_fds[path])
        os.chmod(staging / path, sf.mode)
        add_files([FileEntry(path, sf.descriptor, sf.mode)])
        if keeps and mode != "copy":
            # the file is remembered whole and part by part (parts the cache lacks)
            remember(str(sf.digest), [path], 0, sf.size)
            cached = set(from_cache[path])
            for k, part in enumerate(sf.parts):
                if k not in cached:
                    remember(str(part.descriptor.digest), [path], part.offset, part.descriptor.size)

    checks: dict[str, _WholeFileCheck] = {}
    from_cache: dict[str, list[int]] = {path: [] for path, _ in planned.split}
    reused: dict[str, list[tuple[int, Copy]]] = {path: [] for path, _ in planned.split}
    try:
        for path, sf in planned.split:
            target = staging / path
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            split_fds[path] = fd
            _preallocate(fd, sf.size)
            os.ftruncate(fd, sf.size)
            checks[path] = _WholeFileCheck(fd, sf, sync=fsync)
        if keeps and mode != "reference" and by_digest:
            assert cache is not None
            reflink = _reflinks(staging, cache)
        with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="pull") as pool:
            futures: list[Future[None]] = []
            futures += [pool.submit(write_archive, a) for a in planned.archives]
            futures += [pool.submit(write_raw, g) for g in by_digest.values()]
            futures += [
                pool.submit(write_compressed, path, r) for path, r in planned.raw if r.compressed
            ]
            futures += [
                pool.submit(write_part, path, sf, k)
                for path, sf in planned.split
                for k in range(len(sf.parts))
            ]
            _wait_all(futures)
            _wait_all([pool.submit(check_split, path, sf) for path, sf in planned.split])
        for fd in split_fds.values():
            os.close(fd)
        split_fds.clear()
        result.files.sort(key=lambda e: e.path)
        _check_destinations(out, [e.path for e in result.files])
        # every layer's links together, before anything moves (SECURITY.md case 7)
        check_staged(out, staging, [e.path for e in result.files], link_owners)
        for e in result.files:
            final = out / e.path
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / e.path, final)
    finally:
        for check in checks.values():
            check.stop()
        for fd in split_fds.values():
            os.close(fd)
        shutil.rmtree(staging, ignore_errors=True)
    if copies is not None and records:
        # recorded only now: the files are in their final place, with their final identity
        copies.record(_copies_in(out, records))
    return result


def _kernel_copy(src: int, src_pos: int, dst: int, dst_pos: int, length: int) -> bool:
    """Copy a range between two open files in the kernel; False if it cannot."""
    done = 0
    try:
        while done < length:
            n = os.copy_file_range(src, dst, length - done, src_pos + done, dst_pos + done)
            if n <= 0:
                return False
            done += n
    except (OSError, AttributeError):
        return False
    return True


def _range_matches(fd: int, part: PartRef) -> bool:
    """Do the staged bytes of ``part`` hash to its digest?"""
    desc = part.descriptor
    hasher = Hasher(desc.digest.algorithm)
    pos, end = part.offset, part.offset + desc.size
    while pos < end:
        block = os.pread(fd, min(CHUNK, end - pos), pos)
        if not block:
            return False
        hasher.update(block)
        pos += len(block)
    return hasher.digest() == desc.digest


def _copies_in(out: Path, records: Sequence[tuple[str, str, int, int]]) -> list[Copy]:
    rows = []
    for digest, rel, offset, length in records:
        try:
            rows.append(Copy.of_file(digest, out / rel, offset, length))
        except OSError:
            continue  # removed already by someone else: nothing to remember
    return rows


def _pwrite_all(
    stream: io.RawIOBase,
    fd: int,
    pos: int,
    buf: bytearray,
    also: object | None,
    advance: Callable[[int], None] | None = None,
) -> None:
    """Read ``stream`` to EOF, writing it into ``fd`` from ``pos`` (and to ``also``)."""
    view = memoryview(buf)
    while n := stream.readinto(buf):
        written = 0
        while written < n:
            written += os.pwrite(fd, view[written:n], pos + written)
        if also is not None:
            also.write(view[:n])  # type: ignore[attr-defined]
        pos += n
        if advance is not None:
            advance(n)


def _copy_range(src: Path, fd: int, offset: int, length: int) -> bool:
    """Copy a whole cached blob into ``fd`` at ``offset`` in the kernel; False if impossible."""
    try:
        with open(src, "rb", buffering=0) as f:
            if os.fstat(f.fileno()).st_size != length:
                return False
            done = 0
            while done < length:
                n = os.copy_file_range(f.fileno(), fd, length - done, done, offset + done)
                if n <= 0:
                    return False
                done += n
        return True
    except (OSError, AttributeError):
        return False


class _WholeFileCheck:
    """Hashes a split file in order while its parts land (overlapping the downloads).

    A thread follows the parts: as soon as part ``k`` and every part before it are
    written, it reads them back (from the page cache, usually) into the whole-file
    hasher. :meth:`result` waits for the last part. With ``sync``, what it has hashed
    is flushed to disk every :data:`_SYNC_EVERY` bytes on another thread, so the
    final fsync is short.
    """

    def __init__(self, fd: int, split: SplitFile, *, sync: bool = False) -> None:
        self._fd = fd
        self._split = split
        self._done = [False] * len(split.parts)
        self._cond = threading.Condition()
        self._stopped = False
        self._hasher = Hasher(split.digest.algorithm)
        self._error: BaseException | None = None
        self._syncer = _Syncer(fd) if sync else None
        self._thread = threading.Thread(target=self._run, name="pull-hash", daemon=True)
        self._thread.start()

    def part_done(self, index: int) -> None:
        with self._cond:
            self._done[index] = True
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join()
        if self._syncer is not None:
            self._syncer.stop()

    def result(self) -> Hasher:
        self._thread.join()
        if self._syncer is not None:
            self._syncer.stop()
            if self._error is None and self._syncer.error is not None:
                self._error = self._syncer.error
        if self._error is not None:
            raise self._error
        return self._hasher

    def _run(self) -> None:
        unsynced = 0
        try:
            for index, part in enumerate(self._split.parts):
                with self._cond:
                    while not self._done[index] and not self._stopped:
                        self._cond.wait()
                    if self._stopped:
                        return
                pos, end = part.offset, part.offset + part.descriptor.size
                while pos < end:
                    block = os.pread(self._fd, min(CHUNK, end - pos), pos)
                    if not block:
                        raise IntegrityError(f"short read of the staged {self._split.path!r}")
                    self._hasher.update(block)
                    pos += len(block)
                unsynced += part.descriptor.size
                if self._syncer is not None and unsynced >= _SYNC_EVERY:
                    self._syncer.kick()
                    unsynced = 0
        except BaseException as exc:  # reported by result()
            self._error = exc


def _wait_all(futures: Sequence[Future[None]]) -> None:
    """Wait for every task; raise the first failure after cancelling what has not started."""
    error: BaseException | None = None
    for fut in futures:
        try:
            fut.result()
        except BaseException as exc:
            if error is None:
                error = exc
                for other in futures:
                    other.cancel()
    if error is not None:
        raise error
