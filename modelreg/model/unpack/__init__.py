"""Write a model artifact's files into a directory, every byte verified; all or nothing.

The pipeline
============

``unpack(source, manifest, output)`` runs five steps, each in a module of its own:

1. **plan** (:mod:`._plan`): which layer is which file
   (:mod:`modelreg.model.producers`: ModelPack, legacy ``vnd.cnai``, KitOps,
   Docker model artifacts, plain ORAS; parts of split files), each path made safe
   and unique, ``--include`` applied, what the output already holds checked
   against the plan (:mod:`._existing`: identical files kept, different ones
   refused unless ``overwrite``), stale staging of killed pulls swept, and what
   the cache keeps decided (``cache_mode``, below). Nothing is fetched or written
   before the plan holds.
2. **fetch and verify** (:mod:`._source`, :mod:`._blockio`): each layer is read
   once, from the cache when it holds it, else from a remembered copy
   (:mod:`modelreg.content.copies`: a file written by an earlier pull, still
   unchanged, read while verifying every byte), else from the source. Every
   byte is checked against its descriptor as it streams. A raw layer is received
   and hashed on the calling thread while a writer thread writes the previous
   blocks (a small pool of buffers shared by the pull); with ``fsync`` a helper
   thread flushes the file every 256 MiB so the final fsync is short.
3. **stage** (:class:`._unpacker.Unpacker`): every file is written into a staging
   directory inside the output directory: raw files (reflinked from the cache
   where the filesystem can, hard-linked only on request, else copied with
   verification), compressed and archive layers expanded under bounds
   (:mod:`._layers`), split files reassembled part by part at their offsets, in
   parallel, then hashed whole against the digest their parts declare
   (:mod:`._split`).
4. **check** (:mod:`._staging`): with every layer staged, the destinations are
   checked again (archive members now known) and every staged link of every
   layer is followed together, the way the kernel would, through what the output
   already holds (:mod:`modelreg.model._linkcheck`).
5. **commit** (:mod:`._staging`): each staged file is renamed into place (a
   destination already holding the same content is left as it is); then,
   and only then, output files are remembered as copies of their blobs.

All or nothing
==============

A pull that fails at any step before the commit leaves the output directory as
it was: nothing is written outside the staging directory until step 5, and the
staging directory is removed in a ``finally`` whatever happened. The cache may
have gained verified blobs on the way; those are correct whatever the outcome.

What the cache keeps
====================

Of a raw layer or split part it lacked (``cache_mode``): ``copy``, its own copy
(reflinked from the staged file where the filesystem can, else written on the
way, so every byte is written twice); ``reference``, nothing but the path and
identity of the verified output file, recorded once it is in place (each byte is
written once); ``auto``, a reflink where the filesystem can, else a reference.
Compressed and archive layers are always written to the cache on the way.
Reused bytes count as from the cache, never as fetched. When the source *is* the
cache (a pull from the embedded store), the caller says so
(``source_is_cache=True``) and nothing is written to the cache.

Where each SECURITY.md case is enforced
=======================================

* Case 1 (bytes that do not match the digest: nothing written to the
  destination): every stream is a verifying reader (:mod:`._source`); split
  parts copied unhashed are covered by the whole-file digest (:mod:`._split`);
  the output changes only at the commit.
* Case 6 (``..``, absolute paths, backslashes, NUL, collisions): layer paths in
  :func:`._plan.plan` (one set of claims that archive members share); member
  names in :mod:`modelreg.model.archive`; two paths landing on one file through
  the output's existing links at the commit (:mod:`modelreg.model._linkcheck`).
* Case 7 (links leading outside, device files, absolute members): per archive
  in :mod:`modelreg.model.archive`; across every layer of the pull, and through
  what the output holds, at the commit (:meth:`._staging.Staging.commit`).
* Case 9 (decompression bombs): :mod:`._layers` bounds every expansion.
* Case 28 (a cached blob that no longer matches): cached blobs are read through
  a verifying reader; a cached or remembered split part that breaks the
  whole-file digest is evicted or forgotten and fetched again
  (:meth:`._unpacker.Unpacker.repair`); a remembered copy that changed is
  forgotten and the blob fetched.
* Case 29 (a pull never destroys work; a failed pull leaves the output as it
  was), :mod:`._existing` and :mod:`._staging`:

  - a file already at a planned path with the same size and digest (hashed
    through the digest cache) is kept as it is, not rewritten and, for raw and
    split files, not fetched (counted as reused: ``UnpackResult.kept``);
  - a file there with different content (or a link, or another kind of file)
    refuses the pull, naming the first ten such paths and their count
    (:class:`~modelreg.errors.InvalidInputError`, exit 2), unless ``overwrite``:
    raw and split files before anything is fetched, archive members and
    compressed layers at the commit, before anything moves;
  - files the model does not name are left alone (the model is mixed with
    them; the pull says so in a progress message);
  - an output path where a directory stands, or a non-directory in the way of a
    parent, is refused before anything is written
    (:func:`._plan.check_destinations`);
  - a failed pull removes the staging directory in a ``finally``, and the
    directories it created (:func:`._plan.remove_created`, each only if empty);
  - staging directories of killed pulls (``kill -9``) carry their owner's host,
    pid and start time and are recorded in the state directory: the next pull
    into the output, and ``modelreg cache prune``, remove those whose owner is
    gone, never a live pull's (:mod:`._staging`);
  - a remembered output file the user changed is never taken for the blob: it
    is read verifying, or its part is checked by the whole-file digest, and
    forgotten when it does not match.
"""

from modelreg.model.paths import safe_relpath
from modelreg.model.producers import layer_mode, layer_path
from modelreg.model.unpack._plan import (
    CACHE_MODES,
    CacheMode,
    parse_cache_mode,
    plan_files,
)
from modelreg.model.unpack._plan import prepare_output as prepare_output
from modelreg.model.unpack._result import FileEntry, UnpackResult
from modelreg.model.unpack._unpacker import unpack

__all__ = [
    "CACHE_MODES",
    "CacheMode",
    "FileEntry",
    "UnpackResult",
    "layer_mode",
    "layer_path",
    "parse_cache_mode",
    "plan_files",
    "safe_relpath",
    "unpack",
]
