"""Where verified chunks are kept: a small memory LRU and a chunk store on disk.

The disk store keeps one file per chunk, named by the chunk's SHA-256
(``<root>/sha256/<2 hex>/<64 hex>``), written to a temporary file and renamed,
so a file under a digest name is complete. Content-addressed, so chunks shared
by two models (or repeated inside one) are stored once. Every read from disk is
hashed again before it is served (a corrupt cache file is evicted and fetched
again), so a damaged or tampered cache can never serve wrong bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

__all__ = ["ChunkStore", "MemoryLRU"]


class MemoryLRU:
    """Verified chunks by digest, bounded in bytes; thread-safe."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._data: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: bytes, value: bytes) -> None:
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
    """Chunks on disk, content-addressed by SHA-256."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._tmp = self.root / "tmp"
        self._ready = False
        self._lock = threading.Lock()

    def path(self, digest: bytes) -> Path:
        hexd = digest.hex()
        return self.root / "sha256" / hexd[:2] / hexd

    def _prepare(self) -> None:
        if self._ready:
            return
        with self._lock:
            self._tmp.mkdir(parents=True, exist_ok=True)
            self._ready = True

    def has(self, digest: bytes) -> bool:
        return self.path(digest).is_file()

    def get(self, digest: bytes, length: int) -> bytes | None:
        """The chunk's bytes if stored and still matching its digest, else None."""
        path = self.path(digest)
        try:
            with open(path, "rb") as f:
                data = f.read(length + 1)
        except OSError:
            return None
        if len(data) != length or hashlib.sha256(data).digest() != digest:
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return data

    def put(self, digest: bytes, data: bytes | memoryview) -> None:
        """Store a chunk the caller has verified. Failures (disk full) are ignored:
        the chunk is simply not cached."""
        path = self.path(digest)
        if path.is_file():
            return
        try:
            self._prepare()
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix=digest.hex()[:16])
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError:
            pass

    def count(self) -> int:
        base = self.root / "sha256"
        if not base.is_dir():
            return 0
        return sum(1 for p in base.glob("*/*") if p.is_file())
