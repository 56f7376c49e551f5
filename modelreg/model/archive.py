"""Archive layers (tar, tar+gzip, tar+zstd) written out safely (SECURITY.md cases 6, 7, 9).

KitOps ModelKits, ORAS directories, Docker model config archives and older
ModelPack producers (modctl) store files inside tar layers. Extracting an
archive from a registry is where path tricks and decompression bombs live, so
each member is checked before anything is written:

* names: :func:`~modelreg.model.unpack.safe_relpath` (no absolute path, no
  ``..``, no backslash, NUL or control character), at most 4096 bytes, then
  ``tarfile.data_filter`` as a floor (it refuses device files, FIFOs, links
  leading outside, absolute link targets);
* kinds: regular files and directories; a hard link only to a regular file
  extracted earlier from the same archive, named by a path that goes through no
  symbolic link (written as a copy, never through a link); a symbolic link only
  with a relative target, created after every regular file, and no member may be
  written *through* a link; sparse members, devices, FIFOs are refused;
* links: no path of the output may lead outside it once every link is followed
  the way the kernel follows it: component by component, a target resolved from
  the directory holding the link, ``..`` applied to the location reached, at most
  40 links, a name the pull does not write taken as a plain name, any ``..`` above
  the root at any step refused (:mod:`modelreg.model._linkcheck`). One target is
  never judged by lexical normalisation alone: ``r -> ../..`` is harmless, but
  ``x -> r/../../..`` then leaves. Each archive is checked before its links are
  created; :mod:`modelreg.model.unpack` checks every layer of the pull together
  (a link in one layer, a path through it in another) before anything leaves the
  staging directory;
* collisions: a path claimed twice (in any layer, case-insensitively), or a
  path that is both a file and a directory, is refused;
* sizes: decompressed bytes are counted and bounded by ``limit`` (the declared
  uncompressed size when the producer gives one, else a multiple of the
  compressed size, never above :data:`HARD_CAP`); tar extension headers (pax,
  GNU long names) over 1 MiB and more than :data:`MAX_MEMBERS` members are
  refused.

Compression is recognised from the first bytes (gzip ``1f 8b``, zstd
``28 b5 2f fd``), whatever the media type says. zstd needs the ``zstandard``
package (or Python 3.14's ``compression.zstd``); without it the error says so.

Everything goes into the pull's staging directory and reaches the output only
when the whole pull succeeded; the layer's own digest is verified when its
stream is read to the end, which :func:`extract_archive` always does.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib
import io
import os
import posixpath
import shutil
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, Protocol, cast

from modelreg.content.base import CHUNK
from modelreg.errors import FormatError, IntegrityError, SizeLimitError, UnsafeContentError
from modelreg.model._linkcheck import LinkTree
from modelreg.model.paths import safe_relpath
from modelreg.oci.digest import Digest, Hasher

__all__ = [
    "DEFAULT_EXPAND_RATIO",
    "HARD_CAP",
    "MAX_MEMBERS",
    "ExtractedFile",
    "PathClaims",
    "decompress_file",
    "expansion_limit",
    "extract_archive",
    "sniff_compression",
]

_STREAM_BLOCK: Final = 1024 * 1024
"""Buffers and copy blocks of a tar being extracted. Not 4 MiB: several layers are
extracted at once, each holding two buffers and a block, and blocks that large, once
freed, make glibc serve later ones from a fragmenting heap (a pull of 20,000 small
files in groups peaked 20 MB higher; bench/RESULTS.md, issue 18)."""
HARD_CAP: Final = 256 * 1024**3
"""No layer expands to more than this, whatever it declares."""
DEFAULT_EXPAND_RATIO: Final = 200
"""Without a declared size, a compressed layer may expand this many times (min 64 MiB)."""
MIN_LIMIT: Final = 64 * 1024 * 1024
MAX_MEMBERS: Final = 100_000
MAX_EXTENSION_HEADER: Final = 1024 * 1024
MAX_NAME: Final = 4096
_GZIP: Final = b"\x1f\x8b"
_ZSTD: Final = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True, slots=True)
class ExtractedFile:
    """A file written into the staging directory from an archive layer."""

    path: str
    size: int
    digest: Digest
    mode: int
    link: str | None = None
    """For a symbolic link: its (relative) target; ``size``/``digest`` then describe it."""


class PathClaims:
    """Output paths claimed by a pull, across all layers; thread-safe.

    Keys are case-folded: two paths that would collide on a case-insensitive
    filesystem collide here too.
    """

    def __init__(self) -> None:
        self._files: dict[str, str] = {}
        self._dirs: dict[str, str] = {}
        self._lock = threading.Lock()

    def claim_file(self, path: str, owner: str) -> None:
        with self._lock:
            self._claim_file(path, owner)

    def claim_files(self, paths: Iterable[str], kind: str) -> None:
        """:meth:`claim_file` for many paths under one lock, each owned by
        ``f"{kind} {path!r}"`` (a listing claims every file of a model at once)."""
        with self._lock:
            for path in paths:
                self._claim_file(path, f"{kind} {path!r}")

    def claim_dir(self, path: str, owner: str) -> None:
        key = path.casefold()
        with self._lock:
            self._refuse_files_at_or_above(key, owner)
            self._mark_dirs(key, owner)

    # the steps of a claim (the caller holds the lock)
    def _claim_file(self, path: str, owner: str) -> None:
        key = path.casefold()
        if key in self._files:
            raise UnsafeContentError(
                f"{owner} and {self._files[key]} collide on output path {path!r}",
                hint="the artifact is malformed or hostile; refused",
            )
        if key in self._dirs:
            raise UnsafeContentError(
                f"{path!r} is both a file and a directory in the artifact "
                f"({owner}, {self._dirs[key]})"
            )
        parent = posixpath.dirname(key)
        self._refuse_files_at_or_above(parent, owner)
        self._files[key] = owner
        self._mark_dirs(parent, owner)

    # the two walks up a path that claiming a file and claiming a directory share
    def _refuse_files_at_or_above(self, key: str, owner: str) -> None:
        """Refuses when ``key`` or a directory above it is claimed as a file.

        The walk stops at the first directory already claimed: nothing is ever both
        (each claim refuses that), and a claimed directory's ancestors were claimed as
        directories with it, so none of them is a file. Without the stop, claiming the
        files of one deep directory walked the whole path for each."""
        while key and key not in self._dirs:
            if key in self._files:
                raise UnsafeContentError(
                    f"{key!r} is both a file and a directory in the artifact "
                    f"({self._files[key]}, {owner})"
                )
            key = posixpath.dirname(key)

    def _mark_dirs(self, key: str, owner: str) -> None:
        """Claims ``key`` and the directories above it as directories, up to the first
        one already claimed (its own ancestors were claimed with it)."""
        while key and key not in self._dirs:
            self._dirs[key] = owner
            key = posixpath.dirname(key)


def expansion_limit(compressed: int, declared: int | None, ratio: int) -> int:
    """How many decompressed bytes a layer of ``compressed`` bytes may produce."""
    if declared is not None:
        return min(HARD_CAP, declared)
    return min(HARD_CAP, max(MIN_LIMIT, compressed * ratio))


def sniff_compression(first: bytes) -> str:
    if first.startswith(_GZIP):
        return "gzip"
    if first.startswith(_ZSTD):
        return "zstd"
    return "none"


def _zstd_reader(stream: BinaryIO, label: str) -> BinaryIO:
    for name in ("compression.zstd", "zstandard"):
        try:
            module: Any = importlib.import_module(name)
        except ImportError:
            continue
        if name == "zstandard":
            reader: BinaryIO = module.ZstdDecompressor().stream_reader(stream, closefd=False)
            return reader
        opened: BinaryIO = module.ZstdFile(stream, mode="rb")
        return opened
    raise FormatError(
        f"{label} is zstd-compressed and no zstd decoder is available",
        hint="install the 'zstandard' package (pip install zstandard) to read zstd layers",
    )


def _is_zstd_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in ("zstandard", "compression", "_zstd")


class _Reader(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class _Bounded(io.RawIOBase):
    """Counts (and hashes) what it passes through; refuses more than ``limit`` bytes."""

    def __init__(self, stream: _Reader, limit: int, label: str, hash_it: bool) -> None:
        super().__init__()
        self._stream = stream
        self._limit = limit
        self._label = label
        self.count = 0
        self.hasher = Hasher() if hash_it else None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._limit - self.count + 1)
        if want <= 0:
            want = 1
        data = self._stream.read(want)
        n = len(data)
        if not n:
            return 0
        self.count += n
        if self.count > self._limit:
            raise SizeLimitError(
                f"{self._label} expands to more than {self._limit} bytes",
                hint="refused as a possible decompression bomb; if the layer is trusted, "
                "pull it with a larger limit",
            )
        view[:n] = data
        if self.hasher is not None:
            self.hasher.update(view[:n])
        return n


def _open_decompressed(
    stream: BinaryIO, label: str, limit: int, hash_it: bool
) -> tuple[_Bounded, io.BufferedReader[io.RawIOBase], str]:
    buffered = io.BufferedReader(cast(io.RawIOBase, stream), buffer_size=_STREAM_BLOCK)
    kind = sniff_compression(buffered.peek(4)[:4])
    inner: _Reader
    if kind == "gzip":
        inner = gzip.GzipFile(fileobj=buffered, mode="rb")
    elif kind == "zstd":
        inner = _zstd_reader(cast(BinaryIO, buffered), label)
    else:
        inner = buffered
    return _Bounded(inner, limit, label, hash_it), buffered, kind


class _SafeTarInfo(tarfile.TarInfo):
    """Refuses oversized pax / GNU long-name headers before tarfile reads them into memory."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:
        special = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE)
        if (self.type in special or self.type in (tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)) and (
            self.size > MAX_EXTENSION_HEADER
        ):
            raise UnsafeContentError(
                f"tar extension header of {self.size} bytes (cap {MAX_EXTENSION_HEADER})",
                hint="the archive is corrupt or hostile",
            )
        return super()._proc_member(tarfile_)  # type: ignore[misc]


def _member_path(member: tarfile.TarInfo, label: str) -> str:
    raw = member.name
    if len(raw.encode("utf-8", "surrogateescape")) > MAX_NAME:
        raise UnsafeContentError(f"{label}: member name of {len(raw)} characters is too long")
    if member.isdir():
        raw = raw.rstrip("/")
        if raw in ("", "."):
            return ""
    return safe_relpath(raw, f"{label} member")


def _writer(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    return os.fdopen(fd, "wb")


def _copy_no_follow(src: Path, dst: Path) -> None:
    """Copy a staged regular file for a hard link; neither end may be a symbolic link."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as source, _writer(dst) as target:
        shutil.copyfileobj(source, target, CHUNK)


def _copy_stream(src: _Reader, dst: BinaryIO, expected: int, label: str) -> Digest:
    hasher = Hasher()
    while block := src.read(_STREAM_BLOCK):
        hasher.update(block)
        dst.write(block)
    if hasher.size != expected:
        raise FormatError(f"{label}: member holds {hasher.size} bytes, its header says {expected}")
    return hasher.digest()


def _fs_mode(mode: int | None) -> int:
    return 0o755 if mode is not None and mode & 0o100 else 0o644


def extract_archive(
    stream: BinaryIO,
    staging: Path,
    *,
    label: str,
    limit: int,
    claims: PathClaims,
    include: Callable[[str], bool] | None = None,
    prefix: str | None = None,
    tar_digest: Digest | None = None,
) -> list[ExtractedFile]:
    """Extract a (possibly compressed) tar stream into ``staging``; see the module docstring.

    ``stream`` should be a verifying reader of the layer: it is read to its end.
    ``prefix`` (ORAS directories) requires every member to lie under that name;
    ``tar_digest`` (ORAS ``io.deis.oras.content.digest``) is checked against the
    decompressed tar stream.
    """
    bounded, buffered, _ = _open_decompressed(stream, label, limit, tar_digest is not None)
    written: dict[str, ExtractedFile] = {}
    links: list[tuple[str, str, int]] = []
    tree = LinkTree()
    out: list[ExtractedFile] = []
    dest = str(staging)
    try:
        source = io.BufferedReader(bounded, buffer_size=_STREAM_BLOCK)
        with tarfile.open(fileobj=source, mode="r|", tarinfo=_SafeTarInfo) as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise UnsafeContentError(f"{label} holds more than {MAX_MEMBERS} members")
                _extract_member(
                    tar,
                    member,
                    label=label,
                    staging=staging,
                    dest=dest,
                    claims=claims,
                    include=include,
                    prefix=prefix,
                    written=written,
                    links=links,
                    tree=tree,
                    out=out,
                )
        while source.read(_STREAM_BLOCK):  # what tarfile left after the end-of-archive blocks
            pass
        while buffered.read(_STREAM_BLOCK):  # the compressed stream to its end: verifies the layer
            pass
    except tarfile.FilterError as exc:
        raise UnsafeContentError(f"{label}: {exc}", hint="the archive is hostile; refused") from exc
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise FormatError(
            f"{label} is not a valid archive: {exc}",
            hint="the layer is corrupt, truncated or not the archive its media type says",
        ) from exc
    except Exception as exc:
        if _is_zstd_error(exc):
            raise FormatError(f"{label} is not valid zstd data: {exc}") from exc
        raise
    # every link of this archive leads inside before any is created; links that span
    # layers are checked by unpack over the whole pull
    tree.check()
    for path, target, mode in links:
        (staging / path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, staging / path)
        out.append(
            ExtractedFile(path, len(target), Digest.from_bytes(target.encode()), mode, target)
        )
    if tar_digest is not None and bounded.hasher is not None:
        actual = bounded.hasher.digest()
        if actual != tar_digest:
            raise IntegrityError(
                f"{label}: the unpacked tar hashes to {actual}, "
                f"its annotation declares {tar_digest}",
                hint="the layer is tampered or corrupt; nothing was kept",
            )
    return out


def _extract_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    *,
    label: str,
    staging: Path,
    dest: str,
    claims: PathClaims,
    include: Callable[[str], bool] | None,
    prefix: str | None,
    written: dict[str, ExtractedFile],
    links: list[tuple[str, str, int]],
    tree: LinkTree,
    out: list[ExtractedFile],
) -> None:
    path = _member_path(member, label)
    if prefix is not None and path and path != prefix and not path.startswith(prefix + "/"):
        raise UnsafeContentError(
            f"{label}: member {member.name!r} lies outside the directory {prefix!r} it unpacks to",
            hint="the archive is malformed or hostile; refused",
        )
    if member.issparse():
        raise UnsafeContentError(f"{label}: sparse member {member.name!r} refused")
    filtered = tarfile.data_filter(member, dest)
    parent = posixpath.dirname(path)
    through = tree.link_on(parent) if parent else None
    if through is not None:
        raise UnsafeContentError(
            f"{label}: member {member.name!r} would be written through the link {through!r}",
            hint="the archive is hostile; refused",
        )
    if member.isdir():
        if path:
            claims.claim_dir(path, f"{label}:{path}")
            (staging / path).mkdir(parents=True, exist_ok=True)
            tree.add_dir(path)
        return
    if include is not None and not include(path):
        return
    owner = f"{label}:{path}"
    mode = _fs_mode(filtered.mode)
    if member.issym():
        target = member.linkname
        # the target's form here; where it leads once all links exist: tree.check()
        tree.add_link(path, target, f"{label}: member {member.name!r}")
        claims.claim_file(path, owner)
        links.append((path, target, 0o777))
        return
    if member.islnk():
        source_path = safe_relpath_link(member.linkname, label)
        via = tree.link_on(source_path)
        if via is not None:
            # the kernel would follow the symbolic link to find the source: refused,
            # whatever it leads to
            raise UnsafeContentError(
                f"{label}: hard link {member.name!r} -> {member.linkname!r} goes through "
                f"the symbolic link {via!r}",
                hint="the archive is hostile; refused",
            )
        original = written.get(source_path)
        if original is None:
            raise UnsafeContentError(
                f"{label}: hard link {member.name!r} -> {member.linkname!r} does not point "
                "at a file extracted before it from the same archive",
                hint="the archive is hostile; refused",
            )
        claims.claim_file(path, owner)
        (staging / path).parent.mkdir(parents=True, exist_ok=True)
        _copy_no_follow(staging / source_path, staging / path)
        os.chmod(staging / path, original.mode)
        copy = ExtractedFile(path, original.size, original.digest, original.mode)
        written[path] = copy
        tree.add_file(path, owner)
        out.append(copy)
        return
    if not member.isreg():
        raise UnsafeContentError(f"{label}: member {member.name!r} is not a regular file")
    claims.claim_file(path, owner)
    target_path = staging / path
    target_path.parent.mkdir(parents=True, exist_ok=True)
    src = tar.extractfile(member)
    if src is None:  # pragma: no cover - regular members always have a file object
        raise FormatError(f"{label}: cannot read member {member.name!r}")
    with contextlib.closing(src), _writer(target_path) as dst:
        digest = _copy_stream(src, dst, member.size, f"{label}:{path}")
    os.chmod(target_path, mode)
    entry = ExtractedFile(path, member.size, digest, mode)
    written[path] = entry
    tree.add_file(path, owner)
    out.append(entry)


def safe_relpath_link(raw: str, label: str) -> str:
    return safe_relpath(raw, f"{label} hard-link target")


def decompress_file(
    stream: BinaryIO,
    dst: BinaryIO,
    *,
    label: str,
    limit: int,
    on_bytes: Callable[[int], None] | None = None,
) -> tuple[Digest, int]:
    """Write a gzip/zstd-compressed (or plain) single file; returns (digest, size).

    For KitOps ``raw+gzip`` / ``raw+zstd`` layers. Bounded like archives.
    """
    bounded, buffered, _ = _open_decompressed(stream, label, limit, True)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        while n := bounded.readinto(buf):
            dst.write(view[:n])
            if on_bytes is not None:
                on_bytes(n)
        while buffered.read(CHUNK):
            pass
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise FormatError(f"{label} is not valid compressed data: {exc}") from exc
    except Exception as exc:
        if _is_zstd_error(exc):
            raise FormatError(f"{label} is not valid zstd data: {exc}") from exc
        raise
    assert bounded.hasher is not None
    return bounded.hasher.digest(), bounded.count
