"""Lazy, verified pulls: open a remote model and read only what you need.

* :func:`open_model` -> :class:`ModelHandle`: files, file objects, tensors, each
  byte verified before it is served (per chunk with a chunk index, per blob
  without), fetched with coalesced, parallel Range requests, cached locally.
* :mod:`modelreg.lazy.chunkindex`: the chunk index format (where it lives and
  what other tools see is documented there and in ``docs/lazy.md``).
* :mod:`modelreg.lazy.publish`: add the index at pack time and push it.
* :func:`pull_into`: an init container's pull (config first, resumable).
* :mod:`modelreg.lazy.fuse`: ``modelreg mount`` (pyfuse3, optional).
"""

from __future__ import annotations

from modelreg.lazy.chunkindex import (
    ANN_CHUNK_INDEX,
    CHUNK_INDEX_ARTIFACT_TYPE,
    CHUNK_INDEX_MEDIA_TYPE,
    ChunkIndex,
    FileChunks,
    build_chunk_index,
    hash_file_chunks,
    parse_chunk_index,
)
from modelreg.lazy.handle import FileInfo, LazyFile, ModelHandle, TensorRef, Verifier, open_model
from modelreg.lazy.into import PullIntoResult, pull_into
from modelreg.lazy.publish import (
    chunk_index_annotations,
    index_descriptor_from_annotations,
    publish_chunk_index,
    push_chunk_index,
)

__all__ = [
    "ANN_CHUNK_INDEX",
    "CHUNK_INDEX_ARTIFACT_TYPE",
    "CHUNK_INDEX_MEDIA_TYPE",
    "ChunkIndex",
    "FileChunks",
    "FileInfo",
    "LazyFile",
    "ModelHandle",
    "PullIntoResult",
    "TensorRef",
    "Verifier",
    "build_chunk_index",
    "chunk_index_annotations",
    "hash_file_chunks",
    "index_descriptor_from_annotations",
    "open_model",
    "parse_chunk_index",
    "publish_chunk_index",
    "pull_into",
    "push_chunk_index",
]
