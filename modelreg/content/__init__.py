"""Content targets: where blobs and manifests live, behind one small protocol."""

from modelreg.content.base import (
    CHUNK,
    BlobSource,
    PushResult,
    ReadOnlyTarget,
    Target,
    VerifyingReader,
    bytes_source,
    fetch_bytes,
    file_source,
)
from modelreg.content.layout import LayoutStore, LayoutTarget
from modelreg.content.memory import MemoryTarget

__all__ = [
    "CHUNK",
    "BlobSource",
    "LayoutStore",
    "LayoutTarget",
    "MemoryTarget",
    "PushResult",
    "ReadOnlyTarget",
    "Target",
    "VerifyingReader",
    "bytes_source",
    "fetch_bytes",
    "file_source",
]
