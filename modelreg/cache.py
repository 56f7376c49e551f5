"""The local store and the chunk cache inside it, measured and pruned as one.

``$MODELREG_HOME/store`` holds content of two layers: the OCI layout
(:mod:`modelreg.content`, measured and pruned by :mod:`modelreg.content.gc`) and,
in ``modelreg-chunks/``, the verified chunks of lazy reads (:mod:`modelreg.lazy`).
``content/`` must not know ``lazy/``, so this module, above both, runs the store's
pruning, tells it the chunk store's temporary directory, then counts or trims the
chunks and adds them to the same :class:`Usage` and :class:`PruneResult`.
``modelreg cache info`` and ``modelreg cache prune`` call these two functions;
``modelreg cache verify`` calls :func:`verify` (:mod:`modelreg.content.fsck`:
re-hash, quarantine, repair from a source).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from modelreg.content import fsck, gc
from modelreg.content.base import ReadOnlyTarget
from modelreg.content.fsck import Damage, VerifyResult
from modelreg.content.gc import DEFAULT_OLDER_THAN, TEMP_MAX_AGE, PruneResult, Usage
from modelreg.content.layout import LayoutStore
from modelreg.errors import InvalidInputError
from modelreg.events import Event, ProgressCallback, emit
from modelreg.lazy._cache import (
    CHUNK_CACHE_MAX_ENV,
    ChunkStore,
    TrimResult,
    chunk_cache_max,
    parse_size_limit,
)
from modelreg.lazy.handle import CHUNK_STORE_DIR
from modelreg.model.unpack._staging import StalePrune
from modelreg.model.unpack._staging import prune_recorded as prune_staging

__all__ = [
    "CHUNK_CACHE_MAX_ENV",
    "DEFAULT_OLDER_THAN",
    "TEMP_MAX_AGE",
    "Damage",
    "PruneResult",
    "Usage",
    "VerifyResult",
    "chunk_cache_max",
    "parse_size_limit",
    "prune",
    "prune_staging",
    "usage",
    "verify",
]


def _chunks(store: LayoutStore | str | os.PathLike[str]) -> ChunkStore:
    root = store.root if isinstance(store, LayoutStore) else Path(store)
    return ChunkStore(root / CHUNK_STORE_DIR)


def usage(
    store: LayoutStore | str | os.PathLike[str],
    *,
    state: str | os.PathLike[str] | None = None,
) -> Usage:
    """What :func:`modelreg.content.gc.usage` counts, with the chunk store's files."""
    chunks = _chunks(store)
    result = gc.usage(store, state=state, temp_dirs=[chunks.tmp_dir])
    if not chunks.root.parent.exists():
        return result
    count, total = chunks.usage()
    return dataclasses.replace(result, chunks=count, chunk_bytes=total)


def prune(
    store: LayoutStore | str | os.PathLike[str],
    *,
    keep_tagged: bool = True,
    max_chunk_bytes: int | None = None,
    older_than: float = DEFAULT_OLDER_THAN,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
) -> PruneResult:
    """:func:`modelreg.content.gc.prune`, the staging directories killed pulls left
    (:func:`prune_staging`, counted as temp files), then with ``max_chunk_bytes`` the
    least recently used chunks beyond that size (None leaves the chunk store alone)."""
    if max_chunk_bytes is not None and max_chunk_bytes < 0:
        raise InvalidInputError(f"max_chunk_bytes must not be negative, not {max_chunk_bytes}")
    chunks = _chunks(store)
    result = gc.prune(
        store,
        keep_tagged=keep_tagged,
        older_than=older_than,
        dry_run=dry_run,
        progress=progress,
        temp_dirs=[chunks.tmp_dir],
    )
    result = _with_staging(result, prune_staging(dry_run=dry_run))
    if not chunks.root.parent.exists():
        return result
    if max_chunk_bytes is not None:
        emit(progress, Event("message", "trimming the chunk store"))
        trimmed = chunks.trim(max_chunk_bytes, dry_run=dry_run)
    else:
        count, total = chunks.usage()
        trimmed = TrimResult(kept=count, kept_bytes=total)
    return dataclasses.replace(
        result,
        chunks=trimmed.removed,
        chunk_bytes=trimmed.removed_bytes,
        chunks_left=trimmed.kept,
        chunk_bytes_left=trimmed.kept_bytes,
    )


def _with_staging(result: PruneResult, staging: StalePrune) -> PruneResult:
    """Staging directories of killed pulls (recorded in the state directory, their owner
    gone: :mod:`modelreg.model.unpack._staging`) count as stale temporary files."""
    return dataclasses.replace(
        result,
        temp_files=result.temp_files + len(staging.dirs),
        temp_bytes=result.temp_bytes + staging.bytes,
    )


def verify(
    store: LayoutStore | str | os.PathLike[str],
    *,
    repair_from: Sequence[ReadOnlyTarget] = (),
    progress: ProgressCallback | None = None,
) -> VerifyResult:
    """:func:`modelreg.content.fsck.verify`: re-hash every blob of the store,
    quarantine the damaged ones, fetch them again from ``repair_from``."""
    return fsck.verify(store, repair_from=repair_from, progress=progress)
