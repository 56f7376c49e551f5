"""The filesystem operations behind `modelreg mount`, without a kernel."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from modelreg.lazy import open_model
from modelreg.lazy.fuse import (
    ROOT_INODE,
    XATTR_DIGEST,
    XATTR_REFERENCE,
    XATTR_VERIFY,
    FuseOpError,
    FuseOps,
)


@pytest.fixture
def ops(memory_model, tmp_path):
    target, _ = memory_model
    handle = open_model(target, "v1", cache=tmp_path / "cache")
    yield FuseOps(handle, readahead=0, uid=1000, gid=1000)
    handle.close()


def test_tree_lookup_and_attributes(ops, model_dir):
    root = ops.attributes(ROOT_INODE)
    assert stat.S_ISDIR(root["st_mode"]) and root["st_mode"] & 0o777 == 0o555
    assert root["st_nlink"] == 3  # ., .., sub
    names = [name for name, _, _ in ops.readdir(ROOT_INODE, 0)]
    assert names == [b"config.json", b"model.safetensors", b"sub", b"tokenizer.json"]
    sub = ops.lookup(ROOT_INODE, b"sub")
    run = ops.lookup(sub, b"run.sh")
    attrs = ops.attributes(run)
    assert stat.S_ISREG(attrs["st_mode"]) and attrs["st_mode"] & 0o777 == 0o555
    assert attrs["st_size"] == (model_dir / "sub" / "run.sh").stat().st_size
    assert attrs["st_uid"] == 1000
    cfg = ops.attributes(ops.lookup(ROOT_INODE, b"config.json"))
    assert cfg["st_mode"] & 0o777 == 0o444
    assert ops.lookup(sub, b"..") == ROOT_INODE and ops.lookup(sub, b".") == sub
    with pytest.raises(FuseOpError) as exc:
        ops.lookup(ROOT_INODE, b"missing")
    assert exc.value.errno == errno.ENOENT
    with pytest.raises(FuseOpError) as exc:
        ops.lookup(run, b"x")
    assert exc.value.errno == errno.ENOTDIR
    with pytest.raises(FuseOpError):
        ops.attributes(9999)


def test_readdir_offsets_resume(ops):
    all_entries = ops.readdir(ROOT_INODE, 0)
    rest = ops.readdir(ROOT_INODE, all_entries[1][2])
    assert rest == all_entries[2:]
    assert ops.readdir(ROOT_INODE, len(all_entries)) == []


def test_reads_are_byte_identical_and_writes_refused(ops, model_dir):
    inode = ops.lookup(ROOT_INODE, b"model.safetensors")
    original = (model_dir / "model.safetensors").read_bytes()
    fh = ops.open(inode, os.O_RDONLY)
    got = bytearray()
    offset = 0
    while True:
        block = ops.read(fh, offset, 128 * 1024)
        if not block:
            break
        got += block
        offset += len(block)
    assert bytes(got) == original
    assert ops.read(fh, len(original) + 10, 100) == b""
    ops.release(fh)
    with pytest.raises(FuseOpError) as exc:
        ops.read(fh, 0, 10)
    assert exc.value.errno == errno.EBADF
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC):
        with pytest.raises(FuseOpError) as exc:
            ops.open(inode, flags)
        assert exc.value.errno == errno.EROFS
    with pytest.raises(FuseOpError) as exc:
        ops.open(ROOT_INODE, os.O_RDONLY)
    assert exc.value.errno == errno.EISDIR


def test_integrity_failure_is_eio_and_reported(memory_model, tmp_path):
    target, _ = memory_model
    target.tamper = lambda desc, off, data: bytes([data[0] ^ 1]) + data[1:]
    warnings = []
    with open_model(target, "v1", cache=tmp_path / "cache") as handle:
        ops = FuseOps(handle, on_warning=warnings.append)
        fh = ops.open(ops.lookup(ROOT_INODE, b"config.json"), os.O_RDONLY)
        with pytest.raises(FuseOpError) as exc:
            ops.read(fh, 0, 4096)
    assert exc.value.errno == errno.EIO
    assert warnings and "refused to serve 'config.json'" in warnings[0]


def test_xattrs_and_statfs(ops, memory_model):
    inode = ops.lookup(ROOT_INODE, b"config.json")
    digest = ops.getxattr(inode, XATTR_DIGEST)
    assert digest.startswith(b"sha256:")
    assert ops.getxattr(ROOT_INODE, XATTR_REFERENCE) == ops.handle.reference.encode()
    assert ops.listxattr(inode) == [XATTR_DIGEST, XATTR_REFERENCE, XATTR_VERIFY]
    assert ops.getxattr(inode, XATTR_VERIFY) == b"chunks"  # an index the manifest names
    with pytest.raises(FuseOpError) as exc:
        ops.getxattr(inode, b"user.other")
    assert exc.value.errno == errno.ENODATA
    st = ops.statfs()
    assert st["f_bfree"] == 0 and st["f_files"] == len(ops.nodes)
