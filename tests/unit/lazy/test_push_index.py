"""The chunk index rides the digest pass of ``push`` (issue 17 item 1): one read per
byte on a cold push, none on a warm one, the same index as one built from the files."""

from __future__ import annotations

import builtins
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from modelreg.client import Client
from modelreg.lazy import chunkindex as ci
from modelreg.lazy import open_model
from modelreg.lazy.publish import (
    IndexAnnotator,
    add_chunk_index,
    find_chunk_index_referrer,
    index_descriptor_from_annotations,
)
from modelreg.model import digests
from modelreg.model.digests import ChunkGeometry, ChunkHasher, DigestCache
from modelreg.model.pack import pack_directory, scan_directory

MIB = 1024 * 1024


def write_big_model(root: Path) -> Path:
    """A safetensors file of a few 4 MiB chunks (with a head region), a plain file that
    is not a multiple of the chunk size, a small one and an empty one."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(17)
    tensors = {
        "a.weight": rng.integers(0, 255, (3 * MIB + 123,), dtype=np.uint8),
        "b.weight": rng.integers(0, 255, (5 * MIB,), dtype=np.uint8),
    }
    save_file(tensors, str(root / "model.safetensors"))
    (root / "blob.bin").write_bytes(os.urandom(9 * MIB + 7))
    (root / "config.json").write_text('{"architectures": ["X"]}')
    (root / "empty.txt").write_bytes(b"")
    return root


class ReadCounter:
    """Counts the bytes read through files that ``modelreg.model.digests`` opens."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes: dict[str, int] = {}
        self.opens: list[str] = []
        real_open = builtins.open
        counter = self

        class Counting:
            def __init__(self, f: Any, path: str) -> None:
                self._f = f
                self._path = path

            def readinto(self, buf: Any) -> int:
                n = self._f.readinto(buf) or 0
                counter.bytes[self._path] = counter.bytes.get(self._path, 0) + n
                return n

            def read(self, n: int = -1) -> bytes:
                data: bytes = self._f.read(n)
                counter.bytes[self._path] = counter.bytes.get(self._path, 0) + len(data)
                return data

            def __enter__(self) -> Counting:
                return self

            def __exit__(self, *exc: object) -> None:
                self._f.close()

        def counting_open(path: Any, *args: Any, **kwargs: Any) -> Counting:
            name = os.path.basename(os.fspath(path))
            self.opens.append(name)
            return Counting(real_open(path, *args, **kwargs), name)

        monkeypatch.setattr(digests, "open", counting_open, raising=False)


def _no_second_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a file was read a second time to index it")

    monkeypatch.setattr(ci, "hash_file_chunks", refuse)
    monkeypatch.setattr(digests, "hash_file", refuse)


@pytest.mark.parametrize("head", [0, 100, 4 * MIB, 4 * MIB + 1])
@pytest.mark.parametrize("block", [1, 4096, 3 * MIB + 5, 64 * MIB])
def test_chunk_hasher_matches_the_reference_in_any_block_size(tmp_path, head, block):
    data = os.urandom(9 * MIB + 11)
    path = tmp_path / "f"
    path.write_bytes(data)
    chunk = 64 * 1024 if block == 1 else 4 * MIB
    if block == 1:
        data = data[: 3 * chunk + 5]
        path.write_bytes(data)
        head = min(head, len(data))
    expected = ci.hash_file_chunks(path, "f", chunk_size=chunk, head=head)
    hasher = ChunkHasher(ChunkGeometry(chunk, head))
    step = 1000 if block == 1 else block
    for k in range(0, len(data), step):
        hasher.update(data[k : k + step])
    table = hasher.finish()
    assert table.size == len(data) and table.count == expected.count
    assert table.digests == expected.digests


def test_index_built_during_pack_equals_one_built_from_the_files(tmp_path):
    root = write_big_model(tmp_path / "m")
    separate = ci.build_chunk_index(scan_directory(root))
    for split in (False, True):
        indexer = IndexAnnotator()
        with DigestCache(tmp_path / f"d{split}.sqlite") as cache:
            packed = pack_directory(
                root,
                digest_cache=cache,
                chunking=ci.chunk_geometry,
                annotator=indexer,
                split=split,
                part_size="1MiB",
            )
        blob, desc = indexer.result()
        assert blob == separate, f"split={split}"
        named = index_descriptor_from_annotations(packed.manifest.annotations)
        assert named is not None and named.digest == desc.digest
        assert any(f.parts for f in packed.files) == split
    head = ci.parse_chunk_index(separate).files["model.safetensors"].head
    assert head > 0  # the safetensors header is its own region


def test_cold_push_reads_each_file_once_and_warm_push_reads_nothing(tmp_path, monkeypatch):
    root = write_big_model(tmp_path / "m")
    sizes = {p.name: p.stat().st_size for p in root.iterdir()}
    counter = ReadCounter(monkeypatch)
    _no_second_pass(monkeypatch)
    with Client() as client:
        first = client.push(root, "team/big:v1")
        assert counter.bytes == sizes
        assert sorted(counter.opens) == sorted(sizes)  # one open per file
        counter.bytes.clear()
        counter.opens.clear()
        again = client.push(root, "team/big:v2")
        assert counter.opens == [] and counter.bytes == {}
        assert again.digest == first.digest
        with open_model(client, "team/big:v1") as handle:
            assert handle.index is not None
            assert all(f.indexed for f in handle.files if f.size)
            assert not any("whole" in n for n in handle.notes)
            data = handle.read("blob.bin", 5 * MIB, 100)
        assert data == (root / "blob.bin").read_bytes()[5 * MIB : 5 * MIB + 100]
        found = find_chunk_index_referrer(
            client.resolve("team/big:v1")[1], client.resolve("team/big:v1")[2]
        )
        assert found is not None


def test_table_cached_but_not_digest_or_the_reverse_reads_once(tmp_path, monkeypatch):
    """A digest cached by a push without the index still needs one read for the table;
    it must not be two."""
    root = write_big_model(tmp_path / "m")
    with Client() as client:
        client.push(root, "team/big:v1", chunk_index=False)
        counter = ReadCounter(monkeypatch)
        _no_second_pass(monkeypatch)
        client.push(root, "team/big:v2")
        assert counter.bytes["blob.bin"] == (root / "blob.bin").stat().st_size


def test_no_chunk_index_writes_none(tmp_path):
    root = write_big_model(tmp_path / "m")
    with Client() as client:
        result = client.push(root, "team/big:v1", chunk_index=False)
        _, target, desc = client.resolve("team/big:v1")
        assert target.referrers(desc, ci.CHUNK_INDEX_ARTIFACT_TYPE) == []
        with open_model(client, "team/big:v1") as handle:
            assert ci.ANN_CHUNK_INDEX not in handle.manifest.annotations
            assert handle.index is None
            assert any("no chunk index" in n and "whole" in n for n in handle.notes)
        # `modelreg index` adds it as a referrer; the manifest digest does not change
        added = add_chunk_index(client, "team/big:v1")
        assert added.created and added.referrer is not None
        assert str(added.digest) == result.digest
        assert (
            added.index.digest
            == ci.chunk_index_descriptor(ci.build_chunk_index(scan_directory(root))).digest
        )
        again = add_chunk_index(client, "team/big:v1")
        assert again.source == "referrer" and not again.created
        forced = add_chunk_index(client, "team/big:v1", force=True)
        assert forced.created and forced.referrer == added.referrer  # deterministic
        with open_model(client, "team/big:v1", chunk_index_referrers=True) as handle:
            assert handle.index is not None
            assert any("referrer" in n for n in handle.notes)
            assert handle.read("blob.bin", 9 * MIB, 7) == (root / "blob.bin").read_bytes()[-7:]
        # unanchored by the manifest digest: not used unless asked for
        with open_model(client, "team/big:v1") as handle:
            assert handle.index is None


def test_index_on_a_default_push_is_reported_not_rebuilt(tmp_path):
    root = write_big_model(tmp_path / "m")
    with Client() as client:
        client.push(root, "team/big:v1")
        result = add_chunk_index(client, "team/big:v1", force=True)
        assert result.source == "manifest" and not result.created and result.bytes_read == 0


def test_digest_cache_keeps_tables_by_geometry(tmp_path):
    path = tmp_path / "f"
    data = os.urandom(5 * MIB)
    path.write_bytes(data)
    with DigestCache(tmp_path / "d.sqlite") as cache:
        d1, size, t1 = cache.digest_with_chunks(path, ChunkGeometry(MIB))
        assert d1.hex == hashlib.sha256(data).hexdigest() and size == len(data)
        _, _, t2 = cache.digest_with_chunks(path, ChunkGeometry(2 * MIB, 10))
        assert t1.count == 5 and t2.count == 1 + 3
        assert cache.digest_with_chunks(path, ChunkGeometry(MIB))[2] == t1
        path.write_bytes(os.urandom(5 * MIB))  # changed: never served from the cache
        assert cache.digest_with_chunks(path, ChunkGeometry(MIB))[2] != t1


def test_a_caller_chunk_index_annotation_is_refused_not_dropped(tmp_path):
    from modelreg.errors import InvalidInputError
    from modelreg.lazy.chunkindex import ANN_CHUNK_INDEX

    root = write_big_model(tmp_path / "m")
    with Client() as client:
        with pytest.raises(InvalidInputError, match="writes its own"):
            client.push(root, "team/big:v1", annotations={ANN_CHUNK_INDEX: "{}"})
        # with the push's own index off, the caller's annotation is the manifest's
        client.push(root, "team/big:v2", annotations={ANN_CHUNK_INDEX: "x"}, chunk_index=False)
        assert client.inspect("team/big:v2").manifest.annotations[ANN_CHUNK_INDEX] == "x"
