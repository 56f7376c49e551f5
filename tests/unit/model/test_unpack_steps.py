"""The pull's steps one at a time: plan, block I/O, split reassembly, commit/rollback."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from modelreg.content import LayoutStore, MemoryTarget
from modelreg.errors import IntegrityError, InvalidInputError, UnsafeContentError
from modelreg.model import annotations as ann
from modelreg.model.pack import pack_directory
from modelreg.model.unpack import _blockio as blockio
from modelreg.model.unpack import _split as split
from modelreg.model.unpack._plan import (
    CachePlan,
    cache_mode_for,
    check_destinations,
    plan,
)
from modelreg.model.unpack._result import FileEntry
from modelreg.model.unpack._staging import PREFIX, Staging
from modelreg.model.unpack._unpacker import Unpacker, unpack
from modelreg.oci import Descriptor, Manifest
from modelreg.oci import mediatypes as mt
from tests.unit.model.test_split import _source, write_model
from tests.unit.model.test_unpack import source_with


def unpacker_for(
    src: MemoryTarget,
    manifest: Manifest,
    out: Path,
    *,
    fsync: bool = False,
    cache: LayoutStore | None = None,
) -> Unpacker:
    out.mkdir(parents=True, exist_ok=True)
    return Unpacker(
        src,
        plan(manifest, ()),
        Staging(out),
        cache=cache,
        source_is_cache=False,
        copies=None,
        mode="copy",
        link=False,
        concurrency=2,
        progress=None,
        fsync=fsync,
        expand_ratio=100,
        include=(),
    )


# ------------------------------------------------------------------- planning


def test_plan_gives_each_file_its_safe_path_and_groups_shared_blobs():
    _, m = source_with({"a.bin": b"same", "sub/b.bin": b"same", "c.json": b"{}"})
    planned = plan(m, ())
    assert planned.paths() == ["a.bin", "sub/b.bin", "c.json"]
    groups = planned.raw_groups()
    assert sorted(len(g) for g in groups) == [1, 2]  # one fetch for the two "same" files


@pytest.mark.parametrize("bad", ["../up.bin", "/abs.bin", "a\\b.bin", "nul\x00.bin"])
def test_plan_refuses_unsafe_paths(bad):
    _, m = source_with({bad: b"x"})
    with pytest.raises((InvalidInputError, UnsafeContentError)):
        plan(m, ())


def test_plan_refuses_paths_that_collide_after_normalisation():
    _, m = source_with({"Model.bin": b"1", "model.bin": b"2"})
    with pytest.raises(UnsafeContentError):
        plan(m, ())


def test_plan_applies_include_globs_and_refuses_a_glob_matching_nothing():
    _, m = source_with({"a.json": b"{}", "w/b.bin": b"b", "c.bin": b"c"})
    assert plan(m, ["*.json"]).paths() == ["a.json"]
    assert plan(m, ["w/*", "c.*"]).paths() == ["w/b.bin", "c.bin"]
    with pytest.raises(InvalidInputError, match="--include"):
        plan(m, ["*.nope"])


def test_destinations_refuse_what_stands_in_the_way(tmp_path):
    out = tmp_path / "out"
    (out / "a.bin").mkdir(parents=True)
    with pytest.raises(InvalidInputError, match="is a directory"):
        check_destinations(out, ["a.bin"])
    (out / "f").write_bytes(b"file")
    with pytest.raises(InvalidInputError, match="not a directory"):
        check_destinations(out, ["f/x.bin"])
    (tmp_path / "elsewhere").mkdir()
    (out / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeContentError, match="outside"):
        check_destinations(out, ["link/x.bin"])
    check_destinations(out, ["new/x.bin"])  # nothing in the way


def test_cache_decisions():
    assert cache_mode_for("Auto", link=False) == "auto"
    assert cache_mode_for("auto", link=True) == "copy"  # --link needs the cache's own copy
    with pytest.raises(InvalidInputError, match="--link"):
        cache_mode_for("reference", link=True)
    assert CachePlan("copy", keeps=True).tee
    assert not CachePlan("copy", keeps=True, reflink=True).tee  # cloned after, not teed
    assert not CachePlan("copy", keeps=False).tee  # the source is the cache
    assert CachePlan("reference", keeps=True).remembers
    assert not CachePlan("copy", keeps=True).remembers


# ------------------------------------------------------------------ block I/O


class Trickle:
    """A stream handing out at most ``step`` bytes per read."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data = data
        self.pos = 0
        self.step = step

    def readinto(self, buf) -> int:
        n = min(self.step, len(buf), len(self.data) - self.pos)
        memoryview(buf)[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


def test_short_writes_and_short_reads_lose_no_byte(tmp_path, monkeypatch):
    data = os.urandom(100_003)
    real_write, real_pwrite = os.write, os.pwrite
    monkeypatch.setattr(os, "write", lambda fd, b: real_write(fd, bytes(b)[:777]))
    monkeypatch.setattr(os, "pwrite", lambda fd, b, pos: real_pwrite(fd, bytes(b)[:555], pos))
    fd = os.open(tmp_path / "seq", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        pool = blockio.BufferPool(2, size=4096)
        blockio.pump(Trickle(data, 1000), [blockio.fd_sink(fd)], pool, lambda n: None, None)
    finally:
        os.close(fd)
    assert (tmp_path / "seq").read_bytes() == data
    fd = os.open(tmp_path / "at", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        blockio.pwrite_all(Trickle(data, 999), fd, 10, bytearray(4096), None)
    finally:
        os.close(fd)
    assert (tmp_path / "at").read_bytes() == b"\0" * 10 + data


@pytest.mark.parametrize("fsync", [True, False])
def test_a_raw_file_is_fsynced_only_when_asked(tmp_path, monkeypatch, fsync):
    src, m = source_with({"a.bin": b"A" * 5000})
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    unpacker = unpacker_for(src, m, tmp_path / "out", fsync=fsync)
    try:
        dst = unpacker.staging / "a.bin"
        unpacker.fetch_raw(m.layers[0], "a.bin", dst, tee=False)
        assert dst.read_bytes() == b"A" * 5000
    finally:
        unpacker.clean_up()
    assert bool(synced) == fsync


def test_a_tampered_blob_is_refused_by_the_raw_step(tmp_path):
    src, m = source_with({"a.bin": b"A" * 5000})
    src._blobs[m.layers[0].digest] = b"B" * 5000
    unpacker = unpacker_for(src, m, tmp_path / "out")
    try:
        with pytest.raises(IntegrityError):
            unpacker.write_raw(unpacker.planned.raw_groups()[0])
    finally:
        unpacker.clean_up()
    assert os.listdir(tmp_path / "out") == []


# ------------------------------------------------------------- split reassembly


def split_model(tmp_path: Path):
    root = write_model(tmp_path / "m")
    packed = pack_directory(root, split=True, part_size="32KiB")
    return root, packed


def test_parts_written_out_of_order_reassemble_the_file(tmp_path):
    root, packed = split_model(tmp_path)
    unpacker = unpacker_for(_source(packed), packed.manifest, tmp_path / "out")
    (path, sf) = unpacker.planned.split[0]
    assert len(sf.parts) > 3
    try:
        unpacker.open_split_files()
        for k in reversed(range(len(sf.parts))):
            unpacker.write_part(path, sf, k)
        unpacker.check_split(path, sf)
        staged = (unpacker.staging / path).read_bytes()
    finally:
        unpacker.clean_up()
    assert staged == (root / "model.safetensors").read_bytes()
    assert not unpacker.staging.root.exists()


def test_whole_file_check_follows_parts_landing_in_any_order(tmp_path):
    _, packed = split_model(tmp_path)
    sf = plan(packed.manifest, ()).split[0][1]
    src = _source(packed)
    fd = split.open_staged(tmp_path / "staged", sf.size)
    check = split.WholeFileCheck(fd, sf)
    try:
        for k in [2, 0, *range(len(sf.parts) - 1, 2, -1), 1]:
            part = sf.parts[k]
            os.pwrite(fd, src._blobs[part.descriptor.digest], part.offset)
            check.part_done(k)
        assert split.matches(check.result(), sf)
    finally:
        check.stop()
        os.close(fd)


def test_a_tampered_part_fails_the_part_and_the_pull_keeps_nothing(tmp_path):
    _, packed = split_model(tmp_path)
    src = _source(packed)
    parts = [d for d in packed.manifest.layers if d.media_type == ann.PART_MEDIA_TYPE]
    src._blobs[parts[1].digest] = b"\0" * parts[1].size
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("the user's")
    with pytest.raises(IntegrityError, match=r"part 2 of \d+ of 'model.safetensors'"):
        unpack(src, packed.manifest, out, fsync=False)
    assert sorted(os.listdir(out)) == ["mine.txt"]


def test_a_corrupt_cached_part_is_evicted_and_fetched_again(tmp_path):
    root, packed = split_model(tmp_path)
    cache = LayoutStore(tmp_path / "cache", fsync=False)
    parts = [d for d in packed.manifest.layers if d.media_type == ann.PART_MEDIA_TYPE]
    bad = cache.blob_path(parts[2].digest)
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"\xff" * parts[2].size)  # right size, wrong bytes (SECURITY.md case 28)
    assert cache.has_blob(parts[2].digest)
    result = unpack(_source(packed), packed.manifest, tmp_path / "out", cache=cache, fsync=False)
    pulled = (tmp_path / "out" / "model.safetensors").read_bytes()
    assert pulled == (root / "model.safetensors").read_bytes()
    assert cache.blob_path(parts[2].digest).read_bytes() != b"\xff" * parts[2].size
    assert result.bytes_fetched >= parts[2].size


# ------------------------------------------------------------- commit / rollback


def _entry(path: str, data: bytes) -> FileEntry:
    return FileEntry(path, Descriptor.for_bytes(mt.model_layer("weight"), data), 0o644)


def test_commit_moves_everything_and_remove_leaves_no_staging(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    staging = Staging(out)
    (staging / "sub").mkdir()
    (staging / "sub/a.bin").write_bytes(b"a")
    (staging / "b.bin").write_bytes(b"b")
    staging.commit([_entry("b.bin", b"b"), _entry("sub/a.bin", b"a")], {})
    staging.remove()
    assert (out / "sub" / "a.bin").read_bytes() == b"a" and (out / "b.bin").read_bytes() == b"b"
    assert not any(name.startswith(PREFIX) for name in os.listdir(out))


def test_a_refused_commit_moves_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    staging = Staging(out)
    (staging / "a.bin").write_bytes(b"new a")
    (staging / "b.bin").write_bytes(b"new b")
    (out / "b.bin").mkdir()  # appeared after planning: the commit checks again
    with pytest.raises(InvalidInputError, match="is a directory"):
        staging.commit([_entry("a.bin", b"new a"), _entry("b.bin", b"new b")], {})
    staging.remove()
    assert sorted(os.listdir(out)) == ["b.bin"] and (out / "b.bin").is_dir()


def test_a_failed_pull_leaves_the_output_as_it_was(tmp_path):
    src, m = source_with({"a.bin": b"new a", "b.bin": b"new b", "c.bin": b"new c"})
    src._blobs[m.layers[2].digest] = b"tampered"
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.bin").write_bytes(b"old a")
    before = {p: (out / p).read_bytes() for p in os.listdir(out)}
    with pytest.raises(IntegrityError):
        unpack(src, m, out, concurrency=1, fsync=False, overwrite=True)
    assert {p: (out / p).read_bytes() for p in os.listdir(out)} == before


def test_the_pull_threads_end_with_the_pull(tmp_path):
    _, packed = split_model(tmp_path)
    before = set(threading.enumerate())
    unpack(_source(packed), packed.manifest, tmp_path / "out", fsync=True)
    left = [t for t in set(threading.enumerate()) - before if t.name.startswith("pull")]
    for t in left:
        t.join(5)
    assert not any(t.is_alive() for t in left)
