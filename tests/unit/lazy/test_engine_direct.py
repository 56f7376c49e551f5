"""The engine's read path: reads land in the caller's buffer, concurrent reads of a chunk
share one fetch, read-ahead is bounded, and unverified bytes never reach a caller."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from modelreg.content.memory import MemoryTarget
from modelreg.errors import IntegrityError
from modelreg.lazy import open_model
from modelreg.oci.descriptor import Descriptor
from tests.unit.lazy.helpers import CHUNK, CountingTarget, publish

SIZE = 32 * CHUNK  # 2 MiB in 64 KiB chunks


@pytest.fixture
def blob_model(tmp_path: Path) -> tuple[CountingTarget, bytes]:
    root = tmp_path / "blobmodel"
    root.mkdir()
    data = np.random.default_rng(7).integers(0, 255, SIZE, dtype=np.uint8).tobytes()
    (root / "blob.bin").write_bytes(data)
    inner = MemoryTarget()
    publish(inner, root)
    return CountingTarget(inner), data


def test_whole_chunks_land_in_the_callers_buffer_and_are_not_cached(blob_model, tmp_path):
    target, data = blob_model
    with open_model(target, "v1", cache=tmp_path / "c", readahead=0, chunk_cache=False) as h:
        target.reset()
        buf = bytearray(4 * CHUNK)
        assert h.readinto("blob.bin", 2 * CHUNK, buf) == len(buf)
        assert bytes(buf) == data[2 * CHUNK : 6 * CHUNK]
        assert h._engine.memory.size == 0  # straight into buf: nothing kept
        assert target.bytes == 4 * CHUNK
        h.readinto("blob.bin", 2 * CHUNK, buf)  # read again: fetched again
        assert target.bytes == 8 * CHUNK
        assert h.stats["chunksFromMemory"] == 0
        # a read of part of a chunk (random access) keeps the chunk for the next read
        target.reset()
        assert h.read("blob.bin", 10 * CHUNK + 5, 100) == data[10 * CHUNK + 5 : 10 * CHUNK + 105]
        assert h._engine.memory.size == CHUNK
        assert h.read("blob.bin", 10 * CHUNK + 200, 50) == data[10 * CHUNK + 200 : 10 * CHUNK + 250]
        assert target.bytes == CHUNK


def test_tampered_chunk_read_into_the_callers_buffer_is_wiped_and_refused(blob_model, tmp_path):
    target, data = blob_model

    def flip(desc: Descriptor, offset: int, chunk: bytes) -> bytes:
        if len(chunk) < CHUNK:
            return chunk  # the index
        mutable = bytearray(chunk)
        mutable[-1] ^= 0x01  # the last byte of the range: the last chunk is wrong
        return bytes(mutable)

    with open_model(target, "v1", cache=tmp_path / "c", readahead=0) as h:
        target.tamper = flip
        buf = bytearray(b"\xaa" * (3 * CHUNK))
        with pytest.raises(IntegrityError, match="chunk index says"):
            h.readinto("blob.bin", 0, buf)
        # nothing unverified is left in the buffer (wiped), and nothing was cached
        assert bytes(buf) == bytes(len(buf))
        assert h._engine.memory.size == 0
        assert h.stats["integrityFailures"] >= 1
        target.tamper = None
        assert h.readinto("blob.bin", 0, buf) == len(buf)
        assert bytes(buf) == data[: 3 * CHUNK]


def test_concurrent_reads_of_a_chunk_share_one_fetch_and_get_verified_copies(blob_model, tmp_path):
    target, data = blob_model
    readers = 6
    released = threading.Event()

    def held(desc: Descriptor, offset: int, chunk: bytes) -> bytes:
        # the fetch stays in flight until every reader has joined it: no timing involved
        assert released.wait(timeout=60), "the fetch was never released"
        return chunk

    with open_model(target, "v1", cache=tmp_path / "c", readahead=0, chunk_cache=False) as h:
        engine = h._engine
        target.reset()
        target.tamper = held
        barrier = threading.Barrier(readers)
        results: list[bytes] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def reader() -> None:
            buf = bytearray(4 * CHUNK)
            barrier.wait()
            try:
                h.readinto("blob.bin", 8 * CHUNK, buf)
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                return
            snapshot = bytes(buf)
            buf[:] = b"\xff" * len(buf)  # the owner reuses its buffer at once
            with lock:
                results.append(snapshot)

        def all_joined() -> bool:
            with engine._lock:
                pending = list(engine._inflight.values())
            # the four chunks in flight, each fetched by one reader and awaited by the rest
            return len(pending) == 4 and all(p.waiters == readers - 1 for p in pending)

        threads = [threading.Thread(target=reader) for _ in range(readers)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while not all_joined() and time.monotonic() < deadline:
            time.sleep(0.001)
        joined = all_joined()
        released.set()  # even on failure, so that the readers finish
        for t in threads:
            t.join()
        assert joined, "the readers did not all join one in-flight fetch"
        assert errors == []
        assert results == [data[8 * CHUNK : 12 * CHUNK]] * readers
        assert target.bytes == 4 * CHUNK  # one fetch for all six readers
        assert len(target.range_calls) == 1  # by one reader: the range is never split


def test_readahead_is_bounded_by_what_no_reader_reached_yet(blob_model, tmp_path):
    target, data = blob_model
    budget = 4 * CHUNK
    with open_model(target, "v1", cache=tmp_path / "c", readahead=budget, chunk_cache=False) as h:
        engine = h._engine
        target.reset()
        fh = h.open("blob.bin", buffering=0)
        got = fh.read(CHUNK)
        f = h.model_file("blob.bin")
        # two read-ahead requests before anyone reads: the second waits for the first's
        # chunks to be read (they count against the budget until then)
        engine.prefetch(f, CHUNK, budget, budget=budget)
        deadline = time.monotonic() + 5
        while engine._inflight and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine._ahead_bytes == budget
        engine.prefetch(f, CHUNK + budget, budget, budget=budget)
        assert not engine._inflight  # over budget: not started
        fetched = target.bytes
        got += fh.read(budget)  # reaches the read-ahead chunks: the budget is free again
        assert engine._ahead_bytes == 0
        assert target.bytes == fetched  # served from the read-ahead, nothing fetched twice
        got += fh.read()
        assert got == data
