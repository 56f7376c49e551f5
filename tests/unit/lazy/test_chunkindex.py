"""The chunk index format: geometry, one-pass hashing, encoding, strict parsing."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import blake3
import pytest

from modelreg.errors import (
    FormatError,
    IntegrityError,
    InvalidInputError,
    SizeLimitError,
    UnsafeContentError,
)
from modelreg.lazy import chunkindex as ci
from modelreg.lazy._tablecache import TableCache
from modelreg.lazy.chunkindex import (
    DIGEST_SIZE,
    PAGE_CHUNKS,
    FileChunks,
    build_chunk_index,
    choose_chunk_size,
    chunk_index_descriptor,
    detect_head,
    hash_file_chunks,
    index_from_toc,
    parse_chunk_index,
    parse_toc,
    read_toc_length,
)
from modelreg.model.formats import FileSource, parse_gguf, parse_safetensors

KIB = 1024
ROOT = Path(__file__).resolve().parents[3]
TINY_LLM = ROOT / "testdata" / "models" / "tiny-llm"
TINY_GGUF = ROOT / "testdata" / "models" / "tiny-gguf" / "model.gguf"


def _toc(blob: bytes) -> tuple[dict, int]:
    n = read_toc_length(blob[:12], len(blob))
    return json.loads(blob[12 : 12 + n]), n


def _reference(algorithm: str, data: bytes) -> bytes:
    """The digest from the reference implementations, not from modelreg's helper."""
    if algorithm == "blake3":
        return blake3.blake3(data).digest()
    assert algorithm == "sha256"
    return hashlib.sha256(data).digest()


def _rebuild(doc: dict, tables: bytes) -> bytes:
    toc = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return struct.pack("<8sI", ci.MAGIC, len(toc)) + toc + tables


# ----------------------------------------------------------------------- geometry


def test_geometry_with_head_restarts_chunking_at_the_data_section():
    fc = FileChunks("m", size=300 * KIB, digest=None, chunk_size=64 * KIB, head=100 * KIB)  # type: ignore[arg-type]
    # head region: [0,64K) [64K,100K); data region from 100K in 64K steps
    assert fc.count == 2 + 4
    assert fc.bounds(0) == (0, 64 * KIB)
    assert fc.bounds(1) == (64 * KIB, 100 * KIB)
    assert fc.bounds(2) == (100 * KIB, 164 * KIB)
    assert fc.bounds(5) == (292 * KIB, 300 * KIB)
    covered = 0
    for i in range(fc.count):
        start, stop = fc.bounds(i)
        assert start == covered and stop > start
        covered = stop
        assert fc.index_of(start) == i and fc.index_of(stop - 1) == i
    assert covered == fc.size
    assert list(fc.span(99 * KIB, 2 * KIB)) == [1, 2]
    assert list(fc.span(0, 0)) == []
    assert list(fc.span(299 * KIB, 10 * KIB)) == [5]
    with pytest.raises(IndexError):
        fc.bounds(6)


def test_geometry_without_head_and_empty_file():
    fc = FileChunks("m", size=130 * KIB, digest=None, chunk_size=64 * KIB)  # type: ignore[arg-type]
    assert fc.count == 3 and fc.bounds(2) == (128 * KIB, 130 * KIB)
    empty = FileChunks("e", size=0, digest=None, chunk_size=64 * KIB)  # type: ignore[arg-type]
    assert empty.count == 0 and list(empty.span(0, 10)) == []


def test_choose_chunk_size_keeps_tables_bounded():
    assert choose_chunk_size(10 * 1024**3) == 4 * 1024**2
    assert choose_chunk_size(1024**4) == 4 * 1024**2  # 1 TiB: exactly 2**18 chunks
    big = choose_chunk_size(3 * 1024**4)
    assert big == 16 * 1024**2 and -(-3 * 1024**4 // big) <= ci.MAX_CHUNKS_PER_FILE


# ----------------------------------------------------------------------- hashing


@pytest.mark.parametrize("algorithm", [None, "blake3", "sha256"])
def test_hash_file_chunks_one_pass_matches_the_reference_hashes(tmp_path, algorithm):
    data = os.urandom(5 * 64 * KIB + 123)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    seen = []
    extra = {} if algorithm is None else {"algorithm": algorithm}
    fc = hash_file_chunks(path, "blob.bin", chunk_size=64 * KIB, on_bytes=seen.append, **extra)
    # the whole-file digest is the layer's: SHA-256 whatever digests the chunks
    assert fc.digest.hex == hashlib.sha256(data).hexdigest()
    assert fc.size == len(data) and fc.head == 0 and sum(seen) == len(data)
    assert fc.algorithm == (algorithm or "blake3")  # new indexes: BLAKE3 by default
    for i in range(fc.count):
        start, stop = fc.bounds(i)
        assert fc.digest_of(i) == _reference(fc.algorithm, data[start:stop])


def test_detect_head_matches_the_format_parsers():
    shard = TINY_LLM / "model-00001-of-00002.safetensors"
    with FileSource(shard) as src:
        assert detect_head(shard) == parse_safetensors(src).header_size
    with FileSource(TINY_GGUF) as src:
        assert detect_head(TINY_GGUF) == parse_gguf(src).header_size
    assert detect_head(TINY_LLM / "config.json") == 0


def test_detect_head_is_zero_for_garbage(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(struct.pack("<Q", 50) + b"{not json" + b"\0" * 100)
    assert detect_head(bad) == 0
    fake = tmp_path / "y.gguf"
    fake.write_bytes(b"GGUF" + b"\xff" * 40)
    assert detect_head(fake) == 0


def test_safetensors_head_chunk_is_exactly_the_header():
    shard = TINY_LLM / "model-00001-of-00002.safetensors"
    fc = hash_file_chunks(shard, chunk_size=64 * KIB)
    with FileSource(shard) as src:
        header = parse_safetensors(src).header_size
    assert fc.head == header and fc.bounds(0) == (0, header)


# ----------------------------------------------------------------------- encode/parse


def test_build_and_parse_roundtrip_is_deterministic():
    files = [(p.name, p) for p in sorted(TINY_LLM.iterdir())]
    blob = build_chunk_index(files, chunk_size=64 * KIB)
    assert blob == build_chunk_index(files, chunk_size=64 * KIB)
    index = parse_chunk_index(blob)
    doc, _ = _toc(blob)
    assert doc["algorithm"] == "blake3" and index.algorithm == "blake3"
    assert set(index.files) == {name for name, _ in files}
    for name, path in files:
        data = path.read_bytes()
        fc = index.files[name]
        assert fc.algorithm == "blake3"
        assert fc.size == len(data) and fc.digest.hex == hashlib.sha256(data).hexdigest()
        for i in range(fc.count):
            start, stop = fc.bounds(i)
            assert fc.digest_of(i) == blake3.blake3(data[start:stop]).digest()
        # page digests are BLAKE3 too: one algorithm per index document
        assert fc.page_digests == (blake3.blake3(fc.table()).digest(),)
    desc = chunk_index_descriptor(blob)
    assert desc.size == len(blob)
    assert int(desc.annotations[ci.ANN_TOC_SIZE]) == 12 + read_toc_length(blob[:12], len(blob))


def test_index_of_a_4_gib_model_is_small(tmp_path):
    # geometry only: 4 GiB at 4 MiB chunks = 1024 chunks = 32 KiB of digests
    fc = FileChunks(
        "model.safetensors",
        4 * 1024**3 + 7000,
        digest=None,
        chunk_size=4 * 1024**2,
        head=7000,  # type: ignore[arg-type]
    )
    assert fc.count * DIGEST_SIZE <= 33 * KIB


def test_two_level_pages_are_verified_against_the_toc(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(64 * KIB * (PAGE_CHUNKS + 5)))
    blob = build_chunk_index([("big.bin", path)], chunk_size=64 * KIB)
    toc_len = read_toc_length(blob[:12], len(blob))
    files = parse_toc(blob[12 : 12 + toc_len], len(blob))
    assert len(files[0].page_digests) == 2
    calls = []

    def loader(fc: FileChunks, page: int) -> bytes:
        calls.append(page)
        off, n = fc.page_range(page)
        return blob[off : off + n]

    index = index_from_toc(files, loader)
    full = parse_chunk_index(blob).files["big.bin"]
    fc = index.files["big.bin"]
    assert fc.digest_of(PAGE_CHUNKS + 2) == full.digest_of(PAGE_CHUNKS + 2)
    assert calls == [1]
    assert fc.digest_of(3) == full.digest_of(3) and calls == [1, 0]
    fc.digest_of(4)
    assert calls == [1, 0]  # cached

    def bad_loader(fc: FileChunks, page: int) -> bytes:
        off, n = fc.page_range(page)
        data = bytearray(blob[off : off + n])
        data[5] ^= 1
        return bytes(data)

    tampered = index_from_toc(parse_toc(blob[12 : 12 + toc_len], len(blob)), bad_loader)
    with pytest.raises(IntegrityError, match="page 0"):
        tampered.files["big.bin"].digest_of(0)


@pytest.fixture
def small_blob(tmp_path) -> bytes:
    a = tmp_path / "a.bin"
    a.write_bytes(os.urandom(200 * KIB))
    b = tmp_path / "b.bin"
    b.write_bytes(b"hello")
    return build_chunk_index([("a.bin", a), ("dir/b.bin", b)], chunk_size=64 * KIB)


def test_parse_refuses_bad_magic_and_huge_toc(small_blob):
    with pytest.raises(FormatError, match="magic"):
        parse_chunk_index(b"XXXXXXXX" + small_blob[8:])
    huge = struct.pack("<8sI", ci.MAGIC, ci.MAX_TOC_BYTES + 1) + small_blob[12:]
    with pytest.raises(SizeLimitError):
        parse_chunk_index(huge)
    with pytest.raises(FormatError):
        parse_chunk_index(small_blob[:10])


def test_parse_refuses_trailing_or_missing_table_bytes(small_blob):
    with pytest.raises(FormatError, match="tables end"):
        parse_chunk_index(small_blob + b"\0")
    with pytest.raises(FormatError):
        parse_chunk_index(small_blob[:-1])


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        (lambda d: d["files"][0].update(path="../escape"), UnsafeContentError, "escapes"),
        (lambda d: d["files"][0].update(path="/abs"), UnsafeContentError, "absolute"),
        (lambda d: d["files"][1].update(path="a.bin"), FormatError, "twice"),
        (lambda d: d["files"][0].update(chunkSize=1000), FormatError, "power of two"),
        (lambda d: d["files"][0].update(chunks=99), FormatError, "disagrees"),
        (lambda d: d["files"][0].update(head=10**12), FormatError, "integer"),
        (lambda d: d["files"][0].update(digest="md5:abc"), FormatError, "digest"),
        (lambda d: d["files"][0].update(table=0), FormatError, "contiguous"),
        (lambda d: d["files"][0].update(pages=[]), FormatError, "page digests"),
        (lambda d: d["files"][0]["pages"].__setitem__(0, "0" * 64), FormatError, "TOC digest"),
        (lambda d: d.update(algorithm="md5"), FormatError, "not supported"),
        (lambda d: d.update(files="x"), FormatError, "not a list"),
        (lambda d: d["files"][0].update(size=-1), FormatError, "integer"),
    ],
)
def test_parse_refuses_malformed_toc(small_blob, mutate, error, match):
    doc, n = _toc(small_blob)
    tables = small_blob[12 + n :]
    mutate(doc)
    bad = _rebuild(doc, tables)
    # keep table offsets consistent with the new TOC length unless the test broke them
    if "table" not in match and "contiguous" not in match:
        new_n = read_toc_length(bad[:12], len(bad))
        shift = new_n - n
        if isinstance(doc.get("files"), list):
            for entry in doc["files"]:
                if isinstance(entry, dict) and isinstance(entry.get("table"), int):
                    entry["table"] += shift
            bad = _rebuild(doc, tables)
            if read_toc_length(bad[:12], len(bad)) != new_n:  # digit count changed
                for entry in doc["files"]:
                    entry["table"] += read_toc_length(bad[:12], len(bad)) - new_n
                bad = _rebuild(doc, tables)
    with pytest.raises(error, match=match):
        parse_chunk_index(bad)


def test_parse_refuses_duplicate_keys_and_nan(small_blob):
    _, n = _toc(small_blob)
    toc = small_blob[12 : 12 + n].replace(
        b'"algorithm":"blake3"', b'"algorithm":"blake3","algorithm":"blake3"', 1
    )
    bad = struct.pack("<8sI", ci.MAGIC, len(toc)) + toc + small_blob[12 + n :]
    with pytest.raises(FormatError, match="more than once"):
        parse_chunk_index(bad)
    toc2 = small_blob[12 : 12 + n].replace(b'"pageChunks":1024', b'"pageChunks":NaN', 1)
    bad2 = struct.pack("<8sI", ci.MAGIC, len(toc2)) + toc2 + small_blob[12 + n :]
    with pytest.raises(FormatError, match="NaN"):
        parse_chunk_index(bad2)


def test_table_cache_reuses_tables_of_unchanged_files(tmp_path, monkeypatch):
    path = tmp_path / "w.bin"
    path.write_bytes(os.urandom(100 * KIB))
    cache = TableCache(tmp_path / "cache")
    first = cache.get_or_compute("w.bin", path, chunk_size=64 * KIB)
    calls = []
    real = ci.hash_file_chunks

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr("modelreg.lazy._tablecache.hash_file_chunks", spy)
    again = cache.get_or_compute("w.bin", path, chunk_size=64 * KIB)
    assert calls == [] and again.table() == first.table() and again.digest == first.digest
    path.write_bytes(os.urandom(100 * KIB))  # new content, new mtime
    changed = cache.get_or_compute("w.bin", path, chunk_size=64 * KIB)
    assert len(calls) == 1 and changed.digest != first.digest


# ----------------------------------------------------------------------- chunk digest algorithms


def _old_sha256_index(files: list[tuple[str, bytes]], chunk: int) -> bytes:
    """An index blob exactly as modelreg wrote it before BLAKE3 (algorithm "sha256":
    SHA-256 chunk and page digests), built here with hashlib alone."""
    tables = [
        b"".join(hashlib.sha256(data[o : o + chunk]).digest() for o in range(0, len(data), chunk))
        for _, data in files
    ]
    toc = b""
    for _ in range(4):  # table offsets depend on the TOC's length
        position = 12 + len(toc)
        entries = []
        for (path, data), table in zip(files, tables, strict=True):
            entries.append(
                {
                    "chunkSize": chunk,
                    "chunks": len(table) // 32,
                    "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
                    "head": 0,
                    "pages": [hashlib.sha256(table).hexdigest()],
                    "path": path,
                    "size": len(data),
                    "table": position,
                }
            )
            position += len(table)
        doc = {"algorithm": "sha256", "files": entries, "pageChunks": PAGE_CHUNKS}
        toc = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return struct.pack("<8sI", ci.MAGIC, len(toc)) + toc + b"".join(tables)


def test_a_sha256_index_written_before_blake3_is_still_read(tmp_path):
    data = os.urandom(3 * 64 * KIB + 5)
    (tmp_path / "w.bin").write_bytes(data)
    old = _old_sha256_index([("w.bin", data)], 64 * KIB)
    index = parse_chunk_index(old)
    fc = index.files["w.bin"]
    assert index.algorithm == "sha256" and fc.algorithm == "sha256"
    for i in range(fc.count):
        start, stop = fc.bounds(i)
        assert fc.digest_of(i) == hashlib.sha256(data[start:stop]).digest()
        assert fc.hash_chunk(data[start:stop]) == fc.digest_of(i)
        assert fc.hash_chunk(b"other bytes") != fc.digest_of(i)
    # asked for, the old format is still written byte for byte
    written = build_chunk_index(
        [("w.bin", tmp_path / "w.bin")], chunk_size=64 * KIB, algorithm="sha256"
    )
    assert written == old
    # and paged reads of it verify pages with SHA-256
    _, toc_len = _toc(old)
    paged = index_from_toc(
        parse_toc(old[12 : 12 + toc_len], len(old)),
        lambda f, p: old[f.page_range(p)[0] : sum(f.page_range(p))],
    )
    assert paged.files["w.bin"].table() == fc.table()


def test_a_blake3_index_is_the_default_and_differs_from_the_sha256_one(tmp_path):
    data = os.urandom(2 * 64 * KIB)
    (tmp_path / "w.bin").write_bytes(data)
    files = [("w.bin", tmp_path / "w.bin")]
    new = build_chunk_index(files, chunk_size=64 * KIB)
    assert _toc(new)[0]["algorithm"] == "blake3"
    assert new == build_chunk_index(files, chunk_size=64 * KIB, algorithm="blake3")
    assert new != build_chunk_index(files, chunk_size=64 * KIB, algorithm="sha256")
    fc = parse_chunk_index(new).files["w.bin"]
    assert fc.digest_of(0) == blake3.blake3(data[: 64 * KIB]).digest()
    assert fc.digest_of(0) != hashlib.sha256(data[: 64 * KIB]).digest()


@pytest.mark.parametrize(
    "algorithm", ["md5", "sha512", "blake2b", "BLAKE3", "sha-256", "", None, 1]
)
def test_an_unknown_algorithm_is_refused_by_name(small_blob, algorithm):
    doc, n = _toc(small_blob)
    doc["algorithm"] = algorithm
    if algorithm is None:
        del doc["algorithm"]
    bad = _rebuild(doc, small_blob[12 + n :])
    # the TOC grew or shrank: move the table offsets with it
    doc["files"][0]["table"] += read_toc_length(bad[:12], len(bad)) - n
    doc["files"][1]["table"] += read_toc_length(bad[:12], len(bad)) - n
    bad = _rebuild(doc, small_blob[12 + n :])
    with pytest.raises(FormatError, match=f"algorithm {algorithm!r} is not supported"):
        parse_chunk_index(bad)


@pytest.mark.parametrize(("written", "claimed"), [("sha256", "blake3"), ("blake3", "sha256")])
def test_an_index_relabelled_to_the_other_algorithm_fails_its_page_digests(
    tmp_path, written, claimed
):
    (tmp_path / "w.bin").write_bytes(os.urandom(100 * KIB))
    blob = build_chunk_index(
        [("w.bin", tmp_path / "w.bin")], chunk_size=64 * KIB, algorithm=written
    )
    doc, n = _toc(blob)
    doc["algorithm"] = claimed  # same length: the table offsets hold
    with pytest.raises(FormatError, match="does not match its TOC digest"):
        parse_chunk_index(_rebuild(doc, blob[12 + n :]))


def test_one_index_document_has_one_algorithm(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"a" * 1000)
    (tmp_path / "b.bin").write_bytes(b"b" * 1000)
    a = hash_file_chunks(tmp_path / "a.bin", "a.bin", algorithm="sha256")
    b = hash_file_chunks(tmp_path / "b.bin", "b.bin", algorithm="blake3")
    with pytest.raises(InvalidInputError, match="different algorithms"):
        ci.encode_chunk_index([a, b])
    with pytest.raises(ValueError, match="md5"):
        hash_file_chunks(tmp_path / "a.bin", "a.bin", algorithm="md5")


def test_table_cache_keeps_algorithms_apart(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(os.urandom(100 * KIB))
    cache = TableCache(tmp_path / "cache")
    old = cache.get_or_compute("w.bin", path, chunk_size=64 * KIB, algorithm="sha256")
    new = cache.get_or_compute("w.bin", path, chunk_size=64 * KIB)
    assert (old.algorithm, new.algorithm) == ("sha256", "blake3")
    assert new.table() != old.table()
    assert new.digest_of(0) == blake3.blake3(path.read_bytes()[: 64 * KIB]).digest()
    again = cache.get_or_compute("w.bin", path, chunk_size=64 * KIB, algorithm="sha256")
    assert again.algorithm == "sha256" and again.table() == old.table()
