import os

import pytest

from modelreg.content import LayoutStore, MemoryTarget, bytes_source
from modelreg.errors import FormatError, IntegrityError, InvalidInputError, UnsafeContentError
from modelreg.model.unpack import safe_relpath, unpack
from modelreg.oci import Descriptor, Manifest
from modelreg.oci import mediatypes as mt
from modelreg.oci.manifest import empty_config


def layer(path: str, data: bytes, mode: int | None = None) -> Descriptor:
    ann = {mt.ANN_FILEPATH: path, mt.ANN_TITLE: path}
    if mode is not None:
        ann[mt.ANN_FILE_METADATA] = f'{{"name":"x","mode":{mode}}}'
    return Descriptor.for_bytes(mt.model_layer("weight"), data, ann)


def source_with(files: dict[str, bytes], modes: dict[str, int] | None = None):
    src = MemoryTarget()
    layers = []
    for path, data in files.items():
        d = layer(path, data, (modes or {}).get(path))
        src.push(d, bytes_source(data))
        layers.append(d)
    src.push(empty_config(), bytes_source(b"{}"))
    return src, Manifest(config=empty_config(), layers=tuple(layers))


def test_unpack_writes_files_modes_and_caches(tmp_path):
    src, m = source_with({"a.bin": b"A" * 10, "sub/run.sh": b"#!/bin/sh"}, {"sub/run.sh": 0o4755})
    cache = LayoutStore(tmp_path / "cache")
    result = unpack(src, m, tmp_path / "out", cache=cache)
    assert (tmp_path / "out" / "a.bin").read_bytes() == b"A" * 10
    mode = os.stat(tmp_path / "out" / "sub" / "run.sh").st_mode & 0o7777
    assert mode == 0o755  # executable kept, setuid never restored
    assert result.bytes_fetched == 19 and result.bytes_from_cache == 0
    assert all(cache.has_blob(lyr.digest) for lyr in m.layers)
    # second pull: everything from the cache
    again = unpack(src, m, tmp_path / "out2", cache=cache)
    assert again.bytes_fetched == 0 and again.bytes_from_cache == 19
    assert not [p for p in os.listdir(tmp_path / "out") if p.startswith(".modelreg")]


def test_tampered_blob_leaves_output_untouched(tmp_path):
    src, m = source_with({"good": b"good", "bad": b"original"})
    src._blobs[m.layers[1].digest] = b"tampered"
    out = tmp_path / "out"
    out.mkdir()
    (out / "good").write_text("previous")
    cache = LayoutStore(tmp_path / "cache")
    with pytest.raises(IntegrityError):
        unpack(src, m, out, cache=cache, overwrite=True)
    assert sorted(os.listdir(out)) == ["good"]
    assert (out / "good").read_text() == "previous"
    assert not cache.has_blob(m.layers[1].digest)


@pytest.mark.parametrize(
    "hostile",
    ["../escape", "/etc/passwd", "a/../../b", "a\\b", "a\x00b", "", "C:/x", "./.", "a/\nb"],
)
def test_hostile_paths_refused(hostile, tmp_path):
    with pytest.raises(UnsafeContentError):
        safe_relpath(hostile)
    src = MemoryTarget()
    d = Descriptor.for_bytes(mt.model_layer("weight"), b"x", {mt.ANN_TITLE: hostile})
    m = Manifest(config=empty_config(), layers=(d,))
    expected = FormatError if hostile == "" else UnsafeContentError  # "" names no path at all
    with pytest.raises(expected):
        unpack(src, m, tmp_path / "out")
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_colliding_paths_refused(tmp_path):
    src, m = source_with({"a/b": b"1", "a/./b": b"2"})
    with pytest.raises(UnsafeContentError, match="collide"):
        unpack(src, m, tmp_path / "out")
    src, m = source_with({"a": b"1", "a/b": b"2"})
    with pytest.raises(UnsafeContentError, match="both a file and a directory"):
        unpack(src, m, tmp_path / "out2")


def test_symlinked_parent_in_output_refused(tmp_path):
    src, m = source_with({"sub/x": b"1"})
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (out / "sub").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeContentError, match="outside"):
        unpack(src, m, out)
    assert os.listdir(tmp_path / "elsewhere") == []


def test_output_is_a_file(tmp_path):
    src, m = source_with({"a": b"1"})
    (tmp_path / "f").write_text("x")
    with pytest.raises(InvalidInputError, match="not a directory"):
        unpack(src, m, tmp_path / "f")


def test_include_subset_and_duplicate_content(tmp_path):
    src, m = source_with({"x.json": b"{}", "y.json": b"{}", "w.bin": b"123"})
    unpack(src, m, tmp_path / "out", include=["*.json"])
    assert sorted(os.listdir(tmp_path / "out")) == ["x.json", "y.json"]
    with pytest.raises(InvalidInputError, match="no file"):
        unpack(src, m, tmp_path / "out3", include=["*.nope"])


def test_hard_links_only_on_request(tmp_path):
    src, m = source_with({"w": b"weights"})
    cache = LayoutStore(tmp_path / "cache")
    unpack(src, m, tmp_path / "a", cache=cache)
    unpack(src, m, tmp_path / "b", cache=cache)
    assert os.stat(tmp_path / "b" / "w").st_nlink == 1
    unpack(src, m, tmp_path / "c", cache=cache, link=True)
    assert (
        os.stat(tmp_path / "c" / "w").st_ino == os.stat(cache.blob_path(m.layers[0].digest)).st_ino
    )


# ------------------------------------------------- a cached blob pruned mid-pull


@pytest.mark.parametrize("link", [False, True])
def test_cached_blob_removed_after_the_check_is_fetched_again(tmp_path, monkeypatch, link):
    """`cache prune` in another process may unlink a cached blob between the pull's
    "is it cached?" and its open: the pull fetches it instead of failing, and a hard
    link made before the blob vanished is unlinked, never truncated."""
    data = {name: os.urandom(3000) for name in ("a.bin", "b.bin")}
    src, manifest = source_with(data)
    layers = manifest.layers
    cache = LayoutStore(tmp_path / "store", fsync=False)
    first = unpack(src, manifest, tmp_path / "one", cache=cache, fsync=False, cache_mode="copy")
    assert first.bytes_fetched == 6000
    # prune removes a.bin's blob after the pull saw it in the cache
    gone = layers[0].digest
    os.unlink(cache.blob_path(gone))
    real_has = LayoutStore.has_blob
    monkeypatch.setattr(LayoutStore, "has_blob", lambda self, d: d == gone or real_has(self, d))
    again = unpack(
        src, manifest, tmp_path / "two", cache=cache, fsync=False, link=link, cache_mode="copy"
    )
    assert again.bytes_fetched == 3000 and again.bytes_from_cache == 3000
    for name, blob in data.items():
        assert (tmp_path / "two" / name).read_bytes() == blob
    # the other cached blob is intact (nothing truncated through a hard link)
    other = cache.blob_path(layers[1].digest)
    assert other.read_bytes() == data["b.bin"]
