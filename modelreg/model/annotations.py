"""Media types and annotation keys of modelreg's own (``dev.modelreg.*``, ``vnd.modelreg``).

ModelPack defines none of these. They use a namespace we control (the project's
domain is ``modelreg.dev``, reversed as OCI recommends) so that no other tool
mistakes them for something it knows.

Split weight files (``--split``, see :mod:`modelreg.model.split`)::

    mediaType  application/vnd.modelreg.weight.part.v1.raw
    dev.modelreg.part.path      relative path of the whole file ("model.safetensors")
    dev.modelreg.part.index     0 .. count-1 (0 is the header part)
    dev.modelreg.part.count     number of parts of the file
    dev.modelreg.part.offset    byte offset of this part in the whole file
    dev.modelreg.file.digest    digest of the whole file (verified after reassembly)
    dev.modelreg.file.size      size of the whole file
    dev.modelreg.file.metadata+json   on part 0 only: the ModelPack file metadata
                                      (name, mode, ...) the whole file would carry

A part carries neither ``org.opencontainers.image.title`` nor
``org.cncf.model.filepath``: oras, modctl and docker treat it as an unnamed blob
(skipped or kept opaque) instead of writing it out as if it were the file.

Files flagged when packed::

    dev.modelreg.file.unsafe    "pickle": loading the file can execute code
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ANN_FILE_DIGEST",
    "ANN_FILE_METADATA",
    "ANN_FILE_SIZE",
    "ANN_FILE_UNSAFE",
    "ANN_PART_COUNT",
    "ANN_PART_INDEX",
    "ANN_PART_OFFSET",
    "ANN_PART_PATH",
    "LEGACY_ANN_FILE_UNSAFE",
    "PART_MEDIA_TYPE",
    "UNSAFE_PICKLE",
]

PART_MEDIA_TYPE: Final = "application/vnd.modelreg.weight.part.v1.raw"
"""A byte range of a weight file holding whole tensors (or the file's header)."""

ANN_PART_PATH: Final = "dev.modelreg.part.path"
ANN_PART_INDEX: Final = "dev.modelreg.part.index"
ANN_PART_COUNT: Final = "dev.modelreg.part.count"
ANN_PART_OFFSET: Final = "dev.modelreg.part.offset"
ANN_FILE_DIGEST: Final = "dev.modelreg.file.digest"
ANN_FILE_SIZE: Final = "dev.modelreg.file.size"
ANN_FILE_METADATA: Final = "dev.modelreg.file.metadata+json"

ANN_FILE_UNSAFE: Final = "dev.modelreg.file.unsafe"
"""Set to ``"pickle"`` on layers whose file is pickle-based (code runs on load)."""
LEGACY_ANN_FILE_UNSAFE: Final = "org.cncf.model.file.unsafe"
"""Read too (not written): a name other tools in this space have used."""
UNSAFE_PICKLE: Final = "pickle"
