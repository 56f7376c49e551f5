"""Write a model artifact's files into a directory, every byte verified.

* Paths come from ``org.cncf.model.filepath`` (or the legacy ``org.cnai`` key, or
  ``org.opencontainers.image.title``) and are refused when absolute, containing
  ``..``, backslashes, NUL or control characters, or colliding after
  normalisation (SECURITY.md case 6).
* Files are written into a staging directory inside the output directory, each
  verified against its layer digest, and renamed into place only when every
  file is complete: a failed pull leaves the output directory as it was.
* Blobs come from the local cache when present; blobs fetched from elsewhere are
  written to the cache on the way (one pass over the network). Output files are
  reflinked from the cache where the filesystem can, hard-linked only on request
  (``link=True``: editing a hard-linked file would corrupt the cache), else copied
  with verification.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import os
import posixpath
import shutil
import tempfile
import threading
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from modelreg.content.base import CHUNK, ReadOnlyTarget, VerifyingReader
from modelreg.content.layout import LayoutStore
from modelreg.errors import FormatError, InvalidInputError, UnsafeContentError
from modelreg.events import Event, ProgressCallback, emit
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import Manifest

__all__ = ["FileEntry", "UnpackResult", "layer_path", "plan_files", "safe_relpath", "unpack"]

_FICLONE = 0x40049409


def safe_relpath(raw: str, what: str = "path") -> str:
    """Validate a path from an artifact; return its normalised relative POSIX form."""
    if not raw or "\x00" in raw or any(ord(c) < 0x20 for c in raw):
        raise UnsafeContentError(f"{what} {raw!r} is empty or contains control characters")
    if "\\" in raw:
        raise UnsafeContentError(f"{what} {raw!r} contains a backslash", hint="refused as unsafe")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise UnsafeContentError(
            f"{what} {raw!r} is absolute", hint="artifact paths must be relative"
        )
    parts = raw.split("/")
    if any(p == ".." for p in parts):
        raise UnsafeContentError(f"{what} {raw!r} escapes the output directory with '..'")
    norm = posixpath.normpath(unicodedata.normalize("NFC", raw))
    if norm in (".", "") or norm.startswith("../"):
        raise UnsafeContentError(f"{what} {raw!r} does not name a file inside the directory")
    return norm


def layer_path(desc: Descriptor) -> str | None:
    """The file path a layer declares, from the ModelPack, legacy or ORAS annotation."""
    ann = desc.annotations
    return (
        ann.get(mt.ANN_FILEPATH) or ann.get(mt.LEGACY_ANN_FILEPATH) or ann.get(mt.ANN_TITLE) or None
    )


def _layer_mode(desc: Descriptor) -> int:
    raw = desc.annotations.get(mt.ANN_FILE_METADATA) or desc.annotations.get(
        mt.LEGACY_ANN_FILE_METADATA
    )
    if raw:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            mode = json.loads(raw).get("mode")
            if isinstance(mode, int):
                return 0o755 if mode & 0o111 else 0o644
    return 0o644


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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, fetched: int, cached: int) -> None:
        with self._lock:
            self.bytes_fetched += fetched
            self.bytes_from_cache += cached


def plan_files(manifest: Manifest, include: Sequence[str] = ()) -> list[FileEntry]:
    """Map layers to safe, unique output paths (raw layers; archives are refused here)."""
    entries: list[FileEntry] = []
    seen: dict[str, str] = {}
    for i, layer in enumerate(manifest.layers):
        raw = layer_path(layer)
        if raw is None:
            raise FormatError(
                f"layer {i} ({layer.digest.short}, {layer.media_type}) names no file path",
                hint="the artifact lacks org.cncf.model.filepath / org.opencontainers.image.title",
            )
        if layer.media_type.endswith((".tar", "+gzip", "+zstd", ".tar+gzip", ".tar+zstd")):
            raise FormatError(
                f"layer {raw!r} is an archive ({layer.media_type}); this version of modelreg "
                "writes raw file layers only",
                hint="upgrade modelreg to pull archive layers",
            )
        path = safe_relpath(raw, f"layer {i} path")
        key = path.casefold()
        if key in seen:
            raise UnsafeContentError(
                f"layers {seen[key]!r} and {raw!r} collide on output path {path!r}",
                hint="the artifact is malformed or hostile; refused",
            )
        seen[key] = raw
        entries.append(FileEntry(path, layer, _layer_mode(layer)))
    if include:
        entries = [e for e in entries if any(fnmatch.fnmatchcase(e.path, p) for p in include)]
        if not entries:
            raise InvalidInputError(
                f"no file of the model matches --include {' '.join(include)!r}",
                hint="see the file list with `modelreg inspect REF`",
            )
    # Parent directories must not also be files.
    files = {e.path for e in entries}
    for e in entries:
        parent = posixpath.dirname(e.path)
        while parent:
            if parent in files:
                raise UnsafeContentError(
                    f"{parent!r} is both a file and a directory in the artifact"
                )
            parent = posixpath.dirname(parent)
    return entries


def _try_clone(src: Path, dst: BinaryIO) -> bool:
    try:
        with open(src, "rb") as s:
            fcntl.ioctl(dst.fileno(), _FICLONE, s.fileno())
        return True
    except OSError:
        return False


def _copy_verified(reader: VerifyingReader, sinks: Sequence[BinaryIO], advance: object) -> None:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while n := reader.readinto(buf):
        chunk = view[:n]
        for sink in sinks:
            sink.write(chunk)
        if callable(advance):
            advance(n)


def _check_destinations(out: Path, entries: Sequence[FileEntry]) -> None:
    """Refuse before writing anything: a file where a directory must go, a directory
    where a file must go, or an existing symlinked parent that leads outside ``out``."""
    real_out = out.resolve()
    for e in entries:
        final = out / e.path
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
                        f"{e.path!r} below it",
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
) -> UnpackResult:
    """Write the files of ``manifest`` into ``output``; all or nothing."""
    entries = plan_files(manifest, include)
    out = prepare_output(output)
    _check_destinations(out, entries)
    staging = Path(tempfile.mkdtemp(prefix=".modelreg-pull-", dir=out))
    result = UnpackResult(files=entries)
    source_is_remote = not (cache is not None and getattr(source, "store", None) is cache)
    # one blob may back several files: fetch it once
    by_digest: dict[str, list[FileEntry]] = {}
    for e in entries:
        by_digest.setdefault(str(e.descriptor.digest), []).append(e)

    def staged(e: FileEntry) -> Path:
        return staging / e.path

    def write_blob(group: list[FileEntry]) -> None:
        first = group[0]
        desc = first.descriptor
        name = first.path
        for e in group:
            staged(e).parent.mkdir(parents=True, exist_ok=True)
        emit(progress, Event("start", name, desc, total=desc.size))

        def advance(n: int) -> None:
            emit(progress, Event("advance", name, desc, n=n, total=desc.size))

        cached_path = cache.blob_path(desc.digest) if cache is not None else None
        have_cached = cached_path is not None and cache is not None and cache.has_blob(desc.digest)
        if have_cached and cached_path is not None:
            for e in group:
                dst_path = staged(e)
                if link:
                    os.link(cached_path, dst_path)
                    continue
                with open(dst_path, "wb") as dst:
                    if not _try_clone(cached_path, dst):
                        with VerifyingReader(open(cached_path, "rb"), desc) as reader:
                            _copy_verified(reader, [dst], None)
                    _finish_file(dst, fsync)
            advance(desc.size)
            result.add(0, desc.size)
        else:
            with contextlib.ExitStack() as stack:
                sinks: list[BinaryIO] = []
                first_path = staged(first)
                dst = stack.enter_context(open(first_path, "wb"))
                sinks.append(dst)
                writer = None
                if cache is not None and source_is_remote:
                    writer = stack.enter_context(cache.ingest(desc))
                reader = stack.enter_context(source.fetch(desc))
                if writer is not None:
                    _copy_verified(reader, [dst, _WriterSink(writer)], advance)  # type: ignore[list-item]
                else:
                    _copy_verified(reader, sinks, advance)
                _finish_file(dst, fsync)
            for e in group[1:]:
                shutil.copyfile(first_path, staged(e))
            result.add(desc.size, 0)
        for e in group:
            os.chmod(staged(e), e.mode)
        emit(progress, Event("done", name, desc, total=desc.size))

    try:
        groups = list(by_digest.values())
        with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="pull") as pool:
            for fut in [pool.submit(write_blob, g) for g in groups]:
                fut.result()
        for e in entries:
            final = out / e.path
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged(e), final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


class _WriterSink:
    """Adapts a cache BlobWriter to the ``write`` of a file sink."""

    def __init__(self, writer: object) -> None:
        self._writer = writer

    def write(self, data: memoryview) -> None:
        self._writer.write(data)  # type: ignore[attr-defined]


def _finish_file(f: BinaryIO, fsync: bool) -> None:
    if fsync:
        f.flush()
        os.fsync(f.fileno())
