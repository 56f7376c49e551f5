"""Where verified chunks are kept: a small memory LRU and a chunk store on disk.

The disk store keeps one file per chunk, named by the chunk's digest in the
algorithm of the chunk index that names it (``<root>/blake3/<2 hex>/<64 hex>``, or
``<root>/sha256/...`` for chunks of older SHA-256 indexes), written to a temporary
file and renamed,
so a file under a digest name is complete. Content-addressed, so chunks shared
by two models (or repeated inside one) are stored once. Every read from disk is
hashed again before it is served (a corrupt cache file is evicted and fetched
again), so a damaged or tampered cache can never serve wrong bytes.

The disk store may be bounded (``max_bytes``; ``$MODELREG_CHUNK_CACHE_MAX`` through
:meth:`ChunkStore.from_env`): every so many puts it drops the least recently used
chunks. A chunk's last use is the later of its atime and mtime; :meth:`ChunkStore.get`
sets the mtime at most once a minute per chunk, so the order holds on ``noatime``
mounts too. Chunks are only ever unlinked, never truncated: a reader that opened one
keeps reading it, and one that finds it gone fetches the chunk again.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from modelreg._fs import atomic_write, scan_dir
from modelreg.errors import InvalidInputError
from modelreg.model.digests import CHUNK_ALGORITHMS, chunk_hasher
from modelreg.settings import Settings

__all__ = [
    "CHUNK_CACHE_MAX_ENV",
    "ChunkStore",
    "MemoryLRU",
    "TrimResult",
    "chunk_cache_max",
    "parse_size_limit",
]

CHUNK_CACHE_MAX_ENV: Final = "MODELREG_CHUNK_CACHE_MAX"
TOUCH_INTERVAL: Final = 60.0
"""Seconds between two mtime updates of one chunk by :meth:`ChunkStore.get`."""
TRIM_EVERY: Final = 64
"""A bounded store considers trimming after this many puts."""
_RESCAN_SECONDS: Final = 300.0
_LOW_WATER: Final = 0.9


def parse_size_limit(text: str, what: str = "size limit") -> int:
    """A byte limit: ``"20GiB"``, ``"512MiB"``, a byte count, or 0 (:mod:`modelreg.units`)."""
    from modelreg.units import parse_size

    value = parse_size(text, what)
    if 0 < value < 4096:
        raise InvalidInputError(
            f"invalid {what} {text!r}: under 4 KiB",
            hint="give a size such as 20GiB, 512MiB, 4k (at least 4 KiB), or 0",
        )
    return value


def chunk_cache_max(settings: Settings | None = None) -> int | None:
    """The chunk store limit (``$MODELREG_CHUNK_CACHE_MAX``); None (unlimited) if unset."""
    return (settings or Settings.from_env()).chunk_cache_max


@dataclass(frozen=True, slots=True)
class TrimResult:
    """What :meth:`ChunkStore.trim` removed (or, dry, would remove) and what is left."""

    removed: int = 0
    removed_bytes: int = 0
    kept: int = 0
    kept_bytes: int = 0


class MemoryLRU:
    """Verified chunks by digest, bounded in bytes; thread-safe.

    Keys are raw digests of either chunk algorithm: a BLAKE3 digest equal to the
    SHA-256 of other bytes is as infeasible to find as a collision of either."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._data: OrderedDict[bytes, bytes | bytearray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: bytes) -> bytes | bytearray | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def discard(self, key: bytes) -> None:
        """Forget ``key`` (a chunk a sequential reader has consumed whole)."""
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= len(old)

    def put(self, key: bytes, value: bytes | bytearray) -> None:
        if len(value) > self.capacity:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._data[key] = value
            self._bytes += len(value)
            while self._bytes > self.capacity and self._data:
                _, evicted = self._data.popitem(last=False)
                self._bytes -= len(evicted)

    @property
    def size(self) -> int:
        with self._lock:
            return self._bytes


class ChunkStore:
    """Chunks on disk, content-addressed by their chunk index's digest algorithm
    (one directory per algorithm); at most ``max_bytes`` if given."""

    def __init__(self, root: str | os.PathLike[str], max_bytes: int | None = None) -> None:
        if max_bytes is not None and max_bytes < 0:
            raise InvalidInputError(f"chunk store limit must not be negative, not {max_bytes}")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._tmp = self.root / "tmp"
        self._ready = False
        self._lock = threading.Lock()
        self._puts = 0
        self._estimate: int | None = None  # bytes stored, as of the last scan plus puts
        self._scanned = 0.0
        self._trimming = False

    @classmethod
    def from_env(cls, root: str | os.PathLike[str], settings: Settings | None = None) -> ChunkStore:
        """A store bounded by ``$MODELREG_CHUNK_CACHE_MAX`` (unlimited when unset)."""
        return cls(root, max_bytes=chunk_cache_max(settings))

    @property
    def tmp_dir(self) -> Path:
        """Where puts write before the rename; a file left here is an interrupted put."""
        return self._tmp

    def path(self, digest: bytes, algorithm: str = "sha256") -> Path:
        if algorithm not in CHUNK_ALGORITHMS:
            raise ValueError(f"unknown chunk digest algorithm {algorithm!r}")
        hexd = digest.hex()
        return self.root / algorithm / hexd[:2] / hexd

    def _prepare(self) -> None:
        if self._ready:
            return
        with self._lock:
            self._tmp.mkdir(parents=True, exist_ok=True)
            self._ready = True

    def has(self, digest: bytes, algorithm: str = "sha256") -> bool:
        return self.path(digest, algorithm).is_file()

    def get(self, digest: bytes, length: int, algorithm: str = "sha256") -> bytes | None:
        """The chunk's bytes if stored and still matching its ``algorithm`` digest, else None."""
        path = self.path(digest, algorithm)
        try:
            with open(path, "rb") as f:
                data = f.read(length + 1)
                used = os.fstat(f.fileno()).st_mtime
        except OSError:
            return None
        if len(data) != length or chunk_hasher(algorithm)(data) != digest:
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        if time.time() - used > TOUCH_INTERVAL:
            # the LRU order of trim(), also where reads do not update atime (noatime)
            with contextlib.suppress(OSError):
                os.utime(path)
        return data

    def put(self, digest: bytes, data: bytes | memoryview, algorithm: str = "sha256") -> None:
        """Store a chunk the caller has verified against its ``algorithm`` digest.
        Failures (disk full) are ignored: the chunk is simply not cached."""
        path = self.path(digest, algorithm)
        if (self.max_bytes is not None and len(data) > self.max_bytes) or path.is_file():
            return
        try:
            self._prepare()
            path.parent.mkdir(parents=True, exist_ok=True)
            # a cache refills what a crash loses: no fsync
            atomic_write(path, data, mode=0o600, fsync=False, tmp_dir=self._tmp)
        except OSError:
            return
        if self.max_bytes is not None:
            self._after_put(len(data))

    def _after_put(self, size: int) -> None:
        """Every :data:`TRIM_EVERY` puts, trim to 90 % of the limit when over it (as
        far as this process knows; a scan every few minutes sees the others' chunks)."""
        limit = self.max_bytes
        if limit is None:
            return
        with self._lock:
            self._puts += 1
            if self._estimate is not None:
                self._estimate += size
            if self._puts % TRIM_EVERY or self._trimming:
                return
            stale = time.monotonic() - self._scanned > _RESCAN_SECONDS
            if not (self._estimate is None or self._estimate > limit or stale):
                return
            self._trimming = True
        try:
            left = self.trim(limit, target=int(limit * _LOW_WATER)).kept_bytes
            with self._lock:
                self._estimate = left
                self._scanned = time.monotonic()
        finally:
            with self._lock:
                self._trimming = False

    def entries(self) -> Iterator[tuple[float, int, Path]]:
        """``(last use, size, path)`` of every chunk file; unreadable ones are skipped."""
        for algorithm in CHUNK_ALGORITHMS:
            yield from self._entries(self.root / algorithm)

    @staticmethod
    def _entries(base: Path) -> Iterator[tuple[float, int, Path]]:
        for shard in scan_dir(base):
            if len(shard.name) != 2 or not shard.is_dir(follow_symlinks=False):
                continue
            for entry in scan_dir(shard.path):
                if len(entry.name) != 64 or not entry.name.startswith(shard.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if entry.is_file(follow_symlinks=False):
                    yield max(st.st_atime, st.st_mtime), st.st_size, Path(entry.path)

    def usage(self) -> tuple[int, int]:
        """``(chunks, bytes)`` stored."""
        count = total = 0
        for _used, size, _path in self.entries():
            count += 1
            total += size
        return count, total

    def trim(
        self, max_bytes: int, *, target: int | None = None, dry_run: bool = False
    ) -> TrimResult:
        """When over ``max_bytes``, remove least recently used chunks down to ``target``
        (default ``max_bytes``). Unlinks only: a reader that opened a chunk keeps it."""
        if max_bytes < 0:
            raise InvalidInputError(f"chunk store limit must not be negative, not {max_bytes}")
        goal = max_bytes if target is None else min(target, max_bytes)
        chunks = sorted(self.entries(), key=lambda e: e[0])
        total = sum(size for _used, size, _path in chunks)
        removed = removed_bytes = 0
        if total > max_bytes:
            for _used, size, path in chunks:
                if total - removed_bytes <= goal:
                    break
                if not dry_run:
                    try:
                        path.unlink()
                    except FileNotFoundError:
                        pass  # another process trimmed it: it is gone all the same
                    except OSError:
                        continue
                removed += 1
                removed_bytes += size
        return TrimResult(removed, removed_bytes, len(chunks) - removed, total - removed_bytes)

    def count(self) -> int:
        return self.usage()[0]
