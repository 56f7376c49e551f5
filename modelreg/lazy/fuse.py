"""``modelreg mount``: a model's files as a read-only FUSE filesystem (pyfuse3).

Two layers:

* :class:`FuseOps` is the filesystem logic (inodes, attributes, directory
  listings, reads through a :class:`~modelreg.lazy.handle.ModelHandle`) with no
  kernel and no pyfuse3 in sight; it is unit-tested directly.
* :func:`mount` wires it to the kernel with pyfuse3 and trio: read-only,
  immutable content (long attribute/entry timeouts, the kernel page cache kept
  across opens, so ``mmap`` and repeated reads are served from memory), reads
  run in worker threads so a slow chunk never blocks other files. It returns
  when the filesystem is unmounted (``modelreg umount``, ``fusermount3 -u``) or
  after SIGINT/SIGTERM, which unmount cleanly.

A byte that fails verification is never handed to the kernel: the read fails
with ``EIO`` and the reason goes to ``on_warning``. Writing is refused
(``EROFS``). Extended attributes ``user.modelreg.digest`` and
``user.modelreg.reference`` expose the file's digest and the model reference;
``user.modelreg.verify`` says how a file's bytes are verified before they are
served: ``chunks`` (a chunk index the manifest digest covers), ``chunks-referrer``
(an index found among the manifest's referrers, not covered by its digest:
``modelreg index``), or ``blob`` (no index: the whole blob is fetched and checked
against the layer digest on first read). The handle's notes say the same once,
at mount time (the CLI prints them as warnings).

Privileges: ``/dev/fuse`` and either root or the setuid ``fusermount3`` helper
(Debian's ``fuse3`` package). In a container: ``--device /dev/fuse`` and
``CAP_SYS_ADMIN`` (or a privileged container); ``allow_other`` (other users or
containers sharing the mount) needs ``user_allow_other`` in ``/etc/fuse.conf``
when not root.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from modelreg.errors import (
    IntegrityError,
    InvalidInputError,
    ModelRegError,
    NotFoundError,
    UnsupportedError,
)
from modelreg.lazy._engine import SequentialDetector
from modelreg.lazy.handle import ModelHandle
from modelreg.lazy.publish import index_descriptor_from_annotations

__all__ = ["FuseOps", "Node", "is_mounted", "mount", "umount"]

ROOT_INODE: Final = 1
ATTR_TIMEOUT: Final = 3600.0
XATTR_DIGEST: Final = b"user.modelreg.digest"
XATTR_REFERENCE: Final = b"user.modelreg.reference"
XATTR_VERIFY: Final = b"user.modelreg.verify"


class FuseOpError(Exception):
    """A filesystem operation failed with ``errno`` (mapped to FUSEError by the adapter)."""

    def __init__(self, errno_: int, message: str = "") -> None:
        super().__init__(message or os.strerror(errno_))
        self.errno = errno_


@dataclass
class Node:
    inode: int
    name: bytes
    parent: int
    is_dir: bool
    path: str = ""
    size: int = 0
    mode: int = 0o444
    digest: str = ""
    children: dict[bytes, int] = field(default_factory=dict)


@dataclass
class _Open:
    node: Node
    detector: SequentialDetector


class FuseOps:
    """The filesystem over a model handle, independent of the kernel interface."""

    def __init__(
        self,
        handle: ModelHandle,
        *,
        readahead: int | None = None,
        on_warning: Callable[[str], None] | None = None,
        uid: int | None = None,
        gid: int | None = None,
    ) -> None:
        self.handle = handle
        self.readahead = handle.readahead if readahead is None else readahead
        self._warn = on_warning or (lambda _m: None)
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self.mtime_ns = time.time_ns()
        self.nodes: dict[int, Node] = {ROOT_INODE: Node(ROOT_INODE, b"", ROOT_INODE, True)}
        self._open: dict[int, _Open] = {}
        self._next_fh = 1
        self._lock = threading.Lock()
        for info in handle.files:
            self._add_file(info.path, info.size, info.mode, str(info.digest))

    # ------------------------------------------------------------------ tree
    def _add_file(self, path: str, size: int, mode: int, digest: str) -> None:
        parts = path.split("/")
        parent = self.nodes[ROOT_INODE]
        for k, part in enumerate(parts):
            name = os.fsencode(part)
            last = k == len(parts) - 1
            child = parent.children.get(name)
            if child is None:
                inode = len(self.nodes) + 1
                node = Node(
                    inode,
                    name,
                    parent.inode,
                    is_dir=not last,
                    path="/".join(parts[: k + 1]),
                    size=size if last else 0,
                    mode=(0o555 if mode & 0o111 else 0o444) if last else 0o555,
                    digest=digest if last else "",
                )
                self.nodes[inode] = node
                parent.children[name] = inode
                parent = node
            else:
                parent = self.nodes[child]
                if last or not parent.is_dir:
                    raise InvalidInputError(f"{path!r} collides with another file of the model")

    def node(self, inode: int) -> Node:
        node = self.nodes.get(inode)
        if node is None:
            raise FuseOpError(errno.ENOENT)
        return node

    # ------------------------------------------------------------------ metadata
    def attributes(self, inode: int) -> dict[str, int]:
        node = self.node(inode)
        kind = stat.S_IFDIR if node.is_dir else stat.S_IFREG
        return {
            "st_ino": node.inode,
            "st_mode": kind | (0o555 if node.is_dir else node.mode),
            "st_nlink": 2 + sum(1 for c in node.children.values() if self.nodes[c].is_dir)
            if node.is_dir
            else 1,
            "st_size": node.size,
            "st_uid": self.uid,
            "st_gid": self.gid,
            "st_blksize": 1 << 20,
            "st_blocks": -(-node.size // 512),
            "st_atime_ns": self.mtime_ns,
            "st_mtime_ns": self.mtime_ns,
            "st_ctime_ns": self.mtime_ns,
        }

    def lookup(self, parent: int, name: bytes) -> int:
        node = self.node(parent)
        if not node.is_dir:
            raise FuseOpError(errno.ENOTDIR)
        if name == b".":
            return node.inode
        if name == b"..":
            return node.parent
        child = node.children.get(name)
        if child is None:
            raise FuseOpError(errno.ENOENT)
        return child

    def readdir(self, inode: int, start: int) -> list[tuple[bytes, int, int]]:
        """Entries ``(name, inode, next offset)`` from offset ``start`` (sorted by name)."""
        node = self.node(inode)
        if not node.is_dir:
            raise FuseOpError(errno.ENOTDIR)
        entries = sorted(node.children.items())
        return [(name, ino, k + 1) for k, (name, ino) in enumerate(entries) if k >= start]

    def getxattr(self, inode: int, name: bytes) -> bytes:
        node = self.node(inode)
        if name == XATTR_DIGEST and not node.is_dir:
            return node.digest.encode()
        if name == XATTR_REFERENCE:
            return self.handle.reference.encode()
        if name == XATTR_VERIFY and not node.is_dir:
            return self._verify_mode(node).encode()
        raise FuseOpError(errno.ENODATA)

    def _verify_mode(self, node: Node) -> str:
        indexed = any(f.indexed for f in self.handle.files if f.path == node.path)
        if not indexed:
            return "blob"
        named = index_descriptor_from_annotations(self.handle.manifest.annotations)
        return "chunks" if named is not None else "chunks-referrer"

    def listxattr(self, inode: int) -> list[bytes]:
        node = self.node(inode)
        if node.is_dir:
            return [XATTR_REFERENCE]
        return [XATTR_DIGEST, XATTR_REFERENCE, XATTR_VERIFY]

    def statfs(self) -> dict[str, int]:
        total = sum(n.size for n in self.nodes.values())
        return {
            "f_bsize": 1 << 20,
            "f_frsize": 4096,
            "f_blocks": -(-total // 4096),
            "f_bfree": 0,
            "f_bavail": 0,
            "f_files": len(self.nodes),
            "f_ffree": 0,
            "f_favail": 0,
            "f_namemax": 255,
        }

    # ------------------------------------------------------------------ files
    def open(self, inode: int, flags: int) -> int:
        node = self.node(inode)
        if node.is_dir:
            raise FuseOpError(errno.EISDIR)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT):
            raise FuseOpError(errno.EROFS)
        with self._lock:
            fh = self._next_fh
            self._next_fh += 1
            self._open[fh] = _Open(node, SequentialDetector(self.readahead))
        return fh

    def read(self, fh: int, offset: int, size: int) -> bytes:
        """Blocking read (the adapter runs it in a worker thread)."""
        opened = self._open.get(fh)
        if opened is None:
            raise FuseOpError(errno.EBADF)
        node = opened.node
        if offset >= node.size or size <= 0:
            return b""
        try:
            data = self.handle.read(node.path, offset, size)
        except IntegrityError as exc:
            self._warn(f"refused to serve {node.path!r}: {exc.message}")
            raise FuseOpError(errno.EIO, exc.message) from exc
        except NotFoundError as exc:
            self._warn(f"cannot read {node.path!r}: {exc.message}")
            raise FuseOpError(errno.EIO, exc.message) from exc
        except ModelRegError as exc:
            self._warn(f"cannot read {node.path!r}: {exc.message}")
            raise FuseOpError(errno.EIO, exc.message) from exc
        ahead = opened.detector.on_read(offset, len(data))
        if ahead is not None:
            self.handle.prefetch(node.path, ahead[0], ahead[1])
        return data

    def release(self, fh: int) -> None:
        with self._lock:
            self._open.pop(fh, None)


# --------------------------------------------------------------------------- kernel


def _load_pyfuse3() -> tuple[Any, Any]:
    from modelreg._extras import require

    system = "install fuse3, libfuse3-dev and pkg-config (apt-get install ...)"
    pyfuse3 = require("pyfuse3", "mount", "mounting a model", system=system)
    trio = require("trio", "mount", "mounting a model", system=system)
    return pyfuse3, trio


def _make_operations(ops: FuseOps, pyfuse3: Any, trio: Any) -> Any:
    fuse_error = pyfuse3.FUSEError

    def entry(inode: int) -> Any:
        attrs = ops.attributes(inode)
        e = pyfuse3.EntryAttributes()
        for key, value in attrs.items():
            setattr(e, key, value)
        e.attr_timeout = ATTR_TIMEOUT
        e.entry_timeout = ATTR_TIMEOUT
        return e

    def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any) -> Any:
            try:
                return fn(*args)
            except FuseOpError as exc:
                raise fuse_error(exc.errno) from None

        return wrapped

    class ModelFS(pyfuse3.Operations):  # type: ignore[misc]
        supports_dot_lookup = True
        enable_writeback_cache = False
        enable_acl = False

        async def getattr(self, inode: int, ctx: Any = None) -> Any:
            return guard(entry)(inode)

        async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> Any:
            return guard(lambda: entry(ops.lookup(parent_inode, name)))()

        async def opendir(self, inode: int, ctx: Any) -> int:
            node = guard(ops.node)(inode)
            if not node.is_dir:
                raise fuse_error(errno.ENOTDIR)
            return int(inode)

        async def readdir(self, fh: int, start_id: int, token: Any) -> None:
            for name, inode, nxt in guard(ops.readdir)(fh, start_id):
                if not pyfuse3.readdir_reply(token, name, entry(inode), nxt):
                    break

        async def releasedir(self, fh: int) -> None:
            return None

        async def open(self, inode: int, flags: int, ctx: Any) -> Any:
            fh = guard(ops.open)(inode, flags)
            return pyfuse3.FileInfo(fh=fh, keep_cache=True, direct_io=False)

        async def read(self, fh: int, off: int, size: int) -> bytes:
            result: bytes = await trio.to_thread.run_sync(guard(ops.read), fh, off, size)
            return result

        async def release(self, fh: int) -> None:
            ops.release(fh)

        async def flush(self, fh: int) -> None:
            return None

        async def access(self, inode: int, mode: int, ctx: Any) -> bool:
            return not (mode & os.W_OK)

        async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
            return bytes(guard(ops.getxattr)(inode, name))

        async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
            return list(guard(ops.listxattr)(inode))

        async def statfs(self, ctx: Any) -> Any:
            s = pyfuse3.StatvfsData()
            for key, value in ops.statfs().items():
                setattr(s, key, value)
            return s

    return ModelFS()


def mount(
    handle: ModelHandle,
    mountpoint: str | os.PathLike[str],
    *,
    allow_other: bool = False,
    debug: bool = False,
    readahead: int | None = None,
    kernel_readahead_kb: int | None = None,
    on_ready: Callable[[], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> None:
    """Mount ``handle``'s files read-only at ``mountpoint``; block until unmounted.

    SIGINT and SIGTERM unmount and return (call from the main thread). The
    handle is not closed here. ``readahead``: bytes modelreg fetches ahead of a
    sequential reader (default: the handle's). ``kernel_readahead_kb``: the
    kernel's own read-ahead for this mount (``/sys/class/bdi/*/read_ahead_kb``,
    default 128); 0 makes ``mmap`` readers fetch exactly the pages they touch
    (needs root; a warning otherwise).
    """
    pyfuse3, trio = _load_pyfuse3()
    target = Path(mountpoint)
    if not target.is_dir():
        raise InvalidInputError(f"mount point {str(target)!r} is not a directory")
    if not os.path.exists("/dev/fuse"):
        raise UnsupportedError(
            "/dev/fuse does not exist: this machine or container has no FUSE device",
            hint="load the fuse module, or run the container with --device /dev/fuse",
        )
    real = _resolved(target)  # resolved now: after mounting, only we could answer
    ops = FuseOps(handle, readahead=readahead, on_warning=on_warning)
    operations = _make_operations(ops, pyfuse3, trio)
    options = set(pyfuse3.default_options)
    options.discard("default_permissions")
    options |= {"fsname=modelreg", "subtype=modelreg", "ro", "default_permissions"}
    if allow_other:
        options.add("allow_other")
    if debug:
        options.add("debug")
    try:
        pyfuse3.init(operations, str(target), options)
    except RuntimeError as exc:
        raise UnsupportedError(
            f"cannot mount at {str(target)!r}: {exc}",
            hint="FUSE needs /dev/fuse and root or the fusermount3 helper; in a container "
            "add --device /dev/fuse --cap-add SYS_ADMIN",
        ) from exc

    if kernel_readahead_kb is not None:
        _set_kernel_readahead(real, kernel_readahead_kb, on_warning or (lambda _m: None))

    async def run() -> None:
        async with trio.open_nursery() as nursery:

            async def fuse_main() -> None:
                try:
                    await pyfuse3.main()
                finally:
                    nursery.cancel_scope.cancel()

            async def signals() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as receiver:
                    if on_ready is not None:
                        on_ready()
                    async for _sig in receiver:
                        pyfuse3.terminate()
                        return

            nursery.start_soon(fuse_main)
            nursery.start_soon(signals)

    try:
        trio.run(run)
    finally:
        pyfuse3.close(unmount=True)


def _resolved(path: str | os.PathLike[str]) -> str:
    """The absolute path with its parent resolved, without touching the last component
    (which may be a FUSE mount whose server is busy or gone)."""
    absolute = os.path.abspath(os.fspath(path))
    return os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))


def _mount_device(real: str) -> str | None:
    """``major:minor`` of the filesystem mounted at ``real`` (a resolved path), from
    mountinfo. Never touches the path itself: once mounted, a stat would be a FUSE
    request that only this process can answer."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    device = None
    for line in lines:
        fields = line.split()
        if len(fields) > 4 and fields[4] == real:
            device = fields[2]  # the last one mounted there wins
    return device


def _set_kernel_readahead(real: str, kb: int, warn: Callable[[str], None]) -> None:
    device = _mount_device(real)
    if device is None:
        warn(f"could not find the device of {real!r}; kernel read-ahead unchanged")
        return
    knob = Path("/sys/class/bdi") / device / "read_ahead_kb"
    try:
        knob.write_text(f"{max(0, kb)}\n")
    except OSError as exc:
        warn(f"could not set the kernel read-ahead of the mount ({knob}): {exc.strerror}")


def is_mounted(mountpoint: str | os.PathLike[str]) -> bool:
    """Whether ``mountpoint`` is a modelreg FUSE mount (from /proc/self/mounts)."""
    real = _resolved(mountpoint)
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3 and fields[1] == real and "modelreg" in fields[0] + fields[2]:
                    return True
    except OSError:
        return False
    return False


def umount(mountpoint: str | os.PathLike[str], *, lazy: bool = False) -> None:
    """Unmount a modelreg mount (``fusermount3 -u``, else ``fusermount -u``, else umount)."""
    path = os.fspath(mountpoint)
    if not is_mounted(path):
        raise NotFoundError(
            f"{path!r} is not a modelreg mount",
            hint="see the mounts with `grep modelreg /proc/mounts`",
        )
    for tool in ("fusermount3", "fusermount"):
        exe = shutil.which(tool)
        if exe:
            cmd = [exe, "-u", *(["-z"] if lazy else []), path]
            break
    else:
        exe = shutil.which("umount")
        if not exe:
            raise UnsupportedError("no fusermount3, fusermount or umount found to unmount with")
        cmd = [exe, *(["-l"] if lazy else []), path]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip()[:300]
        raise ModelRegError(
            f"could not unmount {path!r}: {message}",
            hint="close the files open under the mount point, or use --lazy",
        )
