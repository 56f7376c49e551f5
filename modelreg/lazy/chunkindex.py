"""The chunk index: per-file digests of fixed-size chunks, covered by the manifest.

A lazy reader must verify every byte before serving it, but a layer digest can
only be checked after the whole layer was read. The chunk index gives every file
of a model a table of chunk digests, so that any byte range can be fetched with
HTTP Range requests and verified chunk by chunk.

Where it lives (and what other tools see)
=========================================

* The index is one blob of media type :data:`CHUNK_INDEX_MEDIA_TYPE`. The model
  manifest names it in the annotation :data:`ANN_CHUNK_INDEX`, whose value is the
  compact JSON of the blob's descriptor (media type, digest, size) plus, in the
  descriptor's own annotations, the digest and size of the index's table of
  contents (:data:`ANN_TOC_DIGEST`, :data:`ANN_TOC_SIZE`). The manifest digest
  therefore covers the index, and any signature of the manifest covers it too.
  The index is computed from the files only (no time, no host), so the same
  directory still packs to the same manifest digest everywhere.
* So that registries do not garbage-collect the blob, it is pushed inside a
  small *referrer* artifact: an image manifest with ``artifactType`` =
  :data:`CHUNK_INDEX_ARTIFACT_TYPE`, the empty config, one layer = the index
  blob, and ``subject`` = the model manifest (see :mod:`modelreg.lazy.publish`).
  On registries without the referrers API the fallback tag
  (``sha256-<hex>``) lists it, which also keeps it reachable.
* It is deliberately **not** a layer of the model manifest: ModelPack readers
  (modctl, KitOps, ``modelreg pull`` itself) treat every layer as a file of the
  model and would write out or choke on a foreign one. What other tools see is
  one extra manifest annotation (ignored by all of them) and one extra referrer
  next to signatures and attestations (cosign, notation and oras filter
  referrers by artifact type, so they ignore it too). The referrer itself is
  never trusted: readers fetch the blob by the digest the manifest annotation
  gives and verify it.
* A copy that drops referrers (``skopeo copy``, ``oras cp`` without ``-r``)
  leaves the annotation pointing at a blob the destination lacks: readers then
  fall back to whole-blob verification, which is slower but just as safe.

Binary format (version 1)
=========================

::

    magic      8 bytes   b"MRCHIDX1"
    toc_len    u32 LE    length of the table of contents
    toc        toc_len   canonical JSON (sorted keys, no spaces), see below
    tables     ...       for each file in TOC order: its chunk digests, 32 raw bytes each

The TOC::

    {"algorithm": "blake3", "pageChunks": 1024, "files": [
       {"path": "model.safetensors", "size": 4294975856, "digest": "sha256:...",
        "chunkSize": 4194304, "head": 7032, "chunks": 1025, "table": 33000,
        "pages": ["<blake3 hex of page 0>", ...]}, ...]}

* ``algorithm``: the one digest algorithm of the whole document, for every chunk
  digest and every page digest: ``"blake3"`` (BLAKE3-256, what modelreg writes) or
  ``"sha256"`` (what modelreg wrote before; still read and verified). Anything
  else is refused (:class:`~modelreg.errors.FormatError` naming it). BLAKE3 costs
  about a quarter of SHA-256's CPU per byte, and every lazily read byte is hashed
  once; the security is the same (128-bit collision resistance), and what covers
  the index does not change: the TOC digest and the index blob's digest in the
  manifest annotation, and each file's ``digest`` (its layer's), stay SHA-256.
* ``head``: a file is chunked in two regions, ``[0, head)`` and ``[head, size)``,
  each cut every ``chunkSize`` bytes from its own start. For safetensors and GGUF
  files ``head`` is the header length (the data section's offset): listing the
  tensors of a model then fetches only its headers, never a 4 MiB chunk of
  weights. Other files have ``head`` 0 (plain fixed-size chunks).
* ``table`` is the byte offset of the file's digest table inside the blob.
* Two levels, so that the index stays small to *read* even for a terabyte model:
  the table is cut in pages of ``pageChunks`` digests (32 KiB), and the TOC holds
  the digest (``algorithm``) of every page. A reader that fetched the TOC (verified against the
  manifest annotation) fetches only the pages it needs, each verified against
  the TOC. A 1 TB model at 4 MiB chunks has 262,144 chunks: an 8 MiB index,
  of which a reader needs a ~20 KiB TOC plus 32 KiB per 4 GiB region touched.
  Small indexes (under :data:`WHOLE_FETCH_MAX`) are fetched whole in one request.
* Chunk size: 4 MiB, doubled for files over 1 TiB so that no file has more than
  :data:`MAX_CHUNKS_PER_FILE` chunks. Recorded per file.

Parsing is strict: sizes, counts, offsets and digests are all checked, against
caps, before anything is allocated from them.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from modelreg._json import canonical_json, loads_strict
from modelreg.errors import FormatError, IntegrityError, InvalidInputError, SizeLimitError
from modelreg.model.digests import (
    CHUNK_ALGORITHMS,
    DEFAULT_CHUNK_ALGORITHM,
    ChunkGeometry,
    ChunkTable,
    chunk_hasher,
)
from modelreg.model.unpack import safe_relpath
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest

__all__ = [
    "ANN_CHUNK_INDEX",
    "ANN_TOC_DIGEST",
    "ANN_TOC_SIZE",
    "CHUNK_ALGORITHMS",
    "CHUNK_INDEX_ARTIFACT_TYPE",
    "CHUNK_INDEX_MEDIA_TYPE",
    "DEFAULT_CHUNK_ALGORITHM",
    "DEFAULT_CHUNK_SIZE",
    "MAGIC",
    "MAX_CHUNKS_PER_FILE",
    "MAX_INDEX_BYTES",
    "PAGE_CHUNKS",
    "WHOLE_FETCH_MAX",
    "ChunkIndex",
    "FileChunks",
    "build_chunk_index",
    "choose_chunk_size",
    "chunk_geometry",
    "chunk_hasher",
    "chunk_index_descriptor",
    "detect_head",
    "detect_head_in",
    "encode_chunk_index",
    "file_chunks_from_table",
    "hash_file_chunks",
    "parse_chunk_index",
    "parse_toc",
    "read_toc_length",
]

MAGIC: Final = b"MRCHIDX1"
_PREFIX: Final = struct.Struct("<8sI")
PREFIX_SIZE: Final = _PREFIX.size  # 12

CHUNK_INDEX_MEDIA_TYPE: Final = "application/vnd.modelreg.chunk-index.v1"
CHUNK_INDEX_ARTIFACT_TYPE: Final = "application/vnd.modelreg.chunk-index.v1"
ANN_CHUNK_INDEX: Final = "dev.modelreg.chunk-index"
ANN_TOC_DIGEST: Final = "dev.modelreg.chunk-index.toc.digest"
ANN_TOC_SIZE: Final = "dev.modelreg.chunk-index.toc.size"

DEFAULT_CHUNK_SIZE: Final = 4 * 1024 * 1024
MIN_CHUNK_SIZE: Final = 64 * 1024
MAX_CHUNK_SIZE: Final = 1024 * 1024 * 1024
MAX_CHUNKS_PER_FILE: Final = 1 << 18
PAGE_CHUNKS: Final = 1024
DIGEST_SIZE: Final = 32
MAX_TOC_BYTES: Final = 16 * 1024 * 1024
MAX_FILES: Final = 10_000
MAX_FILE_SIZE: Final = 1 << 50
MAX_INDEX_BYTES: Final = 256 * 1024 * 1024
WHOLE_FETCH_MAX: Final = 1024 * 1024
"""Indexes up to this size are fetched whole; larger ones by TOC and pages."""
MAX_HEAD: Final = 100_000_000 + 8
"""A head region never exceeds the largest header the format parsers accept."""

_HINT: Final = "the chunk index is corrupt or was not written by modelreg; re-push the model"


def choose_chunk_size(size: int, base: int = DEFAULT_CHUNK_SIZE) -> int:
    """``base``, doubled until a file of ``size`` bytes has at most MAX_CHUNKS_PER_FILE."""
    chunk = base
    while chunk < MAX_CHUNK_SIZE and -(-size // chunk) > MAX_CHUNKS_PER_FILE:
        chunk *= 2
    return chunk


def _check_chunk_size(chunk: int, where: str) -> None:
    if (
        not isinstance(chunk, int)
        or isinstance(chunk, bool)
        or chunk < MIN_CHUNK_SIZE
        or chunk > MAX_CHUNK_SIZE
        or chunk & (chunk - 1)
    ):
        raise FormatError(
            f"{where}: chunk size {chunk!r} is not a power of two between "
            f"{MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}",
            hint=_HINT,
        )


def count_chunks(size: int, head: int, chunk: int) -> int:
    return -(-head // chunk) + -(-(size - head) // chunk)


PageLoader = Callable[["FileChunks", int], bytes]
"""``loader(file, page)`` returns the verified raw digests of one page of a file's table."""


@dataclass(eq=False)
class FileChunks:
    """The chunk geometry and digests of one file.

    ``digests`` holds the whole table when it is known; otherwise ``page_digests``
    and a ``loader`` fetch pages on demand (each verified against its page digest
    by the loader's caller, :meth:`digest`). ``algorithm`` digests chunks and
    pages alike (the index document's; sha256 where a table is a whole-file digest,
    e.g. a small-file group's member); :meth:`hash_chunk` is the one way to use it.
    """

    path: str
    size: int
    digest: Digest
    chunk_size: int
    head: int = 0
    digests: bytes | None = None
    page_digests: tuple[bytes, ...] = ()
    table_offset: int = 0
    loader: PageLoader | None = field(default=None, repr=False)
    algorithm: str = "sha256"
    _pages: dict[int, bytes] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _hash: Callable[[bytes | bytearray | memoryview], bytes] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._hash = chunk_hasher(self.algorithm)

    def hash_chunk(self, data: bytes | bytearray | memoryview) -> bytes:
        """The digest of ``data`` with this file's algorithm (compare with :meth:`digest_of`)."""
        return self._hash(data)

    @property
    def count(self) -> int:
        return count_chunks(self.size, self.head, self.chunk_size)

    @property
    def head_chunks(self) -> int:
        return -(-self.head // self.chunk_size)

    def bounds(self, i: int) -> tuple[int, int]:
        """``(start, end)`` byte offsets of chunk ``i`` in the file."""
        if not 0 <= i < self.count:
            raise IndexError(f"chunk {i} out of range for {self.path!r} ({self.count} chunks)")
        c = self.chunk_size
        nh = self.head_chunks
        if i < nh:
            return i * c, min((i + 1) * c, self.head)
        j = i - nh
        return self.head + j * c, min(self.head + (j + 1) * c, self.size)

    def index_of(self, offset: int) -> int:
        """The chunk holding byte ``offset`` (``0 <= offset < size``)."""
        if offset < self.head:
            return offset // self.chunk_size
        return self.head_chunks + (offset - self.head) // self.chunk_size

    def span(self, offset: int, length: int) -> range:
        """Chunks covering ``[offset, offset + length)`` (clamped to the file)."""
        end = min(offset + length, self.size)
        if length <= 0 or offset >= end:
            return range(0)
        return range(self.index_of(offset), self.index_of(end - 1) + 1)

    def digest_of(self, i: int) -> bytes:
        """The raw 32-byte digest of chunk ``i`` (loading its page if needed)."""
        if self.digests is not None:
            return self.digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE]
        page, k = divmod(i, PAGE_CHUNKS)
        data = self._pages.get(page)
        if data is None:
            data = self._load_page(page)
        return data[k * DIGEST_SIZE : (k + 1) * DIGEST_SIZE]

    def page_range(self, page: int) -> tuple[int, int]:
        """``(offset, length)`` of a page inside the index blob."""
        first = page * PAGE_CHUNKS
        n = min(PAGE_CHUNKS, self.count - first)
        return self.table_offset + first * DIGEST_SIZE, n * DIGEST_SIZE

    def _load_page(self, page: int) -> bytes:
        if self.loader is None or not 0 <= page < len(self.page_digests):
            raise FormatError(f"chunk index page {page} of {self.path!r} is not available")
        with self._lock:
            data = self._pages.get(page)
            if data is not None:
                return data
            data = self.loader(self, page)
            _, length = self.page_range(page)
            if len(data) != length or self._hash(data) != self.page_digests[page]:
                raise IntegrityError(
                    f"page {page} of the chunk index of {self.path!r} does not match the "
                    "digest its table of contents gives",
                    hint="the registry serves corrupt or tampered bytes; nothing was used",
                )
            self._pages[page] = data
            return data

    def table(self) -> bytes:
        """The whole digest table (loads every missing page)."""
        if self.digests is not None:
            return self.digests
        for p in range(len(self.page_digests)):
            if p not in self._pages:
                self._load_page(p)
        return b"".join(self._pages[p] for p in range(len(self.page_digests)))


@dataclass(frozen=True)
class ChunkIndex:
    """A parsed chunk index: files by path, all digested with ``algorithm``."""

    files: Mapping[str, FileChunks]
    page_chunks: int = PAGE_CHUNKS
    algorithm: str = DEFAULT_CHUNK_ALGORITHM

    def get(self, path: str) -> FileChunks | None:
        return self.files.get(path)


# --------------------------------------------------------------------------- build


def detect_head(path: str | os.PathLike[str], size: int | None = None) -> int:
    """Header length of a safetensors or GGUF file (offset of its data section), else 0.

    Decided by content (the magic / length prefix), whatever the name. Any
    problem parsing the header gives 0: the file is then chunked plainly.
    """
    from modelreg.model.formats import FileSource

    try:
        real_size = os.stat(path).st_size if size is None else size
        if real_size < 8:
            return 0
        with FileSource(path) as src:
            return detect_head_in(src, real_size, os.fspath(path))
    except Exception:
        return 0


def detect_head_in(source: Any, size: int, name: str) -> int:
    """:func:`detect_head` over any ``read_at(offset, length)`` source of ``size`` bytes
    (e.g. the first bytes of a blob being streamed)."""
    from modelreg.model.formats import parse_gguf, parse_safetensors

    try:
        if size < 8:
            return 0
        first = source.read_at(0, 16)
        if first[:4] == b"GGUF":
            head = parse_gguf(source, name=name).header_size
        else:
            (n,) = struct.unpack_from("<Q", first, 0)
            if not 2 <= n <= 100_000_000 or 8 + n > size or first[8:9] != b"{":
                return 0
            head = parse_safetensors(source, name=name, initial_read=8).header_size
    except Exception:
        return 0
    if not 0 < head <= min(size, MAX_HEAD):
        return 0
    return int(head)


def chunk_geometry(path: str | os.PathLike[str], size: int) -> ChunkGeometry:
    """How the index cuts a file: :func:`choose_chunk_size`, head region by content.

    The same rule as :func:`hash_file_chunks`, so an index built during the
    digest pass of a push (``pack_directory(chunking=chunk_geometry)``) equals one
    built from the files afterwards.
    """
    return ChunkGeometry(choose_chunk_size(size), detect_head(path, size))


def file_chunks_from_table(path: str, digest: Digest, table: ChunkTable) -> FileChunks:
    """A :class:`FileChunks` from a table computed elsewhere (the digest pass)."""
    g = table.geometry
    fc = FileChunks(
        path=path,
        size=table.size,
        digest=digest,
        chunk_size=g.chunk_size,
        head=min(g.head, table.size),
        digests=table.digests,
        algorithm=g.algorithm,
    )
    if len(table.digests) != fc.count * DIGEST_SIZE:
        raise InvalidInputError(f"chunk table of {path!r} has the wrong length")
    return fc


_POOL_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None


def _hash_pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            workers = max(1, min(4, (os.cpu_count() or 2)))
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunkhash")
        return _POOL


def hash_file_chunks(
    path: str | os.PathLike[str],
    name: str | None = None,
    *,
    chunk_size: int | None = None,
    head: int | None = None,
    on_bytes: Callable[[int], None] | None = None,
    algorithm: str = DEFAULT_CHUNK_ALGORITHM,
) -> FileChunks:
    """Read a file once and return its whole-file SHA-256, size and chunk digests
    (``algorithm``).

    The whole-file digest is computed in the calling thread while the chunk
    digests are computed by a small thread pool (hashlib and blake3 release the
    GIL), so on two cores this costs about one hashing pass. The packer can use the result's
    ``digest`` and ``size`` for the layer descriptor instead of hashing again.
    """
    st = os.stat(path)
    size = st.st_size
    if size > MAX_FILE_SIZE:
        raise InvalidInputError(f"{os.fspath(path)!r} is too large to index ({size} bytes)")
    chunk = chunk_size or choose_chunk_size(size)
    if chunk_size is not None and (chunk < MIN_CHUNK_SIZE or chunk & (chunk - 1)):
        raise InvalidInputError(
            f"chunk size {chunk} must be a power of two of at least {MIN_CHUNK_SIZE}"
        )
    h = detect_head(path, size) if head is None else head
    if not 0 <= h <= size:
        raise InvalidInputError(f"head {h} is outside the file {os.fspath(path)!r}")
    geometry = FileChunks(
        path=name or os.fspath(path),
        size=size,
        digest=Digest("sha256", "0" * 64),
        chunk_size=chunk,
        head=h,
        algorithm=algorithm,
    )
    whole = hashlib.sha256()
    pool = _hash_pool()
    pending: deque[Future[bytes]] = deque()
    out = bytearray()
    max_pending = 2 * pool._max_workers  # bound memory: a few chunks in flight
    total = 0
    with open(path, "rb", buffering=0) as f:
        for i in range(geometry.count):
            start, end = geometry.bounds(i)
            buf = bytearray(end - start)
            view = memoryview(buf)
            got = 0
            while got < len(buf):
                n = f.readinto(view[got:])
                if not n:
                    raise InvalidInputError(
                        f"{os.fspath(path)!r} shrank while it was being indexed",
                        hint="do not change model files while packing them",
                    )
                got += n
            whole.update(buf)
            total += len(buf)
            pending.append(pool.submit(geometry.hash_chunk, buf))
            while len(pending) > max_pending:
                out += pending.popleft().result()
            if on_bytes is not None:
                on_bytes(len(buf))
        if f.read(1):
            raise InvalidInputError(
                f"{os.fspath(path)!r} grew while it was being indexed",
                hint="do not change model files while packing them",
            )
    while pending:
        out += pending.popleft().result()
    geometry.digests = bytes(out)
    geometry.digest = Digest("sha256", whole.hexdigest())
    return geometry


def encode_chunk_index(files: Sequence[FileChunks]) -> bytes:
    """Serialise file chunk tables (in the given order) into the binary format.

    The document's algorithm is the files' (all must agree; no files: the default).
    """
    algorithms = {fc.algorithm for fc in files}
    if len(algorithms) > 1:
        raise InvalidInputError(
            f"chunk tables of one index use different algorithms: {sorted(algorithms)}"
        )
    algorithm = algorithms.pop() if algorithms else DEFAULT_CHUNK_ALGORITHM
    seen: set[str] = set()
    tables: list[bytes] = []
    entries: list[FileChunks] = []
    for fc in files:
        if fc.path in seen:
            raise InvalidInputError(f"file {fc.path!r} appears twice in the chunk index")
        seen.add(fc.path)
        table = fc.table()
        if len(table) != fc.count * DIGEST_SIZE:
            raise InvalidInputError(f"chunk table of {fc.path!r} has the wrong length")
        tables.append(table)
        entries.append(fc)
    # The TOC holds table offsets, which depend on the TOC's length: iterate to a fixpoint.
    offsets = [0] * len(entries)
    toc = b""
    for _ in range(8):
        docs = []
        position = PREFIX_SIZE + len(toc)
        for k, (fc, table) in enumerate(zip(entries, tables, strict=True)):
            offsets[k] = position
            position += len(table)
            fc_entry = _toc_entry(fc, table, offsets[k])
            docs.append(fc_entry)
        new_toc = canonical_json(
            {"algorithm": algorithm, "files": docs, "pageChunks": PAGE_CHUNKS}, sort_keys=True
        )
        if len(new_toc) == len(toc):
            toc = new_toc
            break
        toc = new_toc
    else:  # pragma: no cover - lengths converge within two rounds
        raise AssertionError("chunk index TOC did not converge")
    blob = _PREFIX.pack(MAGIC, len(toc)) + toc + b"".join(tables)
    return blob


def _toc_entry(fc: FileChunks, table: bytes, offset: int) -> dict[str, Any]:
    step = PAGE_CHUNKS * DIGEST_SIZE
    return {
        "chunkSize": fc.chunk_size,
        "chunks": fc.count,
        "digest": str(fc.digest),
        "head": fc.head,
        "pages": [fc.hash_chunk(table[p : p + step]).hex() for p in range(0, len(table), step)],
        "path": fc.path,
        "size": fc.size,
        "table": offset,
    }


def build_chunk_index(
    files: Sequence[tuple[str, Path]],
    *,
    chunk_size: int | None = None,
    hasher: Callable[[str, Path], FileChunks] | None = None,
    algorithm: str = DEFAULT_CHUNK_ALGORITHM,
) -> bytes:
    """Index the files ``(relative path, real path)``: one read pass per file.

    ``hasher`` replaces :func:`hash_file_chunks` (e.g. a cached variant).
    """
    tables = []
    for rel, real in files:
        rel_norm = safe_relpath(rel, "chunk index path")
        if hasher is not None:
            fc = hasher(rel_norm, real)
        else:
            fc = hash_file_chunks(real, rel_norm, chunk_size=chunk_size, algorithm=algorithm)
        tables.append(fc)
    return encode_chunk_index(tables)


def chunk_index_descriptor(blob: bytes) -> Descriptor:
    """The descriptor naming an index blob, with its TOC digest and size annotated."""
    toc_end = PREFIX_SIZE + read_toc_length(blob[:PREFIX_SIZE], len(blob))
    return Descriptor(
        media_type=CHUNK_INDEX_MEDIA_TYPE,
        digest=Digest.from_bytes(blob),
        size=len(blob),
        annotations={
            ANN_TOC_DIGEST: str(Digest.from_bytes(blob[:toc_end])),
            ANN_TOC_SIZE: str(toc_end),
        },
    )


# --------------------------------------------------------------------------- parse


def read_toc_length(prefix: bytes, blob_size: int) -> int:
    """Check the 12-byte prefix of an index blob; return the TOC length."""
    if len(prefix) < PREFIX_SIZE:
        raise FormatError("chunk index: shorter than its 12-byte prefix", hint=_HINT)
    magic, toc_len = _PREFIX.unpack_from(prefix, 0)
    if magic != MAGIC:
        raise FormatError(f"chunk index: bad magic {magic!r}, expected {MAGIC!r}", hint=_HINT)
    if toc_len > MAX_TOC_BYTES:
        raise SizeLimitError(
            f"chunk index: table of contents of {toc_len} bytes is over the "
            f"{MAX_TOC_BYTES}-byte cap",
            hint=_HINT,
        )
    if PREFIX_SIZE + toc_len > blob_size:
        raise FormatError("chunk index: table of contents runs past the end", hint=_HINT)
    return int(toc_len)


def _uint(obj: Mapping[str, Any], key: str, where: str, maximum: int) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise FormatError(f"{where}: {key!r} must be an integer in [0, {maximum}]", hint=_HINT)
    return value


def parse_toc(toc_bytes: bytes, blob_size: int) -> list[FileChunks]:
    """Parse and validate the table of contents (``blob[12 : 12 + toc_len]``).

    Returns file entries without digest tables (``page_digests`` set); table
    offsets are checked to tile ``[12 + toc_len, blob_size)`` exactly.
    """
    doc = loads_strict(toc_bytes, what="chunk index: table of contents", hint=_HINT)
    if not isinstance(doc, dict):
        raise FormatError("chunk index: table of contents is not a JSON object", hint=_HINT)
    algorithm = doc.get("algorithm")
    if not isinstance(algorithm, str) or algorithm not in CHUNK_ALGORITHMS:
        raise FormatError(
            f"chunk index: algorithm {algorithm!r} is not supported",
            hint=f"this modelreg reads {' and '.join(CHUNK_ALGORITHMS)} chunk indexes; "
            "upgrade modelreg",
        )
    if doc.get("pageChunks") != PAGE_CHUNKS:
        raise FormatError(f"chunk index: pageChunks must be {PAGE_CHUNKS}", hint=_HINT)
    raw_files = doc.get("files")
    if not isinstance(raw_files, list):
        raise FormatError("chunk index: 'files' is not a list", hint=_HINT)
    if len(raw_files) > MAX_FILES:
        raise SizeLimitError(
            f"chunk index lists {len(raw_files)} files, over the cap of {MAX_FILES}", hint=_HINT
        )
    position = PREFIX_SIZE + len(toc_bytes)
    seen: set[str] = set()
    out: list[FileChunks] = []
    for k, entry in enumerate(raw_files):
        where = f"chunk index file #{k}"
        if not isinstance(entry, dict):
            raise FormatError(f"{where} is not an object", hint=_HINT)
        path = entry.get("path")
        if not isinstance(path, str):
            raise FormatError(f"{where}: 'path' is not a string", hint=_HINT)
        path = safe_relpath(path, f"{where} path")
        if path in seen:
            raise FormatError(f"chunk index: file {path!r} appears twice", hint=_HINT)
        seen.add(path)
        size = _uint(entry, "size", where, MAX_FILE_SIZE)
        chunk = entry.get("chunkSize")
        _check_chunk_size(chunk, where)  # type: ignore[arg-type]
        assert isinstance(chunk, int)
        head = _uint(entry, "head", where, min(size, MAX_HEAD))
        count = count_chunks(size, head, chunk)
        if count > MAX_CHUNKS_PER_FILE * 4:
            raise SizeLimitError(f"{where}: {count} chunks is over the cap", hint=_HINT)
        if _uint(entry, "chunks", where, MAX_CHUNKS_PER_FILE * 4) != count:
            raise FormatError(f"{where}: 'chunks' disagrees with size/head/chunkSize", hint=_HINT)
        raw_digest = entry.get("digest")
        try:
            digest = Digest.parse(raw_digest if isinstance(raw_digest, str) else "")
        except InvalidInputError as exc:
            raise FormatError(f"{where}: {exc.message}", hint=_HINT) from None
        table = _uint(entry, "table", where, MAX_INDEX_BYTES)
        if table != position:
            raise FormatError(
                f"{where}: table offset {table}, expected {position} (tables are contiguous)",
                hint=_HINT,
            )
        position += count * DIGEST_SIZE
        pages = entry.get("pages")
        n_pages = -(-count // PAGE_CHUNKS)
        if not isinstance(pages, list) or len(pages) != n_pages:
            raise FormatError(f"{where}: 'pages' must list {n_pages} page digests", hint=_HINT)
        page_digests = []
        for p in pages:
            if (
                not isinstance(p, str)
                or len(p) != 64
                or any(c not in "0123456789abcdef" for c in p)
            ):
                raise FormatError(f"{where}: page digest {p!r} is not {algorithm} hex", hint=_HINT)
            page_digests.append(bytes.fromhex(p))
        out.append(
            FileChunks(
                path=path,
                size=size,
                digest=digest,
                chunk_size=chunk,
                head=head,
                page_digests=tuple(page_digests),
                table_offset=table,
                algorithm=algorithm,
            )
        )
    if position != blob_size:
        raise FormatError(
            f"chunk index: tables end at {position}, the blob is {blob_size} bytes", hint=_HINT
        )
    return out


def parse_chunk_index(blob: bytes) -> ChunkIndex:
    """Parse a whole index blob (already verified against its descriptor)."""
    if len(blob) > MAX_INDEX_BYTES:
        raise SizeLimitError(
            f"chunk index of {len(blob)} bytes is over the {MAX_INDEX_BYTES}-byte cap", hint=_HINT
        )
    toc_len = read_toc_length(blob[:PREFIX_SIZE], len(blob))
    files = parse_toc(blob[PREFIX_SIZE : PREFIX_SIZE + toc_len], len(blob))
    step = PAGE_CHUNKS * DIGEST_SIZE
    for fc in files:
        table = blob[fc.table_offset : fc.table_offset + fc.count * DIGEST_SIZE]
        for p, expected in enumerate(fc.page_digests):
            if fc.hash_chunk(table[p * step : (p + 1) * step]) != expected:
                raise FormatError(
                    f"chunk index: page {p} of {fc.path!r} does not match its TOC digest",
                    hint=_HINT,
                )
        fc.digests = table
    return ChunkIndex({fc.path: fc for fc in files}, algorithm=_algorithm_of(files))


def index_from_toc(files: Iterable[FileChunks], loader: PageLoader) -> ChunkIndex:
    """A ChunkIndex whose tables are fetched page by page through ``loader``."""
    out = {}
    for fc in files:
        fc.loader = loader
        out[fc.path] = fc
    return ChunkIndex(out, algorithm=_algorithm_of(out.values()))


def _algorithm_of(files: Iterable[FileChunks]) -> str:
    """The algorithm of parsed files (one per document: :func:`parse_toc` sets it)."""
    return next((fc.algorithm for fc in files), DEFAULT_CHUNK_ALGORITHM)
