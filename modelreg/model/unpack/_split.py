"""Split-file reassembly: parts written at their offsets, the whole file verified.

A large file may be stored as several layers (parts, :mod:`modelreg.model.split`),
each with its own digest, and the whole file's digest declared by the manifest.
The pull writes each part into one preallocated staged file at its offset, parts
in parallel (:meth:`Unpacker.write_part`), each verified against its own digest
as it is read from the source (SECURITY.md case 1). A :class:`WholeFileCheck`
thread follows the parts in order and hashes the file as they land, so the
whole-file digest is known moments after the last part.

Parts copied in the kernel from the cache or from a remembered copy are not
hashed on the way: the whole-file digest covers them. When it does not match,
:func:`bad_parts` finds the copied parts that do not hash to their digest (a
corrupt cache blob, an edited remembered file: case 28), the pull fetches those
again from the source and :func:`rehash` hashes the file once more. A file that
still does not match is the artifact's fault: the pull fails and nothing is kept.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

from modelreg.content.base import CHUNK
from modelreg.errors import IntegrityError
from modelreg.model.producers import PartRef, SplitFile
from modelreg.model.unpack import _blockio as blockio
from modelreg.oci.digest import Hasher


def open_staged(target: Path, size: int) -> int:
    """Create the staged file a split file is reassembled in, at its full size."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        blockio.preallocate(fd, size)
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


def range_matches(fd: int, part: PartRef) -> bool:
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


def bad_parts(fd: int, split: SplitFile, copied: Iterable[int]) -> list[int]:
    """Which of the ``copied`` parts (indices) do not match their digest in ``fd``."""
    return [k for k in sorted(copied) if not range_matches(fd, split.parts[k])]


def rehash(fd: int, split: SplitFile, buf: bytearray) -> Hasher:
    """Hash the staged file from its start, ``buf`` at a time."""
    hasher = Hasher(split.digest.algorithm)
    pos = 0
    while pos < split.size:
        n = os.preadv(fd, [memoryview(buf)[: min(len(buf), split.size - pos)]], pos)
        if n <= 0:
            break
        hasher.update(memoryview(buf)[:n])
        pos += n
    return hasher


def matches(hasher: Hasher, split: SplitFile) -> bool:
    return hasher.size == split.size and hasher.digest() == split.digest


def mismatch(path: str, split: SplitFile, hasher: Hasher) -> IntegrityError:
    return IntegrityError(
        f"{path!r} reassembled from {len(split.parts)} verified parts hashes to "
        f"{hasher.digest()} ({hasher.size} bytes); its parts declare {split.digest} "
        f"({split.size} bytes)",
        hint="the artifact is inconsistent or tampered; nothing was kept",
    )


class WholeFileCheck:
    """Hashes a split file in order while its parts land (overlapping the downloads).

    A thread follows the parts: as soon as part ``k`` and every part before it are
    written, it reads them back (from the page cache, usually) into the whole-file
    hasher. :meth:`result` waits for the last part. With ``sync``, what it has hashed
    is flushed to disk every :data:`~._blockio.SYNC_EVERY` bytes on another thread,
    so the final fsync is short.
    """

    def __init__(self, fd: int, split: SplitFile, *, sync: bool = False) -> None:
        self._fd = fd
        self._split = split
        self._done = [False] * len(split.parts)
        self._cond = threading.Condition()
        self._stopped = False
        self._hasher = Hasher(split.digest.algorithm)
        self._error: BaseException | None = None
        self._syncer = blockio.Syncer(fd) if sync else None
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
                if not self._wait_for(index):
                    return
                self._hash_part(part)
                unsynced += part.descriptor.size
                if self._syncer is not None and unsynced >= blockio.SYNC_EVERY:
                    self._syncer.kick()
                    unsynced = 0
        except BaseException as exc:  # reported by result()
            self._error = exc

    def _wait_for(self, index: int) -> bool:
        """Wait until part ``index`` is written; False if stopped first."""
        with self._cond:
            while not self._done[index] and not self._stopped:
                self._cond.wait()
            return not self._stopped

    def _hash_part(self, part: PartRef) -> None:
        pos, end = part.offset, part.offset + part.descriptor.size
        while pos < end:
            block = os.pread(self._fd, min(CHUNK, end - pos), pos)
            if not block:
                raise IntegrityError(f"short read of the staged {self._split.path!r}")
            self._hasher.update(block)
            pos += len(block)
