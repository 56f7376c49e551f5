"""Findings for the model-scan predicate, from a manifest and its blobs' headers.

Each file layer is judged by its name and its first 64 KiB (zip directories are
read with range requests); nothing is unpickled and no weights are read whole.
"""

from __future__ import annotations

from typing import Final

from modelreg.content.base import ReadOnlyTarget, fetch_bytes
from modelreg.errors import FormatError, ModelRegError, SizeLimitError
from modelreg.model.tensors import BlobSource
from modelreg.model.unpack import layer_path
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import Manifest
from modelreg.sign.predicates import ScanFinding

__all__ = ["scan_manifest"]

PREFIX: Final = 64 * 1024


class _BlobSource(BlobSource):
    """A remote blob whose first bytes, already fetched, are served from memory."""

    def __init__(self, target: ReadOnlyTarget, desc: Descriptor, prefix: bytes) -> None:
        super().__init__(target, desc)
        self._prefix = prefix

    def read_at(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if end <= len(self._prefix):
            return self._prefix[offset:end]
        return super().read_at(offset, length)


def _first_bytes(target: ReadOnlyTarget, desc: Descriptor) -> bytes:
    if desc.size <= PREFIX:
        return fetch_bytes(target, desc, limit=PREFIX, what=f"layer {desc.digest.short}")
    return target.fetch_range(desc, 0, PREFIX)


def scan_manifest(target: ReadOnlyTarget, manifest: Manifest) -> list[ScanFinding]:
    """Pickle-based (code-executing) files among a model's layers."""
    from modelreg.model.formats import detect_format, is_pickle_based, scan_pickle

    findings: list[ScanFinding] = []
    for layer in manifest.layers:
        name = layer_path(layer)
        if name is None:
            continue
        try:
            first = _first_bytes(target, layer)
        except ModelRegError:
            first = b""
        source = _BlobSource(target, layer, first) if first else None
        try:
            unsafe = is_pickle_based(name, first, source)
            fmt = detect_format(name, first, source) if first else None
        except (FormatError, SizeLimitError):
            unsafe, fmt = True, None
        if not unsafe:
            continue
        imports: tuple[str, ...] = ()
        if first[:1] == b"\x80":
            try:
                imports = scan_pickle(first).imports
            except Exception:
                imports = ()
        reason = (
            "pickle-based: loading it can run arbitrary code"
            if first
            else "could not read the file header; judged by its extension"
        )
        findings.append(
            ScanFinding(
                path=name,
                digest=str(layer.digest),
                format=fmt or "pickle",
                severity="high",
                reason=reason,
                imports=imports,
            )
        )
    return findings
