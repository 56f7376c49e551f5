"""Sequential streams (issue 17 item 4) against a real Distribution registry.

Several threads each reading a file sequentially get one long Range request each
(``modelreg.lazy._stream``) instead of a request per read; these tests check what
they return (every byte verified, nothing tampered ever visible) and what they
cost (requests, bytes) with readers whose buffers are unaligned, larger and
smaller than a chunk, and windows that end inside chunks.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from modelreg.client import Client, RemoteOptions
from modelreg.errors import IntegrityError
from modelreg.lazy import ModelHandle, open_model
from modelreg.lazy._engine import READAHEAD_TRIGGER
from tests.integration.lazy_proxy import LazyProxy
from tests.isolation import isolate
from tests.unit.lazy.helpers import CHUNK, publish

SIZE = 640 * CHUNK + 12_345  # 641 chunks, the last one short; 10 MiB a reader of four


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    isolate(tmp_path, monkeypatch, fsync=True)


@pytest.fixture
def blob(tmp_path) -> tuple[Path, bytes]:
    root = tmp_path / "model"
    root.mkdir()
    data = np.random.default_rng(17).integers(0, 256, SIZE, dtype=np.uint8).tobytes()
    (root / "blob.bin").write_bytes(data)
    return root, data


def client_for(tmp_path: Path, name: str) -> Client:
    return Client(RemoteOptions(plain_http=True, store=str(tmp_path / name), fsync=False))


def push(host: str, root: Path, tmp_path: Path) -> str:
    repo = f"streams/{uuid.uuid4().hex[:10]}"
    with client_for(tmp_path, "push-store") as client:
        publish(client.target(f"{host}/{repo}"), root, chunk_size=CHUNK)
    return repo


def read_quarters(
    h: ModelHandle,
    sizes: list[int],
    *,
    failed: dict[int, tuple[int, bytes]] | None = None,
    path: str = "blob.bin",
) -> tuple[list[bytes], list[BaseException]]:
    """Reader k reads its part of blob.bin (parts split at unaligned offsets) in reads
    of ``sizes[k]`` bytes through the raw file; what each got, and what each raised.
    ``failed`` gets, per reader whose read raised, that read's offset and what its
    buffer (zeroed before each read) held afterwards."""
    readers = len(sizes)
    size = h.model_file(path).size
    cut = [k * size // readers + 1_000 * k for k in range(readers)] + [size]
    got: list[bytearray] = [bytearray() for _ in range(readers)]
    errors: list[BaseException] = []
    waited = [False] * readers
    gate = threading.Barrier(readers)

    def reader(k: int) -> None:
        try:
            with h.open(path, buffering=0) as fh:
                fh.seek(cut[k])
                buf = bytearray(sizes[k])
                left = cut[k + 1] - cut[k]
                while left > 0:
                    buf[:] = bytes(len(buf))
                    try:
                        n = fh.readinto(memoryview(buf)[: min(len(buf), left)])
                    except BaseException:
                        if failed is not None:
                            failed[k] = (cut[k] + len(got[k]), bytes(buf))
                        raise
                    assert n, "a read returned nothing before the end"
                    got[k] += buf[:n]
                    left -= n
                    if len(got[k]) >= READAHEAD_TRIGGER and not waited[k]:
                        waited[k] = True
                        gate.wait(timeout=30)  # every reader counted as sequential
        except BaseException as exc:  # the test looks at each
            errors.append(exc)
            if not waited[k]:
                gate.abort()

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return [bytes(g) for g in got], errors


def test_sequential_readers_each_stream_their_part_once(registry_plain, blob, tmp_path):
    root, data = blob
    repo = push(registry_plain.host, root, tmp_path)
    with (
        client_for(tmp_path, "store") as client,
        # read-ahead before the streams start may run into the next reader's part (and
        # fetch what that reader's stream fetches too): a small window keeps that small
        open_model(
            client,
            f"{registry_plain.host}/{repo}:v1",
            chunk_cache=False,
            concurrency=4,
            readahead=2 * CHUNK,
        ) as h,
    ):
        parts, errors = read_quarters(h, [5 * CHUNK // 2, 2 * CHUNK, 8 * CHUNK, CHUNK // 3])
        assert errors == []
        assert b"".join(parts) == data
        stats = h.stats
        assert stats["streams"] >= 4  # every reader (one may open twice)
        # each chunk once, but for the chunks two readers' parts share and read-ahead
        assert SIZE <= stats["remoteBytes"] <= SIZE + 4 * 3 * CHUNK
        assert stats["integrityFailures"] == 0


def test_fewer_readers_than_connections_keep_the_read_path(registry_plain, blob, tmp_path):
    root, data = blob
    repo = push(registry_plain.host, root, tmp_path)
    with (
        client_for(tmp_path, "store") as client,
        open_model(
            client, f"{registry_plain.host}/{repo}:v1", chunk_cache=False, concurrency=4
        ) as h,
    ):
        parts, errors = read_quarters(h, [3 * CHUNK, 3 * CHUNK])
        assert errors == [] and b"".join(parts) == data
        assert h.stats["streams"] == 0


def test_windows_ending_inside_chunks_and_small_buffers_read_right(registry_plain, blob, tmp_path):
    root, data = blob
    repo = push(registry_plain.host, root, tmp_path)
    with (
        client_for(tmp_path, "store") as client,
        open_model(client, f"{registry_plain.host}/{repo}:v1", concurrency=2) as h,
    ):
        h._engine.stream_window = 3 * CHUNK + 4_321  # every window ends inside a chunk
        parts, errors = read_quarters(h, [CHUNK // 3 + 7, 3 * CHUNK + 11])
        assert errors == []
        assert b"".join(parts) == data
        stats = h.stats
        assert stats["streams"] >= 2
        assert stats["remoteRequests"] >= SIZE // (3 * CHUNK + 4_321)  # windows, not one
        assert SIZE <= stats["remoteBytes"] <= SIZE + 2 * CHUNK
    # the streamed chunks went to the disk chunk store: a second open reads them there
    with (
        client_for(tmp_path, "store") as client,
        open_model(client, f"{registry_plain.host}/{repo}:v1") as h,
    ):
        assert h.read("blob.bin") == data
        assert h.stats["remoteBytes"] == 0


def test_a_tampered_stream_is_refused_and_nothing_tampered_is_returned(
    registry_plain, blob, tmp_path
):
    root, data = blob
    repo = push(registry_plain.host, root, tmp_path)
    # only bodies longer than any the read path asks for here (a read of a few chunks,
    # read-ahead of two) are tampered with: the streams' (10 MiB windows)
    with LazyProxy(registry_plain.port, "flip", flip_above=16 * CHUNK) as proxy:
        with (
            client_for(tmp_path, "store") as client,
            open_model(
                client,
                f"{proxy.host}/{repo}:v1",
                chunk_cache=False,
                concurrency=2,
                readahead=2 * CHUNK,
            ) as h,
        ):
            failed: dict[int, tuple[int, bytes]] = {}
            parts, errors = read_quarters(h, [2 * CHUNK + 5, 2 * CHUNK], failed=failed)
            assert h.stats["streams"] >= 2
            assert h.stats["integrityFailures"] >= 1
        assert proxy.flips >= 1
    assert errors and all(isinstance(e, IntegrityError) for e in errors)
    assert all("chunk index says" in str(e) for e in errors)
    # what each reader was given before the error is the original, byte for byte
    cut = [0, SIZE // 2 + 1_000]
    for k, part in enumerate(parts):
        assert part == data[cut[k] : cut[k] + len(part)]
    # and the read that raised left no unverified byte in its buffer: where it differs
    # from the original, it holds zeros (never written, or wiped)
    assert failed
    for pos, held in failed.values():
        original = np.frombuffer(data[pos : pos + len(held)], dtype=np.uint8)
        seen = np.frombuffer(held[: len(original)], dtype=np.uint8)
        assert not np.any(seen[seen != original])


def test_readers_through_a_mirror_keep_a_request_per_read(registry_plain, blob, tmp_path):
    # a mirror is picked (and distrusted on a bad chunk) per request: no long bodies
    root, data = blob
    repo = push(registry_plain.host, root, tmp_path)
    hosts = tmp_path / "certs.d" / registry_plain.host
    with LazyProxy(registry_plain.port, "pass") as mirror:
        hosts.mkdir(parents=True)
        (hosts / "hosts.toml").write_text(
            f'server = "http://{registry_plain.host}"\n[host."http://{mirror.host}"]\n'
            '  capabilities = ["pull"]\n'
        )
        options = RemoteOptions(
            hosts_dirs=(str(tmp_path / "certs.d"),),
            store=str(tmp_path / "store"),
            fsync=False,
            on_warning=lambda _: None,
        )
        with (
            Client(options) as client,
            open_model(
                client, f"{registry_plain.host}/{repo}:v1", chunk_cache=False, concurrency=4
            ) as h,
        ):
            parts, errors = read_quarters(h, [2 * CHUNK] * 4)
            assert errors == [] and b"".join(parts) == data
            assert h.stats["streams"] == 0
        assert mirror.blob_bytes() >= SIZE  # served by the mirror, request by request


def test_streams_cross_the_parts_of_a_split_file(registry_plain, tmp_path):
    # pushed as modelreg push does by default (4 MiB chunks) but split in parts whose
    # edges fall inside chunks: such a chunk is read from two bodies of two blobs
    root = tmp_path / "model"
    root.mkdir()
    rng = np.random.default_rng(5)
    tensors = {f"t{i}": rng.standard_normal((700, 500)).astype(np.float32) for i in range(30)}
    save_file(tensors, str(root / "model.safetensors"))
    data = (root / "model.safetensors").read_bytes()
    ref = f"{registry_plain.host}/streams/{uuid.uuid4().hex[:10]}:v1"
    with client_for(tmp_path, "push-store") as client:
        client.push(root, ref, split=True, part_size="1500KiB")
    with (
        client_for(tmp_path, "store") as client,
        open_model(client, ref, chunk_cache=False, concurrency=2, readahead=2 * CHUNK) as h,
    ):
        assert len(h.model_file("model.safetensors").segments) > 20
        parts, errors = read_quarters(
            h, [3 * CHUNK * 16, 5 * CHUNK * 16 + 3], path="model.safetensors"
        )
        assert errors == [] and b"".join(parts) == data
        stats = h.stats
        assert stats["streams"] >= 2
        assert stats["remoteBytes"] <= len(data) + 2 * 4 * 1024 * 1024 + 2 * 2 * CHUNK
