"""Shared pieces of the model-file parsers: byte sources, result types, a buffered reader.

Every parser reads through a :class:`RangeSource` (``size`` + ``read_at``) so
that the same code works on a local file and on a remote blob fetched with
HTTP Range requests. Parsers never read a length that the file claims before
checking it against a cap and against ``size``.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Protocol, runtime_checkable

from modelreg.errors import FormatError, SizeLimitError

__all__ = [
    "BytesSource",
    "CachedSource",
    "FileSource",
    "MetadataValue",
    "ModelFileInfo",
    "RangeSource",
    "TensorInfo",
    "check_range",
]

#: Scalar or short list value kept in :attr:`ModelFileInfo.metadata`.
MetadataScalar = str | int | float | bool
MetadataValue = str | int | float | bool | list[MetadataScalar]


@runtime_checkable
class RangeSource(Protocol):
    """Random access to the bytes of one file (local or remote).

    ``read_at`` returns exactly ``length`` bytes, or fewer only when the range
    runs past the end of the file.
    """

    @property
    def size(self) -> int: ...

    def read_at(self, offset: int, length: int) -> bytes: ...


def check_range(offset: int, length: int) -> None:
    """What every :class:`RangeSource` refuses first (here and in remote sources):
    a negative offset or length, which slicing would silently read from the end."""
    if offset < 0 or length < 0:
        raise ValueError(f"read_at needs offset >= 0 and length >= 0, got {offset}, {length}")


class BytesSource:
    """A :class:`RangeSource` over bytes already in memory."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = memoryview(bytes(data)) if not isinstance(data, bytes) else memoryview(data)

    @property
    def size(self) -> int:
        return len(self._data)

    def read_at(self, offset: int, length: int) -> bytes:
        check_range(offset, length)
        return bytes(self._data[offset : offset + length])


class FileSource:
    """A :class:`RangeSource` over a local file; use as a context manager."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd: int | None = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            self._size = os.fstat(self._fd).st_size
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        check_range(offset, length)
        if self._fd is None:
            raise ValueError(f"read_at on closed FileSource({self.path!r})")
        length = max(0, min(length, self._size - offset))
        parts: list[bytes] = []
        got = 0
        while got < length:
            chunk = _pread(self._fd, length - got, offset + got)
            if not chunk:  # the file shrank under us: report what we have (EOF)
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def closed(self) -> bool:
        return self._fd is None

    def __enter__(self) -> FileSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FileSource({self.path!r}, size={self._size})"


def _pread(fd: int, length: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, length, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - Windows only
    return os.read(fd, length)  # pragma: no cover


class CachedSource:
    """Serves reads from byte ranges already fetched, else asks the wrapped source.

    Used by :func:`inspect_file` so that the prefix read for format detection
    is not fetched a second time by the parser.
    """

    def __init__(self, source: RangeSource) -> None:
        self.source = source
        self._chunks: list[tuple[int, bytes]] = []

    @property
    def size(self) -> int:
        return self.source.size

    def remember(self, offset: int, data: bytes) -> None:
        if data:
            self._chunks.append((offset, data))

    def read_at(self, offset: int, length: int) -> bytes:
        check_range(offset, length)
        end = min(offset + length, self.size)
        for start, data in self._chunks:
            if start <= offset and end <= start + len(data):
                return data[offset - start : end - start]
        data = self.source.read_at(offset, length)
        self.remember(offset, data)
        return data


def read_exact(source: RangeSource, offset: int, length: int, *, name: str, what: str) -> bytes:
    """Read ``length`` bytes at ``offset`` or raise :class:`FormatError` (truncated file)."""
    if offset + length > source.size:
        raise FormatError(
            f"{name}: {what} needs bytes {offset}..{offset + length} "
            f"but the file is only {source.size} bytes long",
            hint="the file is truncated or its header lies about sizes; download it again",
        )
    data = source.read_at(offset, length)
    if len(data) != length:
        raise FormatError(
            f"{name}: short read for {what}: asked {length} bytes at offset {offset}, "
            f"got {len(data)}",
            hint="the file changed while it was read, or the server ignored the range; retry",
        )
    return data


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor as described by a file's header, without its data.

    ``shape`` is in row-major order, outermost dimension first (numpy/PyTorch
    order; GGUF stores dimensions the other way round and is reversed here).
    ``offset`` is the absolute byte offset of the tensor data in the file
    (for ONNX external data: in the file named by ``location``), or -1 when
    the file holds no payload for this tensor. ``nbytes`` is the size of the
    stored data.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    location: str | None = None

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True, slots=True)
class ModelFileInfo:
    """What a model file says about itself (header only, no weights loaded)."""

    format: str
    tensors: tuple[TensorInfo, ...] = ()
    header_size: int = 0
    metadata: dict[str, MetadataValue] = field(default_factory=dict, hash=False)
    architecture: str | None = None
    param_count: int = 0
    dtypes: tuple[str, ...] = ()
    quantization: str | None = None
    unsafe: bool = False
    unsafe_reason: str | None = None

    @property
    def dominant_dtype(self) -> str | None:
        """The dtype holding the most bytes (what ModelPack calls ``precision``)."""
        totals: dict[str, int] = {}
        for t in self.tensors:
            totals[t.dtype] = totals.get(t.dtype, 0) + t.nbytes
        if not totals:
            return None
        return max(sorted(totals), key=lambda d: totals[d])

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly view (tensors as lists of plain dicts)."""
        return {
            "format": self.format,
            "header_size": self.header_size,
            "architecture": self.architecture,
            "param_count": self.param_count,
            "dtypes": list(self.dtypes),
            "quantization": self.quantization,
            "unsafe": self.unsafe,
            "unsafe_reason": self.unsafe_reason,
            "metadata": dict(self.metadata),
            "tensors": [
                {
                    "name": t.name,
                    "dtype": t.dtype,
                    "shape": list(t.shape),
                    "offset": t.offset,
                    "nbytes": t.nbytes,
                    **({"location": t.location} if t.location is not None else {}),
                }
                for t in self.tensors
            ],
        }


def summarize(
    fmt: str,
    tensors: list[TensorInfo],
    *,
    header_size: int,
    metadata: dict[str, MetadataValue],
    architecture: str | None = None,
    quantization: str | None = None,
) -> ModelFileInfo:
    """Build a :class:`ModelFileInfo`, deriving ``param_count`` and ``dtypes``."""
    return ModelFileInfo(
        format=fmt,
        tensors=tuple(tensors),
        header_size=header_size,
        metadata=metadata,
        architecture=architecture,
        param_count=sum(t.numel for t in tensors),
        dtypes=tuple(sorted({t.dtype for t in tensors})),
        quantization=quantization,
    )


_MIN_CHUNK: Final = 64 * 1024
_MAX_CHUNK: Final = 1024 * 1024


class BufferedReader:
    """Sequential reader over a :class:`RangeSource` with few, growing requests.

    Each refill asks for at least ``chunk`` bytes (doubling up to 1 MiB while
    the caller keeps reading), so a header of H bytes costs about
    ``log2(H / 64 KiB)`` requests. ``skip`` moves past bytes without fetching
    them. ``max_pos`` bounds how far reads may go (SizeLimitError beyond it);
    ``max_scanned`` bounds the bytes actually consumed by ``read``.
    """

    def __init__(
        self,
        source: RangeSource,
        *,
        name: str,
        pos: int = 0,
        chunk: int = _MIN_CHUNK,
        max_pos: int | None = None,
        max_scanned: int | None = None,
        limit_what: str = "header",
        limit_hint: str = "",
    ) -> None:
        self.source = source
        self.name = name
        self.size = source.size
        self.pos = pos
        self._buf = b""
        self._buf_start = pos
        self._chunk = max(1, chunk)
        self._base_chunk = self._chunk
        self.max_pos = max_pos
        self.max_scanned = max_scanned
        self.scanned = 0
        self.requests = 0
        self._limit_what = limit_what
        self._limit_hint = limit_hint

    def _over_limit(self, end: int) -> None:
        if self.max_pos is not None and end > self.max_pos:
            raise SizeLimitError(
                f"{self.name}: {self._limit_what} extends past {self.max_pos} bytes (cap)",
                hint=self._limit_hint or "raise the limit if this file is trusted",
            )

    def _end(self, n: int, what: str) -> int:
        """Where ``n`` bytes of ``what`` from here end, once checked against the file's
        end and the cap: reading and skipping refuse the same lengths."""
        if n < 0:
            raise FormatError(f"{self.name}: negative length {n} for {what}")
        end = self.pos + n
        if end > self.size:
            raise self._truncated(n, what)
        self._over_limit(end)
        return end

    def _truncated(self, n: int, what: str) -> FormatError:
        return FormatError(
            f"{self.name}: {what} needs {n} bytes at offset {self.pos} "
            f"but the file ends at {self.size}",
            hint="the file is truncated or a length field in it is corrupt",
        )

    def read(self, n: int, what: str = "data") -> bytes:
        end = self._end(n, what)
        if self.max_scanned is not None and self.scanned + n > self.max_scanned:
            raise SizeLimitError(
                f"{self.name}: parsing would scan more than {self.max_scanned} bytes (cap)",
                hint=self._limit_hint or "raise the limit if this file is trusted",
            )
        buf_end = self._buf_start + len(self._buf)
        if not (self._buf_start <= self.pos and end <= buf_end):
            self._fill(n)
        off = self.pos - self._buf_start
        out = self._buf[off : off + n]
        self.pos = end
        self.scanned += n
        return out

    def _fill(self, n: int) -> None:
        buf_end = self._buf_start + len(self._buf)
        if self._buf_start <= self.pos <= buf_end:
            keep = self._buf[self.pos - self._buf_start :]
            fetch_from = buf_end
        else:
            keep = b""
            fetch_from = self.pos
        want = max(n - len(keep), self._chunk)
        if self.max_pos is not None:
            # do not fetch far beyond the cap: the caller would be refused anyway
            want = max(n - len(keep), min(want, self.max_pos - fetch_from))
        want = min(want, self.size - fetch_from)
        data = self.source.read_at(fetch_from, want) if want > 0 else b""
        self.requests += 1
        if len(data) != want:
            raise FormatError(
                f"{self.name}: short read at offset {fetch_from}: asked {want} bytes, "
                f"got {len(data)}",
                hint="the file changed while it was read, or the server ignored the range",
            )
        self._buf = keep + data
        self._buf_start = self.pos
        self._chunk = min(self._chunk * 2, _MAX_CHUNK)

    def skip(self, n: int, what: str = "data") -> None:
        end = self._end(n, what)
        buf_end = self._buf_start + len(self._buf)
        if end > buf_end + self._chunk:
            # a long jump over data we do not need: start small again at the far side
            self._chunk = self._base_chunk
        self.pos = end

    def unpack(self, fmt: str, what: str) -> tuple[int | float | bool, ...]:
        raw = self.read(struct.calcsize(fmt), what)
        return struct.unpack(fmt, raw)

    def uint(self, fmt: str, what: str) -> int:
        return int(self.unpack(fmt, what)[0])
