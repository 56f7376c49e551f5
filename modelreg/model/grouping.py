"""Small files packed together: which files share a tar layer, and the tar itself.

Why
===

One raw layer per file costs a HEAD, a POST and a PUT per file on push, a GET
per file on pull, a descriptor per file in the manifest, and the manifest stops
at :data:`~modelreg.oci.manifest.MAX_LAYERS` entries long before a
tokenizer-heavy or pipeline-heavy model runs out of files. Files below a size
threshold therefore travel as *groups*: deterministic, uncompressed tar layers
(``application/vnd.cncf.model.<role>.v1.tar``, FORMATS.md §2) whose members are
paths from the model root, exactly as ``pull`` already extracts ModelPack tar
layers, under every rule of :mod:`modelreg.model.archive`. Big files keep a raw
layer each (ranged reads, reflinks, model-transparency resources).

The rule (:func:`plan_groups`)
==============================

1. A file is *small* when its size is below ``threshold``.
2. Small files are bucketed by (role, top directory): one role per layer (the
   media type carries it), and a change in ``tokenizer/`` never touches the
   layers of ``unet/``. Files at the model root form the bucket ``""``.
3. A bucket with fewer than ``min_files`` small files keeps raw layers: a handful
   of config files gain nothing from a tar, and every peer reads raw layers
   best. (Crossing that count regroups the bucket once; all of it is small.)
4. Within a bucket, in path order, a *content-defined boundary* follows file
   ``f`` when ``H(path) < size(f) * 2**64 / target`` (``H`` = the first 8 bytes of
   SHA-256 of the path, big-endian): every byte is a cut with probability
   ``1/target``, so groups average ``target`` bytes whatever the file sizes.
   Whether a file ends a group depends on its own name and size only, never on
   its neighbours or its content: changing one file's bytes changes its group's
   digest and nothing else (sizes equal); changing its size or adding/removing a
   file moves at most the one boundary it owns, so at most two groups change.
   This is the idea ``--split`` uses for parts (boundaries from what the data
   is, not from positions), applied to a list of files.
5. A group is also cut once it reaches ``2 * target`` bytes or
   :data:`MAX_GROUP_MEMBERS` members (a run of names that never draws a cut);
   such forced cuts can move with an insertion up to the next natural boundary.
   ``2 * target`` bounds what one changed file re-sends (8 MiB of group by
   default: 1.2% of the 20,000-file bench model, bench/RESULTS.md) for about
   15% more layers than ``4 * target`` (the mean group is ``(1 - e**-2) *
   target``: 13.5% of runs reach the cap).

Only names, sizes and roles decide groups: the layer count is known after a
``stat`` of every file, before anything is hashed (:func:`estimate_manifest`).

The tar (:func:`build_layout`)
==============================

Members in path order; regular files only (directories are implied; the
extractor creates parents); ``mtime`` 0, ``uid``/``gid`` 0, empty ``uname``/
``gname``, mode 0644 or 0755 from the owner-exec bit; POSIX pax format as
Python writes it (plain USTAR headers when a name fits, a pax ``path`` record
when it does not); the archive ends with two zero blocks, no record padding.
Headers depend only on (path, size, mode), so the layout of every member — the
offset of its data inside the layer — is known before any file is read, and the
same directory gives the same layer digests on any machine, whatever its
mtimes, owners or umask.

The layer is never written to disk: :class:`GroupStream` serves it from the
files (headers from memory, data from each file, zero padding), so a push
reads each small file once to hash it (the file's own digest and the layer's
in one pass, :func:`hash_group`) and once to send it.

The member table (:data:`ANN_GROUP_FILES`)
==========================================

Each group layer's descriptor carries ``dev.modelreg.group.files``: canonical
JSON, one row per member in path order, ``[path, offset, size, sha256 hex,
mode]`` (``offset``: where the member's data starts in the layer). The manifest
digest covers it, so readers learn every grouped file's size, digest and place
without reading the layer: the lazy reader fetches exactly one member's bytes
by Range and checks them against the member's digest before returning them;
model-level signatures list one resource per file. Other tools ignore the
annotation and read the tar as it is. :func:`parse_member_table` checks a
table from an artifact (safe paths in strictly increasing order, offsets on
tar blocks, strictly increasing, after a header and inside the layer, no
overlap): it locates bytes, it never vouches for them — a row that points at
another member's bytes, or anywhere else, fails that member's digest check.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

from modelreg.errors import FormatError, InvalidInputError, SizeLimitError
from modelreg.model.paths import safe_relpath
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.units import parse_size

__all__ = [
    "ANN_GROUP_FILES",
    "DEFAULT_GROUP_TARGET",
    "DEFAULT_MIN_FILES",
    "DEFAULT_THRESHOLD",
    "MANIFEST_LIMIT",
    "MAX_GROUP_MEMBERS",
    "OFF",
    "GroupPolicy",
    "GroupStream",
    "Member",
    "TableRow",
    "build_layout",
    "check_manifest_estimate",
    "estimate_manifest",
    "group_rows",
    "grouping_policy",
    "hash_group",
    "member_table",
    "parse_member_table",
    "plan_groups",
    "top_dir",
]

DEFAULT_THRESHOLD: Final = 1024 * 1024
"""Files below 1 MiB are grouped (bench/RESULTS.md, 2026-12-02: many-file models)."""
DEFAULT_GROUP_TARGET: Final = 4 * 1024 * 1024
"""Average group size: a change to one small file re-sends about this much."""
DEFAULT_MIN_FILES: Final = 16
"""A (role, directory) bucket with fewer small files keeps raw layers."""
MAX_GROUP_MEMBERS: Final = 10_000
"""Well under the archive reader's member limit (``archive.MAX_MEMBERS``)."""
MANIFEST_LIMIT: Final = 4 * 1024 * 1024
"""The manifest size every registry is expected to accept, and Distribution's limit.

The distribution-spec says clients and registries "SHOULD expect to be able to
support manifest pushes of at least 4 megabytes" and that a registry over its
limit answers 413 (opencontainers/distribution-spec#293); CNCF Distribution
(``registry:2``, which Harbor runs) refuses bodies over 4 MiB
(distribution/distribution#2340), and regclient refuses to push more
(regclient/regclient#512). ECR's service quotas list layer sizes and parts but no
manifest size, and GHCR documents none: 4 MiB is what is known to travel
everywhere, so it is the limit here.
"""
ANN_GROUP_FILES: Final = "dev.modelreg.group.files"
"""The member table of a group layer (see the module notes)."""
_BLOCK: Final = 512
_END: Final = bytes(2 * _BLOCK)
_CUT_SCALE: Final = 1 << 64


@dataclass(frozen=True)
class GroupPolicy:
    """When and how small files are grouped (``threshold`` 0: never)."""

    threshold: int = DEFAULT_THRESHOLD
    target: int = DEFAULT_GROUP_TARGET
    min_files: int = DEFAULT_MIN_FILES

    def __post_init__(self) -> None:
        if self.threshold < 0 or self.target <= 0 or self.min_files < 2:
            raise InvalidInputError(
                f"invalid small-file grouping: threshold {self.threshold}, target "
                f"{self.target}, min_files {self.min_files}",
                hint="give a threshold >= 0 (0 turns grouping off) and a group target > 0",
            )

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    def is_small(self, size: int) -> bool:
        return size < self.threshold


OFF: Final = GroupPolicy(threshold=0)


def grouping_policy(pack_small: int | str | bool | None) -> GroupPolicy | None:
    """The policy a ``pack_small`` argument asks for: None (what ``modelreg.toml``
    says, else the defaults), False or 0 (:data:`OFF`), True (the defaults), or a
    threshold in bytes or with a unit (``"4MiB"``)."""
    if pack_small is None:
        return None
    if isinstance(pack_small, bool):
        return GroupPolicy() if pack_small else OFF
    return GroupPolicy(threshold=parse_size(pack_small, "small-file threshold"))


def top_dir(path: str) -> str:
    """The first component of a path with a directory, else ``""`` (the model root)."""
    return _top_dir(path)


def _top_dir(path: str) -> str:
    head, sep, _ = path.partition("/")
    return head if sep else ""


def _cuts_after(path: str, size: int, target: int) -> bool:
    h = int.from_bytes(hashlib.sha256(path.encode("utf-8", "surrogateescape")).digest()[:8], "big")
    return h < min(size, target) * (_CUT_SCALE // target)


def plan_groups(files: Sequence[tuple[str, int, str]], policy: GroupPolicy) -> list[list[int]]:
    """Indices of ``files`` (path, size, role) that share a layer, group by group.

    Files not in any returned group keep a raw layer. ``files`` need not be
    sorted; groups list their members in path order and come in (role, directory,
    path) order. Linear in the number of files plus one sort.
    """
    if not policy.enabled:
        return []
    buckets: dict[tuple[str, str], list[int]] = {}
    for i, (path, size, role) in enumerate(files):
        if policy.is_small(size):
            buckets.setdefault((role, _top_dir(path)), []).append(i)
    groups: list[list[int]] = []
    cap = 2 * policy.target
    for key in sorted(buckets):
        members = sorted(buckets[key], key=lambda i: files[i][0])
        if len(members) < policy.min_files:
            continue
        current: list[int] = []
        total = 0
        for i in members:
            path, size, _ = files[i]
            current.append(i)
            total += size
            if (
                _cuts_after(path, size, policy.target)
                or total >= cap
                or len(current) >= MAX_GROUP_MEMBERS
            ):
                groups.append(current)
                current, total = [], 0
        if current:
            groups.append(current)
    return groups


# ------------------------------------------------------------------ manifest limits

_RAW_LAYER_BYTES: Final = 520
"""A raw layer's descriptor in the manifest, without its path (three times there)."""
_GROUP_LAYER_BYTES: Final = 160
_FIXED_BYTES: Final = 2048


_TABLE_ROW_BYTES: Final = 110
"""A member table row in the manifest, without its path: a JSON-escaped hex digest,
offset, size, mode and punctuation."""


def estimate_manifest(
    raw_paths: Sequence[str], groups: int, parts: int = 0, grouped_paths: Sequence[str] = ()
) -> int:
    """Bytes of the manifest (and its config's diffIds) for these layers, a little over."""
    paths = sum(3 * len(p.encode()) + _RAW_LAYER_BYTES for p in raw_paths)
    table = sum(len(p.encode()) + _TABLE_ROW_BYTES for p in grouped_paths)
    # every layer also puts its digest into the config's diffIds (~75 bytes)
    return (
        _FIXED_BYTES
        + paths
        + table
        + (groups + parts) * _GROUP_LAYER_BYTES
        + 75 * (len(raw_paths) + groups + parts)
    )


def check_manifest_estimate(
    layers: int, manifest_bytes: int, max_layers: int, grouping: GroupPolicy
) -> None:
    """Refuse a model whose manifest would exceed what registries accept, before hashing."""
    fix = (
        "raise the small-file threshold (push --pack-small 4MiB, or [pack] "
        "small_file_threshold in modelreg.toml)"
        if grouping.enabled
        else "pack small files into tar layers (push --pack-small 1MiB, or drop --no-pack-small)"
    )
    if layers > max_layers:
        raise SizeLimitError(
            f"the model would have {layers} layers, over the {max_layers} modelreg writes "
            "in one manifest (nothing was hashed or sent)",
            hint=f"{fix}, or use a larger --part-size with --split",
        )
    if manifest_bytes > MANIFEST_LIMIT:
        raise SizeLimitError(
            f"the manifest would be about {manifest_bytes // 1024} KiB, over the 4 MiB "
            "registries accept (Distribution, Harbor; nothing was hashed or sent)",
            hint=fix,
        )


# ---------------------------------------------------------------------------- tar


@dataclass(frozen=True, slots=True)
class Member:
    """One file inside a group layer."""

    path: str
    source: Path
    size: int
    mode: int
    header_size: int
    """Bytes of its tar header block(s), before its data."""
    offset: int
    """Where its data starts in the layer."""

    @property
    def header(self) -> bytes:
        """The tar header block(s) before its data: built again on each use (headers depend
        on path, size and mode only), so 20,000 members do not keep 10 MB of them."""
        return _header(self.path, self.size, self.mode)

    @property
    def padding(self) -> int:
        return -self.size % _BLOCK


def _header(path: str, size: int, mode: int) -> bytes:
    info = tarfile.TarInfo(path)
    info.size = size
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def build_layout(entries: Sequence[tuple[str, Path, int, bool]]) -> tuple[tuple[Member, ...], int]:
    """Members (path, file, size, executable?) laid out in path order; and the tar's size."""
    out: list[Member] = []
    offset = 0
    for path, source, size, executable in sorted(entries, key=lambda e: e[0]):
        mode = 0o755 if executable else 0o644
        header = _header(path, size, mode)
        offset += len(header)
        out.append(Member(path, source, size, mode, len(header), offset))
        offset += size + (-size % _BLOCK)
    return tuple(out), offset + len(_END)


class GroupStream(io.RawIOBase):
    """The bytes of a group layer from ``start``, assembled from headers and files."""

    def __init__(self, members: Sequence[Member], size: int, start: int = 0) -> None:
        super().__init__()
        # (start, length, what): a member's header is built when the stream reaches it
        self._segments: list[tuple[int, int, bytes | Member | tuple[Member]]] = []
        pos = 0
        for m in members:
            self._segments.append((pos, m.header_size, (m,)))
            pos += m.header_size
            self._segments.append((pos, m.size, m))
            pos += m.size
            if m.padding:
                self._segments.append((pos, m.padding, bytes(m.padding)))
                pos += m.padding
        self._segments.append((pos, len(_END), _END))
        self._size = size
        self._pos = start
        self._index = 0
        self._file: io.BufferedReader | None = None
        self._file_for = -1

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        while self._index < len(self._segments):
            begin, length, what = self._segments[self._index]
            if self._pos >= begin + length:
                self._index += 1
                continue
            inner = self._pos - begin
            n = min(len(view), length - inner)
            if n <= 0:
                return 0
            if isinstance(what, tuple):
                header = what[0].header
                self._segments[self._index] = (begin, length, header)
                what = header
            if isinstance(what, bytes):
                view[:n] = what[inner : inner + n]
            else:
                n = self._read_member(what, inner, view[:n])
            self._pos += n
            return n
        return 0

    def _read_member(self, member: Member, inner: int, view: memoryview) -> int:
        if self._file_for != self._index:
            self._close_file()
            self._file = open(member.source, "rb")  # noqa: SIM115 - closed in _close_file
            self._file_for = self._index
        assert self._file is not None
        self._file.seek(inner)
        n = self._file.readinto(view) or 0
        if n == 0:
            # shorter than when it was laid out: the verifying reader reports the change
            raise InvalidInputError(
                f"{member.path!r} is shorter than when it was packed",
                hint="push again once nothing writes to the model directory",
            )
        return n

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._file_for = -1

    def close(self) -> None:
        try:
            self._close_file()
        finally:
            super().close()


def hash_group(
    members: Sequence[Member],
    on_file: Callable[[Member, Digest], None],
    block: int = 1024 * 1024,
) -> Digest:
    """The layer's digest, reading each member once; ``on_file`` gets each file's digest."""
    layer = hashlib.sha256()
    for m in members:
        layer.update(m.header)
        h = hashlib.sha256()
        left = m.size
        try:
            with open(m.source, "rb") as f:
                while left > 0:
                    data = f.read(min(block, left))
                    if not data:
                        break
                    h.update(data)
                    layer.update(data)
                    left -= len(data)
                extra = f.read(1)
        except OSError as exc:
            raise InvalidInputError(
                f"cannot read {m.path!r}: {exc.strerror or exc}",
                hint="check that the file is still there and readable",
            ) from exc
        if left or extra:
            raise InvalidInputError(
                f"{m.path!r} changed size while it was being packed",
                hint="push again once nothing writes to the model directory",
            )
        layer.update(bytes(m.padding))
        on_file(m, Digest("sha256", h.hexdigest()))
    layer.update(_END)
    return Digest("sha256", layer.hexdigest())


# --------------------------------------------------------------------- member table

_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
_EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()
_MODES: Final = (0o644, 0o755)


class TableRow(NamedTuple):
    """One member as a group's table describes it. A named tuple, not a frozen
    dataclass: as immutable, and built three times faster, which shows when a listing
    parses the tables of 20,000 files."""

    path: str
    offset: int
    """Where its data starts in the layer."""
    size: int
    sha256: str
    """Its digest's hex (checked); :attr:`digest` builds the Digest only when asked: a
    listing of 20,000 files need not build 20,000 of them."""
    mode: int

    @property
    def digest(self) -> Digest:
        return Digest("sha256", self.sha256)


def member_table(members: Sequence[Member], digests: Sequence[Digest]) -> str:
    """The :data:`ANN_GROUP_FILES` value for ``members`` (in layer order) and their digests."""
    rows = [
        [m.path, m.offset, m.size, d.hex, m.mode] for m, d in zip(members, digests, strict=True)
    ]
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":"))


def group_rows(layer: Descriptor) -> tuple[TableRow, ...] | None:
    """The members of a small-file group layer: an uncompressed ModelPack tar layer
    carrying a member table (checked, :func:`parse_member_table`); else None.

    Tables on other layers are ignored: offsets are offsets in the tar itself, and only
    ModelPack tar layers are extracted at the model root, where the rows name files."""
    if ANN_GROUP_FILES not in layer.annotations:
        return None
    media_type = layer.media_type
    if not (media_type.startswith(mt.MODEL_LAYER_PREFIX) and media_type.endswith(".v1.tar")):
        return None
    return parse_member_table(layer)


def parse_member_table(layer: Descriptor) -> tuple[TableRow, ...] | None:
    """The member table of a group layer from an artifact, checked; None when it has none.

    Raises :class:`~modelreg.errors.FormatError` (or ``UnsafeContentError`` for a path)
    when the table is malformed: the layer is then refused, never half-read.
    """
    raw = layer.annotations.get(ANN_GROUP_FILES)
    if raw is None:
        return None
    where = f"the member table of layer {layer.digest.short}"
    try:
        rows = json.loads(raw)
    except ValueError as exc:
        raise FormatError(f"{where} is not JSON: {exc}") from exc
    if not isinstance(rows, list) or not 0 < len(rows) <= MAX_GROUP_MEMBERS:
        raise FormatError(f"{where} must be a list of 1 to {MAX_GROUP_MEMBERS} rows")
    out: list[TableRow] = []
    what = f"member path in {where}"
    data_end = 0  # the first byte after the previous member's data and padding
    limit = layer.size - len(_END)
    for row in rows:
        if not isinstance(row, list) or len(row) != 5:
            raise FormatError(f"{where}: a row is not [path, offset, size, digest, mode]")
        raw_path, offset, size, hex_digest, mode = row
        # exact types: a JSON true is a Python bool, which isinstance takes for an int
        if not (
            type(raw_path) is str
            and type(offset) is int
            and type(size) is int
            and type(mode) is int
        ):
            raise FormatError(f"{where}: a row is not [path, offset, size, digest, mode]")
        path = safe_relpath(raw_path, what)
        if out and path <= out[-1].path:
            raise FormatError(f"{where}: {path!r} is out of order or listed twice")
        if not isinstance(hex_digest, str) or not _SHA256_HEX.fullmatch(hex_digest):
            raise FormatError(f"{where}: {path!r} has no sha256 digest")
        if size == 0 and hex_digest != _EMPTY_SHA256:
            raise FormatError(f"{where}: {path!r} is empty but its digest is not")
        if mode not in _MODES:
            raise FormatError(f"{where}: {path!r} has mode {mode:o}, not 644 or 755")
        if offset % _BLOCK or offset < data_end + _BLOCK or size < 0 or offset + size > limit:
            raise FormatError(
                f"{where}: {path!r} at offset {offset} ({size} bytes) does not follow a tar "
                f"header inside the layer ({layer.size} bytes) after the previous member"
            )
        data_end = offset + size + (-size % _BLOCK)
        out.append(TableRow(path, offset, size, hex_digest, mode))
    return tuple(out)
