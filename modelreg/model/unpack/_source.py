"""Where a layer's bytes come from: the cache when it holds them, else the source.

:class:`BlobReader` is the one place a pull opens a layer as a stream. Every
byte it hands out is verified against the layer's descriptor as it is read
(SECURITY.md case 1): a cached blob through the store's own verifying reader,
which quarantines a blob that no longer matches its digest and raises
:class:`~modelreg.errors.CorruptCacheError` instead of serving it (case 28; the
pull then fetches it again from the source); a
fetched blob through the source's verifying reader. Bytes fetched from the
source are written into the cache on the way (``keep``) unless the source *is*
the cache: the caller says so (``source_is_cache``), since only it knows
whether the target it resolved is the store it passes as the cache.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path

from modelreg.content.base import ReadOnlyTarget, VerifyingReader
from modelreg.content.layout import BlobWriter, LayoutStore
from modelreg.errors import NotFoundError
from modelreg.events import Event, ProgressCallback, emit
from modelreg.model.unpack._result import UnpackResult
from modelreg.oci.descriptor import Descriptor


class Tee(io.RawIOBase):
    """Reads a verifying reader, copying every byte into a cache writer, counting."""

    def __init__(
        self,
        reader: io.RawIOBase,
        writer: BlobWriter | None,
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
                self._writer.write(view)
            if self._on_bytes is not None:
                self._on_bytes(n)
        return n


class BlobReader:
    """Opens layers from the cache when there, else from the source (teeing into the cache)."""

    def __init__(
        self,
        source: ReadOnlyTarget,
        cache: LayoutStore | None,
        result: UnpackResult,
        progress: ProgressCallback | None,
        *,
        source_is_cache: bool,
    ) -> None:
        self.source = source
        self.cache = cache
        self.result = result
        self.progress = progress
        self.remote = not (cache is not None and source_is_cache)
        """Whether the source is somewhere other than the cache (what it sends, the
        cache may keep)."""

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
        with contextlib.ExitStack() as stack:
            cached: VerifyingReader | None = None
            if self.cache is not None:
                # absent, or removed by `cache prune` since it was listed: not cached. A
                # blob that does not verify is quarantined by the store's reader, which
                # raises CorruptCacheError: the pull fetches it again from the source.
                with contextlib.suppress(NotFoundError):
                    cached = stack.enter_context(self.cache.open_blob(desc))
            if cached is not None:
                yield Tee(cached, None, advance)
                self.result.add(0, desc.size)
            else:
                writer = None
                reader = stack.enter_context(self.source.fetch(desc))
                if self.cache is not None and self.remote and keep:
                    # the reader verifies every byte: the cache writer need not hash them again
                    writer = stack.enter_context(self.cache.ingest(desc, verified_by=reader))
                yield Tee(reader, writer, advance)
                self.result.add(desc.size, 0)
        emit(self.progress, Event("done", name, desc, total=desc.size))
