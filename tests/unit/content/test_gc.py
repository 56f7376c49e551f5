"""Disk use and pruning of the local store (modelreg.content.gc), with the bounded chunk store
beside it (modelreg.cache, which `modelreg cache` calls)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path

import pytest

from modelreg import cache
from modelreg.client import Client, RemoteOptions
from modelreg.content import LayoutStore
from modelreg.errors import InvalidInputError, NotFoundError
from modelreg.events import Event
from modelreg.lazy import open_model
from modelreg.lazy._cache import TRIM_EVERY, ChunkStore
from modelreg.lazy.handle import CHUNK_STORE_DIR
from modelreg.oci import Descriptor
from modelreg.oci import mediatypes as mt
from modelreg.oci.digest import Digest

HOUR = 3600
DAY = 24 * HOUR


def write_model(root: Path, name: str) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": name}))
    (root / "model.safetensors").write_bytes(os.urandom(6000))
    (root / "README.md").write_text("shared by both models")
    return root


def blobs(store: Path) -> dict[str, int]:
    """Every blob in the layout: digest -> size."""
    out = {}
    for alg in (store / "blobs").iterdir():
        for f in alg.iterdir():
            out[f"{alg.name}:{f.name}"] = f.stat().st_size
    return out


def age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture
def client(tmp_path: Path):
    with Client(RemoteOptions(store=str(tmp_path / "store"), fsync=False)) as c:
        yield c


@pytest.fixture
def two_models(tmp_path: Path, client: Client) -> tuple[Path, dict[str, int], dict[str, int]]:
    """Model a and model b (both with a chunk index referrer) pushed; b's tag deleted.
    Returns the source of a, the blobs a alone needs, and the blobs that were b's only."""
    store = tmp_path / "store"
    src_a = write_model(tmp_path / "a", "a")
    client.push(src_a, "team/a:v1", chunk_index=True)
    only_a = blobs(store)
    client.push(write_model(tmp_path / "b", "b"), "team/b:v1", chunk_index=True)
    only_b = {d: n for d, n in blobs(store).items() if d not in only_a}
    assert len(only_b) == 6  # manifest, config, 2 files, chunk index, its referrer
    assert client.delete_tag("team/b:v1")
    return src_a, only_a, only_b


def test_prune_removes_exactly_the_unreferenced_blobs(tmp_path, client, two_models):
    src_a, only_a, only_b = two_models
    store = tmp_path / "store"
    before = cache.usage(store)
    assert (before.unreferenced_blobs, before.unreferenced_bytes) == (
        len(only_b),
        sum(only_b.values()),
    )
    assert (before.referenced_blobs, before.referenced_bytes) == (
        len(only_a),
        sum(only_a.values()),
    )
    assert before.tags == 1 and before.problems == ()
    events: list[Event] = []
    result = cache.prune(store, older_than=0, progress=events.append)
    assert set(result.removed_blobs) == set(only_b)
    assert result.blob_bytes == sum(only_b.values())
    assert blobs(store) == only_a
    assert sum("removed sha256:" in e.name for e in events) == len(only_b)
    # the referrer of the deleted model left index.json; the tagged one's stayed
    entries = LayoutStore(store, create=False).entries()
    assert {str(e.digest) for e in entries} <= set(only_a)
    assert len(entries) == 2 and len(result.dropped_entries) == 1
    assert result.problems == () and not result.blobs_skipped
    after = cache.usage(store)
    assert after.unreferenced_blobs == 0 and after.referenced_blobs == len(only_a)
    out = tmp_path / "out"
    client.pull("team/a:v1", out)
    for name in ("config.json", "model.safetensors", "README.md"):
        assert (out / name).read_bytes() == (src_a / name).read_bytes()
    assert client.referrers("team/a:v1")  # the chunk index referrer is still there
    assert cache.prune(store, older_than=0).removed_blobs == ()


def test_recent_blobs_are_kept_and_old_ones_go(tmp_path, client, two_models):
    _src, _only_a, only_b = two_models
    store = tmp_path / "store"
    kept = cache.prune(store)  # default: an hour
    assert kept.removed_blobs == () and kept.kept_recent_blobs == len(only_b)
    old = sorted(only_b)[0]
    age(store / "blobs" / "sha256" / old.split(":")[1], 2 * HOUR)
    result = cache.prune(store, older_than=HOUR)
    assert result.removed_blobs == (old,)
    assert result.kept_recent_blobs == len(only_b) - 1
    assert set(blobs(store)) >= set(only_b) - {old}


def test_blobs_cached_by_a_pull_are_unreferenced(tmp_path, client):
    layout = tmp_path / "layout"
    src = write_model(tmp_path / "m", "m")
    client.push(src, f"oci:{layout}:v1")
    client.pull(f"oci:{layout}:v1", tmp_path / "out", cache_mode="copy")
    store = tmp_path / "store"
    cached = blobs(store)
    assert len(cached) == 3  # the three files; manifests and config are not cached
    info = cache.usage(store)
    assert info.referenced_blobs == 0 and info.unreferenced_blobs == 3
    assert set(cache.prune(store, older_than=0).removed_blobs) == set(cached)
    again = tmp_path / "again"
    client.pull(f"oci:{layout}:v1", again, cache_mode="copy")
    assert (again / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()


def test_dry_run_removes_nothing_and_reports_the_same(tmp_path, client, two_models):
    store = tmp_path / "store"
    stale = store / "ingest" / "0123456789abcdef-leftover"
    stale.write_bytes(b"x" * 10)
    age(stale, 2 * DAY)
    chunks = ChunkStore(store / CHUNK_STORE_DIR)
    for i in range(3):
        data = bytes([i]) * 100
        chunks.put(hashlib.sha256(data).digest(), data)
    before = snapshot(store)
    dry = cache.prune(store, older_than=0, max_chunk_bytes=150, dry_run=True)
    assert snapshot(store) == before
    real = cache.prune(store, older_than=0, max_chunk_bytes=150)
    assert dry.dry_run and not real.dry_run
    assert {**dry.to_dict(), "dryRun": None} == {**real.to_dict(), "dryRun": None}
    assert real.removed_blobs and real.temp_files == 1 and real.chunks == 2
    assert not stale.exists() and chunks.usage() == (1, 100)


def test_chunk_store_is_trimmed_least_recently_used_first(tmp_path):
    chunks = ChunkStore(tmp_path / "chunks")
    keys = []
    for i in range(6):
        data = bytes([i]) * 1000
        key = hashlib.sha256(data).digest()
        chunks.put(key, data)
        keys.append(key)
    now = time.time()
    for i, key in enumerate(keys):  # chunk 0 the least recently used
        t = now - 10 * HOUR + i * 60
        os.utime(chunks.path(key), (t, t))
    assert chunks.get(keys[0], 1000) == bytes([0]) * 1000  # a read refreshes it
    assert chunks.path(keys[0]).stat().st_mtime > now - 60
    result = chunks.trim(3500)
    assert (result.removed, result.removed_bytes, result.kept, result.kept_bytes) == (
        3,
        3000,
        3,
        3000,
    )
    assert [chunks.has(k) for k in keys] == [True, False, False, False, True, True]
    assert chunks.trim(3500).removed == 0


def test_get_touches_a_chunk_at_most_once_a_minute(tmp_path):
    chunks = ChunkStore(tmp_path / "chunks")
    data = b"z" * 100
    key = hashlib.sha256(data).digest()
    chunks.put(key, data)
    recent = time.time() - 30
    os.utime(chunks.path(key), (recent, recent))
    assert chunks.get(key, 100) == data
    assert chunks.path(key).stat().st_mtime == pytest.approx(recent, abs=0.01)


def test_prune_trims_the_chunk_store_of_the_store(tmp_path, client):
    store = tmp_path / "store"
    client.push(write_model(tmp_path / "m", "m"), "m:v1")
    chunks = ChunkStore(store / CHUNK_STORE_DIR)
    for i in range(4):
        data = bytes([i]) * 500
        chunks.put(hashlib.sha256(data).digest(), data)
    assert cache.usage(store).chunk_bytes == 2000
    result = cache.prune(store, max_chunk_bytes=0)
    assert (result.chunks, result.chunk_bytes, result.chunks_left) == (4, 2000, 0)
    assert cache.usage(store).chunks == 0


def test_a_bounded_chunk_store_trims_itself_every_so_many_puts(tmp_path):
    chunks = ChunkStore(tmp_path / "chunks", max_bytes=10 * 1000)
    for i in range(TRIM_EVERY - 1):
        data = i.to_bytes(2, "big") * 500
        chunks.put(hashlib.sha256(data).digest(), data)
    assert chunks.usage() == (TRIM_EVERY - 1, (TRIM_EVERY - 1) * 1000)  # not yet
    data = b"last" * 250
    chunks.put(hashlib.sha256(data).digest(), data)
    count, total = chunks.usage()
    assert 0 < total <= 9000 and count == total // 1000
    too_big = b"b" * 10001
    chunks.put(hashlib.sha256(too_big).digest(), too_big)
    assert not chunks.has(hashlib.sha256(too_big).digest())


def test_chunk_store_limit_from_the_environment(tmp_path, monkeypatch):
    assert ChunkStore.from_env(tmp_path).max_bytes is None
    monkeypatch.setenv("MODELREG_CHUNK_CACHE_MAX", "20GiB")
    assert ChunkStore.from_env(tmp_path).max_bytes == 20 * 1024**3
    monkeypatch.setenv("MODELREG_CHUNK_CACHE_MAX", "0")
    assert ChunkStore.from_env(tmp_path).max_bytes == 0
    monkeypatch.setenv("MODELREG_CHUNK_CACHE_MAX", "lots")
    with pytest.raises(InvalidInputError, match="MODELREG_CHUNK_CACHE_MAX") as err:
        ChunkStore.from_env(tmp_path)
    assert err.value.hint and "20GiB" in err.value.hint
    assert cache.parse_size_limit("512m") == 512 * 1024**2
    with pytest.raises(InvalidInputError):
        cache.parse_size_limit("12")  # under 4 KiB and not 0


def test_lazy_reads_use_the_limit_and_survive_a_trim(tmp_path, client, monkeypatch):
    layout = tmp_path / "layout"
    src = write_model(tmp_path / "m", "m")
    client.push(src, f"oci:{layout}:v1", chunk_index=True)
    monkeypatch.setenv("MODELREG_CHUNK_CACHE_MAX", "64MiB")  # read when a Client is made
    with Client(client.options) as limited, open_model(limited, f"oci:{layout}:v1") as h:
        assert h._engine.chunk_store is not None
        assert h._engine.chunk_store.max_bytes == 64 * 1024**2
        with h.open("model.safetensors") as f:
            assert f.read() == (src / "model.safetensors").read_bytes()
    store = tmp_path / "store"
    assert cache.usage(store).chunks > 0
    assert cache.prune(store, max_chunk_bytes=0).chunks > 0
    with open_model(client, f"oci:{layout}:v1") as h, h.open("model.safetensors") as f:
        assert f.read() == (src / "model.safetensors").read_bytes()


def test_a_reader_keeps_its_open_blob_and_later_ones_see_it_absent(tmp_path, client):
    layout = tmp_path / "layout"
    src = write_model(tmp_path / "m", "m")
    client.push(src, f"oci:{layout}:v1")
    client.pull(f"oci:{layout}:v1", tmp_path / "out", cache_mode="copy")
    store = client.store
    payload = (src / "model.safetensors").read_bytes()
    desc = Descriptor.for_bytes("application/octet-stream", payload)
    with open(store.blob_path(desc.digest), "rb") as reader:
        removed = cache.prune(store, older_than=0).removed_blobs
        assert desc.digest in {Digest.parse(d) for d in removed}
        assert reader.read() == payload  # unlinked, not truncated
    target = store.target(None)
    assert not store.has_blob(desc.digest) and not target.exists(desc)
    with pytest.raises(NotFoundError):
        target.fetch(desc)


def test_unknown_files_are_left_alone_and_counted(tmp_path, client, two_models):
    store = tmp_path / "store"
    odd = [
        store / "blobs" / "sha256" / "not-a-digest",
        store / "blobs" / "md5" / "d41d8cd98f00b204e9800998ecf8427e",
        store / "notes.txt",
        store / CHUNK_STORE_DIR / "sha256" / "zz" / "junk",
    ]
    for path in odd:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"keep me")
        age(path, 10 * DAY)
    (store / "blobs" / "sha256" / "a-directory").mkdir()
    info = cache.usage(store)
    assert (info.other_files, info.other_bytes) == (3, 14)  # two files and a directory
    assert info.problems == ()
    result = cache.prune(store, older_than=0, max_chunk_bytes=0)
    assert result.removed_blobs and result.problems == ()
    assert all(p.read_bytes() == b"keep me" for p in odd)


def test_stale_temp_files_go_fresh_ones_stay(tmp_path, client, two_models):
    store = tmp_path / "store"
    stale = [
        store / "ingest" / "aaaa",
        store / ".index.json.x1y2",
        store / CHUNK_STORE_DIR / "tmp" / "t",
    ]
    fresh = store / "ingest" / "bbbb"
    for path in [*stale, fresh]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"12345")
    for path in stale:
        age(path, 2 * DAY)
    info = cache.usage(store)
    assert (info.temp_files, info.temp_bytes) == (3, 15)
    result = cache.prune(store)
    assert (result.temp_files, result.temp_bytes) == (3, 15)
    assert not any(p.exists() for p in stale) and fresh.exists()


def test_a_damaged_store_is_reported_and_no_blob_is_removed(tmp_path, client, two_models):
    store = tmp_path / "store"
    index = store / "index.json"
    good = index.read_bytes()
    before = blobs(store)
    index.write_text("{not json")
    info = cache.usage(store)
    assert info.unreferenced_blobs == 0 and info.referenced_blobs == len(before)
    assert any("index.json" in p for p in info.problems)
    result = cache.prune(store, older_than=0)
    assert result.blobs_skipped and result.removed_blobs == () and blobs(store) == before
    index.unlink()
    result = cache.prune(store, older_than=0)
    assert result.blobs_skipped and blobs(store) == before
    assert any("index.json is missing" in p for p in result.problems)
    index.write_bytes(good)
    entries = LayoutStore(store, create=False).entries()
    tagged = next(e for e in entries if e.annotations.get(mt.ANN_REF_NAME))
    manifest = store / "blobs" / "sha256" / tagged.digest.hex
    manifest.write_bytes(manifest.read_bytes().replace(b"a", b"b", 1))
    result = cache.prune(store, older_than=0)
    assert result.blobs_skipped and result.removed_blobs == ()
    assert any("corrupt" in p for p in result.problems)
    manifest.unlink()
    result = cache.prune(store, older_than=0)
    assert result.blobs_skipped and any("missing" in p for p in result.problems)
    assert cache.usage(store).unreferenced_blobs == 0


def test_keep_tagged_false_treats_old_tags_as_cache(tmp_path, client):
    store = tmp_path / "store"
    client.push(write_model(tmp_path / "a", "a"), "team/a:v1", chunk_index=False)
    only_a = blobs(store)
    for digest in only_a:
        age(store / "blobs" / "sha256" / digest.split(":")[1], 2 * HOUR)
    src_b = write_model(tmp_path / "b", "b")
    client.push(src_b, "team/b:v1")
    result = cache.prune(store, keep_tagged=False, older_than=HOUR)
    assert result.dropped_entries == ("team/a:v1",)
    shared = set(only_a) & set(blobs(store))
    assert len(shared) == 1  # README.md, which b needs too
    assert set(result.removed_blobs) == set(only_a) - shared
    digest_b = str(client.resolve("team/b:v1")[2].digest)
    listed = [{"name": r["name"], "digest": r["digest"]} for r in client.list_store()]
    assert listed == [{"name": "team/b:v1", "digest": digest_b}]
    out = tmp_path / "out"
    client.pull("team/b:v1", out)
    assert (out / "model.safetensors").read_bytes() == (src_b / "model.safetensors").read_bytes()
    assert cache.prune(store, older_than=0).removed_blobs == ()  # what is left is tagged


def test_missing_and_foreign_stores(tmp_path):
    assert cache.usage(tmp_path / "nowhere") == cache.Usage(store=str(tmp_path / "nowhere"))
    assert cache.prune(tmp_path / "nowhere").removed_blobs == ()
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(NotFoundError):
        cache.usage(plain)
    with pytest.raises(InvalidInputError):
        cache.prune(plain, older_than=-1)
    with pytest.raises(InvalidInputError):
        cache.prune(plain, max_chunk_bytes=-1)


def test_a_writer_that_finds_an_old_blob_protects_it_from_prune(tmp_path, client):
    """A push that skips a blob because the store has it is about to reference it:
    the existence check refreshes the blob, so a concurrent prune spares it."""
    store = LayoutStore(tmp_path / "store", fsync=False)
    data = os.urandom(2000)
    desc = Descriptor.for_bytes(mt.model_layer("weight"), data)
    store.write_blob(desc, io.BytesIO(data))
    path = store.blob_path(desc.digest)
    age(path, DAY)
    assert store.target("team/llm").exists(desc)  # what a push does before skipping
    assert time.time() - path.stat().st_mtime < HOUR
    result = cache.prune(store, older_than=HOUR)
    assert str(desc.digest) not in result.removed_blobs and path.is_file()
    age(path, DAY)  # nothing refreshed it: unreferenced and old, it goes
    assert str(desc.digest) in cache.prune(store, older_than=HOUR).removed_blobs


def test_prune_changes_index_json_only_through_the_layout_store(
    tmp_path, client, two_models, monkeypatch
):
    """One index lock and one parser: the store's read-modify-write, not a copy of it."""
    locked: list[bool] = []
    real = LayoutStore._index_lock

    def spy(self: LayoutStore):
        locked.append(True)
        return real(self)

    monkeypatch.setattr(LayoutStore, "_index_lock", spy)
    result = cache.prune(tmp_path / "store", older_than=0)
    assert len(result.dropped_entries) == 1 and locked == [True]
    assert not list((tmp_path / "store").glob(".index.json.*"))


def test_a_full_disk_while_dropping_entries_is_a_problem_not_a_crash(
    tmp_path, client, two_models, monkeypatch
):
    import errno

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("modelreg.content.layout.atomic_write", full)
    result = cache.prune(tmp_path / "store", older_than=0)
    assert result.removed_blobs and result.dropped_entries == ()
    assert any("index.json not updated" in p and "disk is full" in p for p in result.problems)
