"""What a pull wrote and how many bytes came from where (the public result types)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from modelreg.oci.descriptor import Descriptor


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
    kept: list[str] = field(default_factory=list)
    """Files already in the output with the same content, kept as they were (not
    rewritten; those known before the transfer not fetched either)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, fetched: int, cached: int) -> None:
        """Count bytes fetched from the source and bytes reused (cache or a remembered
        copy); called from every worker thread."""
        with self._lock:
            self.bytes_fetched += fetched
            self.bytes_from_cache += cached

    def add_files(self, entries: list[FileEntry]) -> None:
        with self._lock:
            self.files.extend(entries)

    def keep(self, entries: list[FileEntry]) -> None:
        """Files found in place before the transfer: listed, kept, counted as reused."""
        with self._lock:
            self.files.extend(entries)
            self.files.sort(key=lambda e: e.path)
            self.kept = sorted({*self.kept, *(e.path for e in entries)})
            self.bytes_from_cache += sum(e.descriptor.size for e in entries)
