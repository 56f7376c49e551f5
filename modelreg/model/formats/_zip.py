"""Read a zip file's central directory through a RangeSource, without extracting.

Enough of APPNOTE.TXT for listing members (ZIP64 included) and for reading the
first bytes of one member (stored, or deflated with a bounded output).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Final

from modelreg.errors import FormatError, SizeLimitError

from ._base import RangeSource, read_exact

__all__ = ["ZipEntry", "member_prefix", "read_zip_directory"]

_EOCD: Final = b"PK\x05\x06"
_EOCD64_LOCATOR: Final = b"PK\x06\x07"
_EOCD64: Final = b"PK\x06\x06"
_CDH: Final = b"PK\x01\x02"
_LFH: Final = b"PK\x03\x04"
_EOCD_SIZE: Final = 22
_MAX_COMMENT: Final = 0xFFFF

DEFAULT_MAX_DIRECTORY: Final = 32 * 1024 * 1024
DEFAULT_MAX_ENTRIES: Final = 1 << 18

_HINT: Final = "the zip archive is truncated or corrupt; re-create or re-download it"


@dataclass(frozen=True, slots=True)
class ZipEntry:
    name: str
    method: int
    flags: int
    compressed_size: int
    uncompressed_size: int
    header_offset: int


def read_zip_directory(
    source: RangeSource,
    *,
    name: str,
    max_directory: int = DEFAULT_MAX_DIRECTORY,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> tuple[ZipEntry, ...]:
    """List the members of a zip archive (one request for the tail, one for the
    directory unless the tail already holds it)."""
    size = source.size
    if size < _EOCD_SIZE:
        raise FormatError(f"{name}: {size} bytes is too short for a zip archive", hint=_HINT)
    tail_start = max(0, size - (_EOCD_SIZE + _MAX_COMMENT))
    tail = read_exact(source, tail_start, size - tail_start, name=name, what="zip trailer")
    idx = len(tail)
    while True:
        idx = tail.rfind(_EOCD, 0, idx)
        if idx < 0:
            raise FormatError(f"{name}: no zip end-of-central-directory record", hint=_HINT)
        if len(tail) - idx >= _EOCD_SIZE:
            comment_len = struct.unpack_from("<H", tail, idx + 20)[0]
            if idx + _EOCD_SIZE + comment_len <= len(tail):
                break
    (_, _, _, total, cd_size, cd_offset, _) = struct.unpack_from("<HHHHIIH", tail, idx + 4)
    eocd_pos = tail_start + idx
    dir_end = eocd_pos
    if total == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        loc = idx - 20
        if loc < 0 or tail[loc : loc + 4] != _EOCD64_LOCATOR:
            raise FormatError(f"{name}: ZIP64 archive without its locator record", hint=_HINT)
        (eocd64_pos,) = struct.unpack_from("<Q", tail, loc + 8)
        rec = read_exact(source, eocd64_pos, 56, name=name, what="ZIP64 end record")
        if rec[:4] != _EOCD64:
            raise FormatError(f"{name}: bad ZIP64 end-of-central-directory record", hint=_HINT)
        total, cd_size, cd_offset = struct.unpack_from("<QQQ", rec, 32)
        dir_end = eocd64_pos
    if total > max_entries:
        raise SizeLimitError(
            f"{name}: zip archive claims {total} members, over the {max_entries}-member cap",
            hint="the archive is corrupt or hostile",
        )
    if cd_size > max_directory:
        raise SizeLimitError(
            f"{name}: zip central directory is {cd_size} bytes, over the {max_directory}-byte cap",
            hint="the archive is corrupt or hostile",
        )
    # Data prepended to the archive shifts every offset (as zipfile handles it).
    shift = dir_end - cd_size - cd_offset
    if shift < 0:
        raise FormatError(
            f"{name}: zip central directory ({cd_size} bytes at {cd_offset}) overlaps its "
            "end record",
            hint=_HINT,
        )
    cd_start = cd_offset + shift
    if cd_start >= tail_start:
        cd = tail[cd_start - tail_start : cd_start - tail_start + cd_size]
    else:
        cd = read_exact(source, cd_start, cd_size, name=name, what="zip central directory")
    entries: list[ZipEntry] = []
    pos = 0
    while pos < len(cd):
        if cd[pos : pos + 4] != _CDH or pos + 46 > len(cd):
            raise FormatError(
                f"{name}: bad zip central directory entry at {cd_start + pos}", hint=_HINT
            )
        (flags, method) = struct.unpack_from("<HH", cd, pos + 8)
        csize, usize, nlen, elen, clen = struct.unpack_from("<IIHHH", cd, pos + 20)
        (lho,) = struct.unpack_from("<I", cd, pos + 42)
        end = pos + 46 + nlen + elen + clen
        if end > len(cd):
            raise FormatError(f"{name}: zip central directory entry runs past its end", hint=_HINT)
        raw_name = cd[pos + 46 : pos + 46 + nlen]
        member = raw_name.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
        usize, csize, lho = _zip64_extra(
            cd[pos + 46 + nlen : pos + 46 + nlen + elen], usize, csize, lho
        )
        entries.append(ZipEntry(member, method, flags, csize, usize, lho + shift))
        pos = end
        if len(entries) > max_entries:
            raise SizeLimitError(
                f"{name}: more than {max_entries} zip members",
                hint="the archive is corrupt or hostile",
            )
    return tuple(entries)


def _zip64_extra(extra: bytes, usize: int, csize: int, lho: int) -> tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        hid, hlen = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + hlen]
        if hid == 0x0001:
            vals = [int(struct.unpack_from("<Q", body, i)[0]) for i in range(0, len(body) - 7, 8)]
            it = iter(vals)
            if usize == 0xFFFFFFFF:
                usize = next(it, usize)
            if csize == 0xFFFFFFFF:
                csize = next(it, csize)
            if lho == 0xFFFFFFFF:
                lho = next(it, lho)
            break
        pos += 4 + hlen
    return usize, csize, lho


def member_data_offset(source: RangeSource, entry: ZipEntry, *, name: str) -> int:
    """Absolute offset of a member's (compressed) data, from its local header."""
    head = read_exact(source, entry.header_offset, 30, name=name, what="zip local header")
    if head[:4] != _LFH:
        raise FormatError(f"{name}: bad local header for zip member {entry.name!r}", hint=_HINT)
    nlen, elen = struct.unpack_from("<HH", head, 26)
    return entry.header_offset + 30 + int(nlen) + int(elen)


def member_prefix(source: RangeSource, entry: ZipEntry, limit: int, *, name: str) -> bytes:
    """Up to ``limit`` bytes of a member's uncompressed content (stored or deflated).

    Raises FormatError for other compression methods or encrypted members.
    """
    if entry.flags & 0x1:
        raise FormatError(
            f"{name}: zip member {entry.name!r} is encrypted",
            hint="encrypted members cannot be inspected",
        )
    start = member_data_offset(source, entry, name=name)
    if entry.method == 0:
        n = min(limit, entry.compressed_size)
        return read_exact(source, start, n, name=name, what=f"zip member {entry.name!r}")
    if entry.method == 8:
        # deflate: 1 compressed byte expands to at most ~1032 bytes, read a bounded slice
        n = min(entry.compressed_size, max(64 * 1024, limit))
        comp = read_exact(source, start, n, name=name, what=f"zip member {entry.name!r}")
        try:
            return zlib.decompressobj(-15).decompress(comp, limit)
        except zlib.error as exc:
            raise FormatError(
                f"{name}: zip member {entry.name!r} does not inflate: {exc}", hint=_HINT
            ) from None
    raise FormatError(
        f"{name}: zip member {entry.name!r} uses compression method {entry.method}",
        hint="only stored and deflated members can be inspected",
    )
