"""Chunk tables computed once per file content: a cache keyed on (path, size, mtime, inode).

Packing the same directory twice must not read every weight twice: like
:class:`modelreg.model.digests.DigestCache`, a table is reused only while the
file's identity (real path, device, inode, size, mtime in ns) is unchanged. One
small file per entry under the cache directory, written atomically; a damaged
entry is ignored and recomputed.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Final

from modelreg._fs import atomic_write
from modelreg.lazy.chunkindex import (
    DEFAULT_CHUNK_ALGORITHM,
    DIGEST_SIZE,
    FileChunks,
    count_chunks,
    hash_file_chunks,
)
from modelreg.oci.digest import Digest

__all__ = ["TableCache"]

_VERSION: Final = b"MRCT0002"  # 0001: SHA-256 tables, keyed without the algorithm
_HEADER: Final = struct.Struct("<8s32sQQQ")  # version, file sha256, size, chunk, head


class TableCache:
    """Reuses :func:`hash_file_chunks` results for unchanged files."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(root) if root is not None else None

    def _key(
        self, real: Path, chunk_size: int | None, algorithm: str
    ) -> tuple[Path, os.stat_result] | None:
        if self.root is None:
            return None
        st = os.stat(real)
        ident = "\0".join(
            str(x)
            for x in (
                os.path.realpath(real),
                st.st_dev,
                st.st_ino,
                st.st_size,
                st.st_mtime_ns,
                chunk_size or "auto",
                algorithm,
            )
        )
        name = hashlib.sha256(ident.encode()).hexdigest()
        return self.root / name[:2] / name, st

    def get_or_compute(
        self,
        rel: str,
        real: Path,
        *,
        chunk_size: int | None = None,
        on_bytes: Callable[[int], None] | None = None,
        algorithm: str = DEFAULT_CHUNK_ALGORITHM,
    ) -> FileChunks:
        key = self._key(real, chunk_size, algorithm)
        if key is not None:
            cached = self._load(key[0], rel, key[1].st_size, algorithm)
            if cached is not None:
                return cached
        fc = hash_file_chunks(
            real, rel, chunk_size=chunk_size, on_bytes=on_bytes, algorithm=algorithm
        )
        if key is not None:
            after = os.stat(real)
            if (after.st_size, after.st_mtime_ns) == (key[1].st_size, key[1].st_mtime_ns):
                self._store(key[0], fc)
        return fc

    def _load(self, path: Path, rel: str, size: int, algorithm: str) -> FileChunks | None:
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if len(data) < _HEADER.size:
            return None
        version, digest, fsize, chunk, head = _HEADER.unpack_from(data, 0)
        if version != _VERSION or fsize != size or head > size or chunk <= 0:
            return None
        table = data[_HEADER.size :]
        if len(table) != count_chunks(size, head, chunk) * DIGEST_SIZE:
            return None
        return FileChunks(
            path=rel,
            size=size,
            digest=Digest("sha256", digest.hex()),
            chunk_size=chunk,
            head=head,
            digests=table,
            algorithm=algorithm,
        )

    def _store(self, path: Path, fc: FileChunks) -> None:
        blob = _HEADER.pack(_VERSION, bytes.fromhex(fc.digest.hex), fc.size, fc.chunk_size, fc.head)
        blob += fc.table()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, blob, mode=0o600, fsync=False)
        except OSError:
            pass  # a cache that cannot be written is no cache, never an error
