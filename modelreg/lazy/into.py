"""``pull --into DIR``: an init container's pull, configuration first, resumable.

Differences from ``pull -o``:

* **Order**: configuration, tokenizer, docs and code first (smallest first), then
  weights in manifest order; each file appears at its final path as soon as it
  is complete and verified (written to ``DIR/.modelreg-into/<path>.partial``,
  fsynced, renamed). A server that only needs ``config.json`` to start warming
  up can start before the weights arrive.
* **Resumable**: after an interruption (pod killed, node drained), a second run
  keeps every file already at its final path that still verifies, and for a
  weight file cut half-way re-hashes the partial file chunk by chunk against the
  chunk index and fetches only the chunks that are missing or wrong. Files
  without a chunk index are fetched again whole.
* **Done marker**: ``DIR/.modelreg-complete`` (JSON: reference, digest, files)
  is written last; a main container can wait for it.

Every byte is verified before it is written to a final path: per chunk against
the chunk index the manifest covers, or per blob against its digest.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from modelreg._fs import atomic_write
from modelreg._json import camel_fields
from modelreg.content.base import CHUNK, ReadOnlyTarget
from modelreg.content.layout import LayoutStore
from modelreg.errors import InvalidInputError, UnsafeContentError
from modelreg.events import Event, ProgressCallback, emit
from modelreg.lazy._files import ModelFile
from modelreg.lazy.chunkindex import FileChunks
from modelreg.lazy.handle import ModelHandle, Verifier, open_model
from modelreg.model.roles import ROLE_ORDER, guess_role

if TYPE_CHECKING:
    from modelreg.client import Client

__all__ = ["COMPLETE_MARKER", "STAGING_DIR", "PullIntoResult", "pull_into"]

STAGING_DIR: Final = ".modelreg-into"
COMPLETE_MARKER: Final = ".modelreg-complete"
_WINDOW: Final = 64 * 1024 * 1024


@dataclass
class PullIntoResult:
    reference: str
    digest: str
    output: str
    files: list[dict[str, Any]] = field(default_factory=list)
    bytes_fetched: int = 0
    """Bytes of file content fetched (from the registry or the local cache)."""
    bytes_reused: int = 0
    """Bytes already present in DIR (complete files, verified chunks of partial files)."""

    def to_dict(self) -> dict[str, Any]:
        return camel_fields(
            self, "reference", "digest", "output", "files", "bytes_fetched", "bytes_reused"
        )


def _order(files: Sequence[ModelFile]) -> list[ModelFile]:
    def key(item: tuple[int, ModelFile]) -> tuple[int, int, int]:
        position, f = item
        role = guess_role(f.path).role
        if role == "weight":
            return (1, 0, position)
        return (0, ROLE_ORDER.index(role), f.size)

    return [f for _, f in sorted(enumerate(files), key=key)]


def _check_parent(out: Path, rel: str) -> None:
    real_out = out.resolve()
    parent = (out / rel).parent
    while parent != out:
        if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
            real = parent.resolve()
            if not parent.is_dir() or (real != real_out and real_out not in real.parents):
                raise UnsafeContentError(
                    f"{str(parent)!r} is not a directory inside {str(out)!r}",
                    hint="remove it or pull into an empty directory",
                )
        parent = parent.parent


def _chunk_ok(fd: int, fc: FileChunks, i: int) -> bool:
    start, stop = fc.bounds(i)
    try:
        data = os.pread(fd, stop - start, start)
    except OSError:
        return False
    return len(data) == stop - start and fc.hash_chunk(data) == fc.digest_of(i)


def _whole_ok(path: Path, f: ModelFile) -> bool:
    hasher = f.digest.hasher()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            hasher.update(view[:n])
    return hasher.size == f.size and hasher.digest() == f.digest


def _fsync(fd: int, enabled: bool) -> None:
    if enabled:
        os.fsync(fd)


def _refuse_archives(handle: ModelHandle, include: Sequence[str]) -> None:
    """--into writes files one at a time from verified ranges; the files inside an archive
    layer (or a compressed file) cannot be written that way, and skipping them would mark
    an incomplete directory complete. A layer that ``include`` leaves out is no obstacle."""
    import fnmatch

    for layer in handle.pull_only:
        name = layer.path or str(layer.digest)
        if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
            continue
        archive = layer.kind == "archive"
        what = "an archive" if archive else "a compressed file"
        cannot = "unpack archives" if archive else "decompress files"
        raise InvalidInputError(
            f"layer {name!r} of {handle.reference} is {what} ({layer.media_type}); "
            f"--into cannot {cannot}",
            hint=f"pull it with `modelreg pull {handle.reference} -o DIR`, which unpacks "
            "archive layers safely, or leave it out with --include",
        )


def pull_into(
    client_or_target: Client | ReadOnlyTarget,
    ref: str,
    directory: str | os.PathLike[str],
    *,
    include: Sequence[str] = (),
    cache: LayoutStore | str | os.PathLike[str] | None = None,
    verify: Verifier | None = None,
    concurrency: int = 4,
    fsync: bool = True,
    progress: ProgressCallback | None = None,
    on_warning: Any = None,
) -> PullIntoResult:
    """Write the model's files into ``directory`` (see the module docstring)."""
    import fnmatch

    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (out / COMPLETE_MARKER).unlink()
    handle = open_model(
        client_or_target,
        ref,
        cache=cache,
        verify=verify,
        concurrency=concurrency,
        readahead=0,
        memory=2 * _WINDOW,
        chunk_cache=False,
        on_warning=on_warning,
    )
    with handle:
        _refuse_archives(handle, include)
        files = [handle.model_file(f.path) for f in handle.files]
        if include:
            files = [f for f in files if any(fnmatch.fnmatchcase(f.path, p) for p in include)]
            if not files:
                raise InvalidInputError(
                    f"no file of the model matches --include {' '.join(include)!r}"
                )
        result = PullIntoResult(
            reference=handle.reference, digest=str(handle.digest), output=str(out)
        )
        staging = out / STAGING_DIR
        for f in _order(files):
            _check_parent(out, f.path)
            emit(progress, Event("start", f.path, total=f.size))
            fetched, reused = _pull_file(handle, f, out, staging, fsync, progress)
            result.bytes_fetched += fetched
            result.bytes_reused += reused
            result.files.append(
                {"path": f.path, "size": f.size, "digest": str(f.digest), "reused": reused}
            )
            emit(progress, Event("done", f.path, total=f.size))
        shutil.rmtree(staging, ignore_errors=True)
        marker = {"reference": result.reference, "digest": result.digest, "files": result.files}
        text = json.dumps(marker, indent=2, sort_keys=True) + "\n"
        atomic_write(out / COMPLETE_MARKER, text.encode(), fsync=fsync)
    return result


def _pull_file(
    handle: ModelHandle,
    f: ModelFile,
    out: Path,
    staging: Path,
    fsync: bool,
    progress: ProgressCallback | None,
) -> tuple[int, int]:
    final = out / f.path
    partial = staging / f"{f.path}.partial"
    engine = handle._engine
    fc = engine.chunks_of(f)
    if final.is_file() and not final.is_symlink() and final.stat().st_size == f.size:
        if fc is not None:
            fd = os.open(final, os.O_RDONLY)
            try:
                bad = [i for i in range(fc.count) if not _chunk_ok(fd, fc, i)]
            finally:
                os.close(fd)
            if not bad:
                emit(progress, Event("advance", f.path, n=f.size, total=f.size))
                return 0, f.size
            partial.parent.mkdir(parents=True, exist_ok=True)
            os.replace(final, partial)  # resume from what is there
        elif _whole_ok(final, f):
            emit(progress, Event("advance", f.path, n=f.size, total=f.size))
            return 0, f.size
    partial.parent.mkdir(parents=True, exist_ok=True)
    fetched = reused = 0
    fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if fc is None:
            os.ftruncate(fd, 0)
            buf = bytearray(min(_WINDOW, max(f.size, 1)))
            view = memoryview(buf)
            offset = 0
            while offset < f.size:
                n = handle.readinto(f.path, offset, view[: min(len(buf), f.size - offset)])
                os.pwrite(fd, view[:n], offset)
                offset += n
                fetched += n
                emit(progress, Event("advance", f.path, n=n, total=f.size))
        else:
            resumed = os.fstat(fd).st_size == f.size
            if not resumed:
                os.ftruncate(fd, 0)
                os.ftruncate(fd, f.size)
            missing = []
            for i in range(fc.count):
                if resumed and _chunk_ok(fd, fc, i):
                    start, stop = fc.bounds(i)
                    reused += stop - start
                    emit(progress, Event("advance", f.path, n=stop - start, total=f.size))
                else:
                    missing.append(i)
            batch: list[int] = []
            size = 0
            for i in [*missing, -1]:
                if i >= 0:
                    start, stop = fc.bounds(i)
                    batch.append(i)
                    size += stop - start
                if batch and (i < 0 or size >= _WINDOW):
                    data = engine.chunk_bytes(f, batch)
                    for k in batch:
                        start, stop = fc.bounds(k)
                        os.pwrite(fd, data[k], start)
                        fetched += stop - start
                        emit(progress, Event("advance", f.path, n=stop - start, total=f.size))
                    batch, size = [], 0
        _fsync(fd, fsync)
        os.fchmod(fd, f.mode)
    finally:
        os.close(fd)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, final)
    return fetched, reused
