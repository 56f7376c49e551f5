"""Replacing a file so that a reader sees the old content or the new, never a part.

Every file modelreg writes in place (the store's ``index.json``, blobs and cache
entries, the docker config, signing keys, webhook certificates, markers) goes the
same way:

* the bytes go to a fresh temporary file, created with ``O_EXCL`` (never an existing
  file or a planted symlink) in the destination's directory, or in ``tmp_dir`` when
  the caller keeps its temporaries apart (it must be on the same filesystem: the
  last step is a rename);
* ``mode``: the file's exact permission bits, set on the temporary file before a byte
  is written, so a secret is never readable by others, not even for a moment; None
  leaves them as ``open()`` would (0o666 less the umask);
* ``fsync``: the data reaches the disk before the rename, so a crash leaves the old
  file or the new one, never an empty one. Caches that can be refilled pass False;
* the temporary file is renamed over the destination; with ``overwrite=False`` it is
  linked instead, which fails with ``FileExistsError`` when the destination exists
  (a signing key is never written over another without ``--force``);
* ``sync_dir``: the directory is fsynced after the rename, so the rename itself
  survives a crash (where the file is the only copy of what it holds);
* on any failure, or when the caller discards it, the temporary file is removed.

Errors are ``OSError`` as the system gave them: the caller knows what the file is
for and translates (the layout store maps a full disk to ``LocalStorageError``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO, TypedDict, Unpack

__all__ = ["AtomicFile", "WriteOptions", "atomic_write", "scan_dir"]

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NAME_ATTEMPTS = 16


class AtomicFile:
    """A file written under a temporary name, put in place by :meth:`commit`.

    As a context manager it commits when the block ends normally and discards
    when it raises. Write through :meth:`write`, or through :attr:`file` where a
    callee wants a file object (a copy-on-write clone)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mode: int | None = None,
        fsync: bool = True,
        sync_dir: bool = False,
        overwrite: bool = True,
        tmp_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self._fsync = fsync
        self._sync_dir = sync_dir
        self._overwrite = overwrite
        self._done = False
        directory = Path(tmp_dir) if tmp_dir is not None else self.path.parent
        fd, self.tmp_path = _create_temp(directory, self.path.name, mode)
        try:
            self.file: BinaryIO = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            _unlink(self.tmp_path)
            raise

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return self.file.write(data)

    def commit(self) -> None:
        """Put the file in place; the temporary file is removed if that fails."""
        if self._done:
            raise ValueError(f"{self.path}: already committed or discarded")
        try:
            self.file.flush()
            if self._fsync:
                os.fsync(self.file.fileno())
            self.file.close()
            if self._overwrite:
                os.replace(self.tmp_path, self.path)
            else:
                os.link(self.tmp_path, self.path)
                # the destination holds the data now; a leftover name is only clutter
                with contextlib.suppress(OSError):
                    os.unlink(self.tmp_path)
        except BaseException:
            self.discard()
            raise
        self._done = True
        if self._sync_dir:
            _sync_directory(self.path.parent)

    def discard(self) -> None:
        """Drop what was written; nothing once committed."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(OSError):
            self.file.close()
        _unlink(self.tmp_path)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


class WriteOptions(TypedDict, total=False):
    """:class:`AtomicFile`'s options, which :func:`atomic_write` passes on as they are
    (their defaults are AtomicFile's; the module documentation says what each does)."""

    mode: int | None
    fsync: bool
    sync_dir: bool
    overwrite: bool
    tmp_dir: str | os.PathLike[str] | None


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes | bytearray | memoryview,
    **options: Unpack[WriteOptions],
) -> None:
    """Replace ``path`` with ``data`` (see the module documentation for each option)."""
    with AtomicFile(path, **options) as f:
        f.write(data)


def _create_temp(directory: Path, name: str, mode: int | None) -> tuple[int, Path]:
    # the ".<name>." prefix lets `cache prune` recognise a store's leftovers
    for _ in range(_NAME_ATTEMPTS):
        tmp = directory / f".{name}.{secrets.token_hex(6)}"
        try:
            fd = os.open(tmp, _CREATE_FLAGS, 0o666 if mode is None else mode & 0o777)
        except FileExistsError:
            continue
        if mode is not None:
            try:
                # the umask only narrows what open() sets; the caller asked for these bits
                os.fchmod(fd, mode)
            except BaseException:
                os.close(fd)
                _unlink(tmp)
                raise
        return fd, tmp
    raise FileExistsError(f"no free temporary name for {name!r} in {directory}")


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _sync_directory(directory: Path) -> None:
    # the file is in place either way; some filesystems refuse to fsync a directory
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def scan_dir(path: str | os.PathLike[str]) -> list[os.DirEntry[str]]:
    """A directory's entries, none when it cannot be listed (gone, not a directory, not
    readable): what the sweeps over a store (gc, the chunk cache) cannot read they skip."""
    try:
        return list(os.scandir(path))
    except OSError:
        return []
