"""The pull's steps as the methods of one object, :class:`Unpacker`.

:func:`unpack` plans (:mod:`._plan`), then hands an :class:`Unpacker` the plan;
its :meth:`~Unpacker.run` stages every file (raw groups, compressed and archive
layers, split parts: one task each on a bounded pool), checks split files whole,
commits the staging directory and only then remembers output files in
:class:`~modelreg.content.copies.Copies`. Each step is a method with one job;
what the steps share is the object's fields, listed in its docstring, each
with who writes it and under which lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from modelreg.content.base import CHUNK, ReadOnlyTarget, VerifyingReader
from modelreg.content.copies import Copies, Copy
from modelreg.content.layout import BlobWriter, LayoutStore
from modelreg.content.refetch import refetching
from modelreg.errors import IntegrityError, NotFoundError
from modelreg.events import Event, EventKind, ProgressCallback, emit
from modelreg.model import archive as arch
from modelreg.model.digests import DigestCache
from modelreg.model.producers import ArchiveLayer, PartRef, RawLayer, SplitFile
from modelreg.model.unpack import _blockio as blockio
from modelreg.model.unpack import _existing as existing
from modelreg.model.unpack import _split as split
from modelreg.model.unpack._layers import decompress_layer, extract_layer
from modelreg.model.unpack._plan import (
    CacheMode,
    CachePlan,
    Planned,
    cache_mode_for,
    check_destinations,
    create_output,
    matches,
    plan,
    remove_created,
)
from modelreg.model.unpack._result import FileEntry, UnpackResult
from modelreg.model.unpack._source import BlobReader
from modelreg.model.unpack._staging import PREFIX, Staging, sweep
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Hasher
from modelreg.oci.manifest import Manifest

RawGroup = list[tuple[str, RawLayer]]
"""Files backed by one raw blob (same digest): fetched once, the first file written
from it, the others copied from the first."""


def unpack(
    source: ReadOnlyTarget,
    manifest: Manifest,
    output: str | os.PathLike[str],
    *,
    cache: LayoutStore | None = None,
    source_is_cache: bool = False,
    include: Sequence[str] = (),
    link: bool = False,
    concurrency: int = 4,
    progress: ProgressCallback | None = None,
    fsync: bool = True,
    expand_ratio: int = arch.DEFAULT_EXPAND_RATIO,
    cache_mode: CacheMode = "copy",
    copies: Copies | None = None,
    overwrite: bool = False,
    digests: DigestCache | None = None,
) -> UnpackResult:
    """Write the files of ``manifest`` into ``output``; all or nothing.

    ``cache_mode`` says what ``cache`` keeps of what it lacked (see the package
    docstring); ``copies`` is where verified output files are remembered and looked
    up (used only with a ``cache``). ``link`` implies ``copy``. ``source_is_cache``:
    ``source`` reads the very store passed as ``cache`` (a pull from the embedded
    store), so nothing fetched is written into the cache again. A file already in
    ``output`` with different content is refused unless ``overwrite``; one with the
    same content is kept as it is (``digests`` remembers what existing files hash
    to). A failed pull removes the directories it created.
    """
    mode = cache_mode_for(cache_mode, link)
    planned = plan(manifest, include)
    out, created = create_output(output)
    try:
        return _unpack_into(
            out,
            planned,
            Settings(
                source=source,
                cache=cache,
                source_is_cache=source_is_cache,
                copies=copies if cache is not None else None,
                mode=mode,
                link=link,
                concurrency=concurrency,
                progress=progress,
                fsync=fsync,
                expand_ratio=expand_ratio,
                include=include,
                overwrite=overwrite,
                digests=digests,
            ),
        )
    except BaseException:
        remove_created(created)
        raise


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one pull was asked to do (the arguments of :func:`unpack`)."""

    source: ReadOnlyTarget
    cache: LayoutStore | None
    source_is_cache: bool
    copies: Copies | None
    mode: CacheMode
    link: bool
    concurrency: int
    progress: ProgressCallback | None
    fsync: bool
    expand_ratio: int
    include: Sequence[str]
    overwrite: bool
    digests: DigestCache | None


def _unpack_into(out: Path, planned: Planned, s: Settings) -> UnpackResult:
    """The pull into an existing ``out``: stale staging swept, what stands there
    judged, then every file staged and committed."""
    check_destinations(out, planned.paths())
    for gone in sweep(out):
        emit(s.progress, Event("message", f"removed {gone.name}, left by a killed pull"))
    before = existing.top_level(out, PREFIX)
    kept = existing.survey(out, planned.entries(), overwrite=s.overwrite, digests=s.digests)
    unpacker = Unpacker(
        s.source,
        planned.without(kept),
        Staging(out),
        cache=s.cache,
        source_is_cache=s.source_is_cache,
        copies=s.copies,
        mode=s.mode,
        link=s.link,
        concurrency=s.concurrency,
        progress=s.progress,
        fsync=s.fsync,
        expand_ratio=s.expand_ratio,
        include=s.include,
        overwrite=s.overwrite,
        digests=s.digests,
    )
    result = unpacker.run()
    result.keep([e for e in planned.entries() if e.path in kept])
    others = existing.unrelated(before, [e.path for e in result.files])
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        emit(
            s.progress,
            Event("message", f"{out} also holds files that are no part of the model: {shown}"),
        )
    return result


class Unpacker:
    """One pull, from a plan to files in the output directory.

    Settings, fixed for the pull: ``source``, ``cache``, ``copies``, ``planned``,
    ``staging``, ``link``, ``concurrency``, ``progress``, ``fsync``,
    ``expand_ratio``, ``include`` (a path filter for archive members, or None),
    ``overwrite`` and ``digests`` (what the commit does with what stands in the output),
    ``reader`` (the one way layers are opened) and ``buffers`` (the block pool
    shared by every writer of the pull).

    Shared state, written while the workers run:

    * ``result``: files written and bytes counted, from every worker, under the
      result's own lock.
    * ``link_owners``: staged symbolic link -> the archive member that made it,
      from archive workers, under ``_lock``; read by the commit.
    * ``records``: ``(digest, path, offset, length)`` of verified output files to
      remember once they are in place, under ``_lock``.
    * ``cache``'s plan, ``cache_plan``: set once, before the workers start (the
      reflink probe needs the staging directory), then only read.
    * Split files, per path: ``split_fds`` (the staged file, opened before the
      workers start, closed after the checks), ``checks`` (its whole-file hasher),
      ``from_cache`` and ``reused`` (the parts copied in the kernel, unhashed, from
      the cache or from a remembered copy), each list appended to only by the
      worker of that part; read by :meth:`check_split` after every part is done.
    """

    def __init__(
        self,
        source: ReadOnlyTarget,
        planned: Planned,
        staging: Staging,
        *,
        cache: LayoutStore | None,
        source_is_cache: bool,
        copies: Copies | None,
        mode: CacheMode,
        link: bool,
        concurrency: int,
        progress: ProgressCallback | None,
        fsync: bool,
        expand_ratio: int,
        include: Sequence[str],
        overwrite: bool = False,
        digests: DigestCache | None = None,
    ) -> None:
        self.source = source
        self.overwrite = overwrite
        self.digests = digests
        self.cache = cache
        self.copies = copies
        self.planned = planned
        self.staging = staging
        self.link = link
        self.concurrency = concurrency
        self.progress = progress
        self.fsync = fsync
        self.expand_ratio = expand_ratio
        self.include: Callable[[str], bool] | None = (
            (lambda p: matches(p, include)) if include else None
        )
        self.result = UnpackResult(producer=planned.plan.producer)
        self.result.skipped = [f"{d.digest.short}: {why}" for d, why in planned.plan.skipped]
        self.result.blobs = [str(d.digest) for d in planned.plan.blobs]
        self.reader = BlobReader(
            source, cache, self.result, progress, source_is_cache=source_is_cache
        )
        self.buffers = blockio.BufferPool(blockio.WRITE_BUFFERS)
        self.cache_plan = CachePlan(mode, keeps=cache is not None and self.reader.remote)
        self.link_owners: dict[str, str] = {}
        self.records: list[tuple[str, str, int, int]] = []
        self.split_fds: dict[str, int] = {}
        self.checks: dict[str, split.WholeFileCheck] = {}
        self.from_cache: dict[str, list[int]] = {path: [] for path, _ in planned.split}
        self.reused: dict[str, list[tuple[int, Copy]]] = {path: [] for path, _ in planned.split}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the pull
    def run(self) -> UnpackResult:
        """Stage every file, check, commit; the output is untouched unless all succeed."""
        groups = self.planned.raw_groups()
        try:
            self.open_split_files()
            if groups:
                self.probe_reflink()
            self.write_all(groups)
            self.close_split_files()
            self.result.files.sort(key=lambda e: e.path)
            kept = self.staging.commit(
                self.result.files,
                self.link_owners,
                overwrite=self.overwrite,
                digests=self.digests,
            )
            self.result.kept += kept
        finally:
            self.clean_up()
        if self.copies is not None and self.records:
            # recorded only now: the files are in their final place, with their final identity
            self.copies.record(_copies_in(self.staging.out, self.records))
        return self.result

    def open_split_files(self) -> None:
        """Create each split file's staged file and start its whole-file check."""
        for path, sf in self.planned.split:
            self.split_fds[path] = split.open_staged(self.staging / path, sf.size)
            self.checks[path] = split.WholeFileCheck(self.split_fds[path], sf, sync=self.fsync)

    def probe_reflink(self) -> None:
        """Whether staged raw files can be cloned into the cache (only where it keeps them)."""
        if self.cache is None or not self.cache_plan.keeps or self.cache_plan.mode == "reference":
            return
        reflink = blockio.reflinks(self.staging.root, self.cache)
        self.cache_plan = dataclasses.replace(self.cache_plan, reflink=reflink)

    def write_all(self, groups: Sequence[RawGroup]) -> None:
        """Every layer into the staging directory, then every split file checked whole."""
        workers = max(1, self.concurrency)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pull") as pool:
            futures: list[Future[None]] = []
            futures += [pool.submit(self.write_archive, a) for a in self.planned.archives]
            futures += [pool.submit(self.write_raw, g) for g in groups]
            futures += [
                pool.submit(self.write_compressed, p, r) for p, r in self.planned.compressed()
            ]
            futures += [
                pool.submit(self.write_part, path, sf, k)
                for path, sf in self.planned.split
                for k in range(len(sf.parts))
            ]
            _wait_all(futures)
            _wait_all([pool.submit(self.check_split, path, sf) for path, sf in self.planned.split])

    def close_split_files(self) -> None:
        for fd in self.split_fds.values():
            os.close(fd)
        self.split_fds.clear()

    def clean_up(self) -> None:
        """Stop the checks, close what is open, remove the staging directory (whatever
        it still holds: after a failure, everything)."""
        for check in self.checks.values():
            check.stop()
        self.close_split_files()
        self.staging.remove()

    def remember(self, digest: str, paths: Sequence[str], offset: int, length: int) -> None:
        """Remember ``paths`` as copies of ``digest`` once the pull has committed."""
        if self.copies is not None:
            with self._lock:
                self.records.extend((digest, p, offset, length) for p in paths)

    def _emit(self, kind: EventKind, name: str, desc: Descriptor, **kw: int) -> None:
        emit(self.progress, Event(kind, name, desc, total=desc.size, **kw))

    # ------------------------------------------------------------- raw layers
    def write_raw(self, group: RawGroup) -> None:
        """A raw blob's files: from the cache, else a remembered copy, else the source."""
        first_path, first = group[0]
        desc = first.descriptor
        for path, _ in group:
            (self.staging / path).parent.mkdir(parents=True, exist_ok=True)
        cached = self.reader.cached_path(desc)
        if cached is not None and self.write_from_cache(cached, desc, group):
            self._emit("advance", first_path, desc, n=desc.size)
            self._emit("done", first_path, desc)
            self.result.add(0, desc.size)
        else:
            self.fetch_group(desc, group)
        for path, r in group:
            # a --link output shares its inode with the store's blob: read-only, so an
            # edit in place cannot change what every later pull would be served
            os.chmod(self.staging / path, r.mode & ~0o222 if self.link else r.mode)
        self.result.add_files([FileEntry(path, r.descriptor, r.mode) for path, r in group])

    def fetch_group(self, desc: Descriptor, group: RawGroup) -> None:
        """The blob from a remembered copy or the source into the first file; the others
        copied from it; then the cache given what its plan says."""
        first_path = group[0][0]
        staged = self.staging / first_path
        # copy mode without reflinks: the cache's copy is written on the way
        tee = self.cache_plan.tee
        if not self.reuse_raw(desc, first_path, staged, tee):
            self.fetch_raw(desc, first_path, staged, tee)
        for path, _ in group[1:]:
            shutil.copyfile(staged, self.staging / path)
            if self.fsync:
                with open(self.staging / path, "rb+") as f:
                    os.fsync(f.fileno())
        if self.cache_plan.keeps and not tee:
            self.keep_raw(desc, staged, [p for p, _ in group])

    def stream_into(
        self, stream: io.RawIOBase, desc: Descriptor, name: str | None, dst: Path, tee: bool
    ) -> None:
        """Write ``stream`` (verifying ``desc``) to ``dst``, and to the cache if ``tee``;
        progress is reported under ``name`` unless None."""

        def advance(n: int) -> None:
            if name is not None:
                self._emit("advance", name, desc, n=n)

        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            if desc.size > CHUNK:
                blockio.preallocate(fd, desc.size)
            with contextlib.ExitStack() as stack:
                sinks = [blockio.fd_sink(fd)]
                if tee:
                    assert self.cache is not None and isinstance(stream, VerifyingReader)
                    # the reader verifies every byte: the cache writer need not hash them again
                    writer = stack.enter_context(self.cache.ingest(desc, verified_by=stream))
                    sinks.append(writer.write)
                sync_fd = fd if self.fsync else None
                threaded = desc.size > CHUNK
                blockio.pump(stream, sinks, self.buffers, advance, sync_fd, threaded=threaded)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def reuse_raw(self, desc: Descriptor, name: str, dst: Path, tee: bool) -> bool:
        """Write the blob from a remembered copy, verifying it; False if none holds."""
        if self.copies is None:
            return False
        for copy, raw in self.copies.usable(str(desc.digest), desc.size):
            self._emit("start", name, desc)
            try:
                with VerifyingReader(raw, desc, what=f"{copy.path!r} (a copy of {name})") as src:
                    self.stream_into(src, desc, name, dst, tee)
            except IntegrityError:
                self.copies.forget(copy)
                emit(self.progress, Event("message", f"{copy.path} changed; fetching {name}"))
                continue
            self._emit("done", name, desc)
            self.result.add(0, desc.size)
            return True
        return False

    def fetch_raw(self, desc: Descriptor, name: str, dst: Path, tee: bool) -> None:
        self._emit("start", name, desc)

        def attempt() -> None:
            # dst is truncated and the cache ingest aborted when an attempt fails
            with self.source.fetch(desc) as stream:
                self.stream_into(stream, desc, name, dst, tee)

        refetching(attempt, what=f"{name} ({desc.digest})", progress=self.progress)
        self._emit("done", name, desc)
        self.result.add(desc.size, 0)

    def keep_raw(self, desc: Descriptor, staged: Path, paths: Sequence[str]) -> None:
        """Give the cache what its plan says of a verified staged file it lacks."""
        assert self.cache is not None
        if self.cache_plan.reflink and self.cache.add_clone(desc, staged, blockio.try_clone):
            return
        if self.cache_plan.mode == "copy":
            with open(staged, "rb") as f:
                self.cache.write_blob(desc, f)
        else:
            self.remember(str(desc.digest), paths, 0, desc.size)

    def write_from_cache(self, cached: Path, desc: Descriptor, group: RawGroup) -> bool:
        """Write the group's files from the cached blob; False (nothing left staged) if
        the blob vanished meanwhile (``cache prune`` in another process)."""
        self._emit("start", group[0][0], desc)
        try:
            for path, _ in group:
                self.file_from_cache(cached, desc, self.staging / path)
        except (FileNotFoundError, NotFoundError):
            for path, _ in group:
                # unlink, never truncate: a hard link made above shares the cache's inode
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.staging / path)
            return False
        return True

    def file_from_cache(self, cached: Path, desc: Descriptor, dst: Path) -> None:
        """A hard link (``link``), else a reflink, else a verified copy of the blob.

        A link or a reflink hands out the cached bytes without reading them, so the
        blob is verified first: a damaged one is quarantined (CorruptCacheError) and
        never reaches the output (SECURITY.md case 28)."""
        assert self.reader.cache is not None
        if self.link:
            self.verify_cached(desc)
            os.link(cached, dst)
            return
        with open(dst, "wb") as f:
            cloned = blockio.try_clone(cached, f)
            if cloned:
                self.verify_cached(desc)
                blockio.finish_file(f, self.fsync)
        if not cloned:
            with self.reader.cache.open_blob(desc) as verifying:
                self.stream_into(verifying, desc, None, dst, tee=False)

    def verify_cached(self, desc: Descriptor) -> None:
        assert self.reader.cache is not None
        with self.reader.cache.open_blob(desc) as verifying:
            while verifying.read(CHUNK):
                pass

    # ---------------------------------------------------- compressed and archives
    def write_compressed(self, path: str, r: RawLayer) -> None:
        (self.staging / path).parent.mkdir(parents=True, exist_ok=True)

        def attempt() -> FileEntry:
            # the staged file is opened "wb": a read again starts it over
            with self.reader.open(r.descriptor, path) as stream:
                return decompress_layer(
                    stream,
                    path,
                    r,
                    self.staging / path,
                    expand_ratio=self.expand_ratio,
                    fsync=self.fsync,
                )

        entry = refetching(attempt, what=f"{path} ({r.descriptor.digest})", progress=self.progress)
        os.chmod(self.staging / path, r.mode)
        self.result.add_files([entry])

    def write_archive(self, a: ArchiveLayer) -> None:
        with self.reader.open(a.descriptor, a.label) as stream:
            entries, links = extract_layer(
                stream,
                a,
                self.staging.root,
                claims=self.planned.claims,
                include=self.include,
                expand_ratio=self.expand_ratio,
            )
        with self._lock:
            self.link_owners.update(links)
        self.result.add_files(entries)

    # ----------------------------------------------------------------- split files
    def write_part(self, path: str, sf: SplitFile, k: int) -> None:
        """Part ``k`` of a split file at its offset: from the cache (a kernel copy),
        else a remembered copy, else the source (verified as it is read)."""
        part = sf.parts[k]
        desc = part.descriptor
        name = f"{path} [part {k + 1}/{len(sf.parts)}]"
        cached = self.reader.cached_path(desc)
        if cached is not None and blockio.copy_range(
            cached, self.split_fds[path], part.offset, desc.size
        ):
            # a kernel copy, not hashed here: the whole-file digest covers these bytes, and
            # check_split looks for the bad cached part if it does not match
            self.from_cache[path].append(k)
            self._emit("skipped", name, desc)
            self.result.add(0, desc.size)
        else:
            self.fetch_part(path, sf, k, name)
        self.checks[path].part_done(k)

    def fetch_part(self, path: str, sf: SplitFile, k: int, name: str) -> None:
        part = sf.parts[k]
        buf = self.buffers.get()
        try:
            if self.reuse_part(path, k, part, name, buf):
                return
            # copy mode: the cache keeps the part (parts are not block-aligned: no reflinks)
            keep = self.cache_plan.mode == "copy"
            self.fetch_part_bytes(path, part, name, buf, keep=keep)
        except IntegrityError as exc:
            raise IntegrityError(
                f"part {k + 1} of {len(sf.parts)} of {path!r}: {exc.message}", hint=exc.hint
            ) from exc
        finally:
            self.buffers.put(buf)

    def reuse_part(self, path: str, k: int, part: PartRef, name: str, buf: bytearray) -> bool:
        """Write a part from a remembered copy; False if none holds. Unless the cache
        is to keep a copy of it, the part is copied in the kernel, not hashed here:
        the whole-file digest covers it, and :meth:`check_split` repairs the file
        from the source if it does not match."""
        if self.copies is None:
            return False
        desc = part.descriptor
        keep_copy = self.cache_plan.keeps and self.cache_plan.mode == "copy"
        for copy, opened in self.copies.usable(str(desc.digest), desc.size):
            self._emit("start", name, desc)
            raw: io.RawIOBase | None = opened
            if not keep_copy:
                if self.kernel_reuse(path, k, part, name, copy, opened):
                    return True
                raw = copy.open()  # no kernel copy here: read it, verifying
                if raw is None:
                    self.copies.forget_file(copy)
                    continue
            assert raw is not None
            if self.verified_reuse(path, k, part, name, copy, raw, buf, keep_copy):
                return True
        return False

    def kernel_reuse(
        self, path: str, k: int, part: PartRef, name: str, copy: Copy, opened: io.RawIOBase
    ) -> bool:
        """Copy part ``k`` from a remembered file in the kernel; False if it cannot."""
        desc = part.descriptor
        with opened:
            copied = blockio.kernel_copy(
                opened.fileno(), copy.offset, self.split_fds[path], part.offset, desc.size
            )
        if not copied:
            return False
        self.reused[path].append((k, copy))
        self._emit("advance", name, desc, n=desc.size)
        self._emit("done", name, desc)
        self.result.add(0, desc.size)
        return True

    def verified_reuse(
        self,
        path: str,
        k: int,
        part: PartRef,
        name: str,
        copy: Copy,
        raw: io.RawIOBase,
        buf: bytearray,
        keep_copy: bool,
    ) -> bool:
        """Read part ``k`` from a remembered file, verifying every byte (and giving the
        cache its copy when ``keep_copy``); False, the copy forgotten, if it changed."""
        assert self.copies is not None
        desc = part.descriptor

        def advance(n: int) -> None:
            self._emit("advance", name, desc, n=n)

        try:
            with contextlib.ExitStack() as stack:
                src = stack.enter_context(
                    VerifyingReader(raw, desc, what=f"{copy.path!r} (a copy of {name})")
                )
                writer: BlobWriter | None = None
                if keep_copy:
                    assert self.cache is not None
                    writer = stack.enter_context(self.cache.ingest(desc, verified_by=src))
                blockio.pwrite_all(src, self.split_fds[path], part.offset, buf, writer, advance)
        except IntegrityError:
            self.copies.forget(copy)
            emit(self.progress, Event("message", f"{copy.path} changed; fetching {name}"))
            return False
        self._emit("done", name, desc)
        self.result.add(0, desc.size)
        return True

    def check_split(self, path: str, sf: SplitFile) -> None:
        """The reassembled file against its declared digest (repaired once from the
        source if a part copied unhashed was bad); then kept and remembered."""
        hasher = self.checks[path].result()
        if not split.matches(hasher, sf):
            repaired = self.repair(path, sf)
            if repaired is not None and split.matches(repaired, sf):
                hasher = repaired
        if not split.matches(hasher, sf):
            raise split.mismatch(path, sf, hasher)
        if self.fsync:
            os.fsync(self.split_fds[path])
        os.chmod(self.staging / path, sf.mode)
        self.result.add_files([FileEntry(path, sf.descriptor, sf.mode)])
        if self.cache_plan.remembers:
            self.remember_split(path, sf)

    def remember_split(self, path: str, sf: SplitFile) -> None:
        """The file is remembered whole and part by part (the parts the cache lacks)."""
        self.remember(str(sf.digest), [path], 0, sf.size)
        cached = set(self.from_cache[path])
        for k, part in enumerate(sf.parts):
            if k not in cached:
                desc = part.descriptor
                self.remember(str(desc.digest), [path], part.offset, desc.size)

    def repair(self, path: str, sf: SplitFile) -> Hasher | None:
        """The parts copied unhashed (from the cache or remembered files) that do not
        match their digest in the staged file, fetched again; then the file is hashed
        again. None when every such part matched (the artifact itself is wrong)."""
        fd = self.split_fds[path]
        copied: dict[int, Copy | None] = {k: None for k in self.from_cache[path]}
        copied |= dict(self.reused[path])
        bad = split.bad_parts(fd, sf, copied)
        if not bad:
            return None
        buf = self.buffers.get()
        try:
            for k in bad:
                self.refetch_part(path, sf, k, copied[k], buf)
            return split.rehash(fd, sf, buf)
        finally:
            self.buffers.put(buf)

    def refetch_part(
        self, path: str, sf: SplitFile, k: int, copy: Copy | None, buf: bytearray
    ) -> None:
        """Forget where a bad part came from, then fetch it from the source."""
        desc = sf.parts[k].descriptor
        if copy is not None:
            assert self.copies is not None
            self.copies.forget(copy)
        elif self.cache is not None:
            self.cache.evict(desc.digest)
        emit(self.progress, Event("message", f"{path}: part {k + 1} was not intact; fetching"))
        self.result.add(0, -desc.size)  # reader.open counts it as fetched
        self.fetch_part_bytes(path, sf.parts[k], f"{path} [part {k + 1}/{len(sf.parts)}]", buf)

    def fetch_part_bytes(
        self, path: str, part: PartRef, name: str, buf: bytearray, *, keep: bool = True
    ) -> None:
        """Part ``part`` of the split file ``path`` from the source into its place; read
        again (into the same place, over what a failed read left) from the next source
        when a mirror served wrong bytes. The whole-file check follows the parts."""

        def attempt() -> None:
            with self.reader.open(part.descriptor, name, keep=keep) as stream:
                blockio.pwrite_all(stream, self.split_fds[path], part.offset, buf, None)

        refetching(attempt, what=f"{name} ({part.descriptor.digest})", progress=self.progress)


def _copies_in(out: Path, records: Sequence[tuple[str, str, int, int]]) -> list[Copy]:
    rows = []
    for digest, rel, offset, length in records:
        try:
            rows.append(Copy.of_file(digest, out / rel, offset, length))
        except OSError:
            continue  # removed already by someone else: nothing to remember
    return rows


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
