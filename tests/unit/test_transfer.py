"""The blob-transfer engine (:mod:`modelreg.transfer`) against in-memory targets.

Counting fakes stand in where the point is to count: concurrent pushes, mounts
asked for, failures. The registry's own mount path is covered with the fake
registry in ``tests/unit/content/registry/test_transfer_registry.py``.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest

from modelreg.content.base import (
    BlobSource,
    Mounter,
    PendingPusher,
    PushResult,
    RangeReader,
    ReadOnlyTarget,
    Target,
    bytes_source,
)
from modelreg.content.layout import LayoutStore
from modelreg.content.memory import MemoryTarget
from modelreg.copy import copy_graph
from modelreg.errors import IntegrityError, UnsupportedError
from modelreg.events import Event
from modelreg.oci import Descriptor, Manifest
from modelreg.oci import mediatypes as mt
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import empty_config
from modelreg.transfer import CopyResult, Transfer


def blob(data: bytes) -> Descriptor:
    return Descriptor(mt.model_layer("weight"), Digest.from_bytes(data), len(data))


def counts(result: CopyResult) -> dict[str, object]:
    return {k: v for k, v in result.to_dict().items() if k.startswith(("bytes", "blobs"))}


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def kinds(self, name: str) -> list[str]:
        return [e.kind for e in self.events if e.name == name and e.kind != "advance"]

    def advanced(self, name: str) -> int:
        return sum(e.n for e in self.events if e.name == name and e.kind == "advance")


class SlowTarget(MemoryTarget):
    """Counts pushes in flight at once; a push can be made to fail."""

    def __init__(self, delay: float = 0.05) -> None:
        super().__init__("slow")
        self.delay = delay
        self.active = 0
        self.peak = 0
        self.pushes = 0
        self.fail_on: Descriptor | None = None
        self._count = threading.Lock()

    def push(self, desc: Descriptor, source: BlobSource) -> PushResult:
        with self._count:
            self.active += 1
            self.pushes += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(self.delay)
            if self.fail_on is not None and desc.digest == self.fail_on.digest:
                raise IntegrityError("refused", hint="test")
            return super().push(desc, source)
        finally:
            with self._count:
                self.active -= 1


class MountingTarget(MemoryTarget):
    """A memory target of a pretend registry where repository ``base`` holds ``held``."""

    def __init__(self, held: set[Digest]) -> None:
        super().__init__("pretend/dst")
        self.held = held
        self.asked: list[tuple[str, str]] = []

    def mount(self, desc: Descriptor, from_repo: str) -> bool:
        self.asked.append((str(desc.digest), from_repo))
        if from_repo != "base" or desc.digest not in self.held:
            return False
        self._blobs[desc.digest] = b"linked"
        return True

    def mountable_from(self, source: ReadOnlyTarget) -> str | None:
        return None


def test_existing_blob_is_skipped_and_counted() -> None:
    dst = MemoryTarget()
    data = b"weights"
    dst.push(blob(data), bytes_source(data))
    events = Recorder()
    with Transfer(dst, progress=events) as engine:
        engine.send(blob(data), bytes_source(data), "w")
        result = engine.result(blob(data))
    assert events.kinds("w") == ["skipped"]
    assert counts(result) == {
        "bytesSent": 0,
        "bytesSkipped": len(data),
        "bytesMounted": 0,
        "blobsSent": 0,
        "blobsSkipped": 1,
        "blobsMounted": 0,
    }
    assert result.blobs == [str(blob(data).digest)]


def test_push_reports_start_advance_done_and_counts_bytes() -> None:
    dst, events = MemoryTarget(), Recorder()
    data = b"x" * 300_000
    with Transfer(dst, progress=events) as engine:
        engine.send(blob(data), bytes_source(data), "big")
        result = engine.result(blob(data))
    assert events.kinds("big") == ["start", "done"]
    assert events.advanced("big") == len(data)
    assert (result.bytes_sent, result.blobs_sent, result.blobs_skipped) == (len(data), 1, 0)
    assert dst.exists(blob(data))


def test_a_digest_is_moved_once_and_reported_once() -> None:
    dst, events = SlowTarget(delay=0), Recorder()
    data = b"same bytes"
    with Transfer(dst, progress=events) as engine:
        engine.wait([engine.submit(engine.send, blob(data), bytes_source(data), "a")])
        engine.send(blob(data), bytes_source(data), "b")
        result = engine.result(blob(data))
    assert dst.pushes == 1 and events.kinds("b") == []
    assert (result.blobs_sent, result.blobs, result.bytes_sent) == (
        1,
        [str(blob(data).digest)],
        len(data),
    )


def test_a_blob_found_silently_early_is_skipped_under_the_walks_name() -> None:
    dst, events = MemoryTarget(), Recorder()
    data = b"already there"
    dst.push(blob(data), bytes_source(data))
    with Transfer(dst, progress=events) as engine:
        engine.send(blob(data), bytes_source(data), "file.bin", announce_existing=False)
        assert events.events == []
        engine.send(blob(data), bytes_source(data), "dir/file.bin")
        engine.send(blob(data), bytes_source(data), "again")
        result = engine.result(blob(data))
    assert [(e.kind, e.name) for e in events.events] == [("skipped", "dir/file.bin")]
    assert (result.blobs_skipped, result.bytes_skipped) == (1, len(data))


def test_mount_from_hinted_repository_sends_nothing() -> None:
    data = b"shared base weights"
    dst, events = MountingTarget({blob(data).digest}), Recorder()
    with Transfer(dst, progress=events, mount_hint=lambda d: ["elsewhere", "base"]) as engine:
        engine.send(blob(data), bytes_source(data), "w")
        result = engine.result(blob(data))
    assert dst.asked == [(str(blob(data).digest), "elsewhere"), (str(blob(data).digest), "base")]
    assert events.kinds("w") == ["mounted"]
    assert (result.blobs_mounted, result.bytes_mounted, result.bytes_sent) == (1, len(data), 0)


def test_no_mount_is_tried_on_a_target_that_cannot() -> None:
    engine = Transfer(MemoryTarget(), mount_hint=lambda d: ["base"])
    with engine:
        assert engine.mount_candidates(blob(b"x")) == []
        assert not engine.mount(blob(b"x"), "x")


def test_one_concurrency_limit_for_every_blob() -> None:
    dst = SlowTarget(delay=0.05)
    datas = [bytes([i]) * 1000 for i in range(12)]
    with Transfer(dst, concurrency=3) as engine:
        futures = [
            engine.submit(engine.send, blob(d), bytes_source(d), str(i))
            for i, d in enumerate(datas)
        ]
        engine.wait(futures)
        result = engine.result(blob(datas[0]))
    assert dst.pushes == 12 and result.blobs_sent == 12
    assert dst.peak == 3


def test_copy_graph_shares_the_limit_across_manifest_blobs() -> None:
    src, dst = MemoryTarget(), SlowTarget(delay=0.03)
    layers = []
    for i in range(8):
        data = bytes([i]) * 100
        src.push(blob(data), bytes_source(data))
        layers.append(blob(data))
    config = empty_config()
    src.push(config, bytes_source(b"{}"))
    manifest = Manifest(config=config, layers=tuple(layers))
    src.push_manifest(manifest.descriptor(), manifest.raw, "v1")
    result = copy_graph(src, manifest.descriptor(), dst, tag="v1", concurrency=2)
    assert dst.peak == 2 and result.blobs_sent == 9
    assert result.manifests == [manifest.descriptor()]


def test_a_failed_push_is_raised_and_recorded_nowhere() -> None:
    dst = SlowTarget(delay=0)
    bad, good = b"bad", b"good"
    dst.fail_on = blob(bad)
    with Transfer(dst) as engine:
        futures = [
            engine.submit(engine.send, blob(bad), bytes_source(bad), "bad"),
            engine.submit(engine.send, blob(good), bytes_source(good), "good"),
        ]
        with pytest.raises(IntegrityError, match="refused"):
            engine.wait(futures)
        with pytest.raises(IntegrityError):
            engine.raise_failure()
        # wait() raised at the first failure; the good push may still be running
        futures[1].result(timeout=30)
        result = engine.result(blob(good))
    assert result.blobs == [str(blob(good).digest)]


def test_close_cancels_what_has_not_started() -> None:
    dst = SlowTarget(delay=0.5)  # long enough that close() comes while it runs
    engine = Transfer(dst, concurrency=1)
    futures = [
        engine.submit(engine.send, blob(bytes([i])), bytes_source(bytes([i])), str(i))
        for i in range(5)
    ]
    # the first push is under way: wait for it to start, not for a fixed time
    deadline = time.monotonic() + 30
    while dst.pushes == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    engine.close()
    assert dst.pushes == 1
    assert sum(f.cancelled() for f in futures) == 4


def test_two_uploads_of_one_digest_merge_into_one_sent_blob() -> None:
    data = b"twice"
    with Transfer(MemoryTarget()) as engine:
        engine.record(blob(data), PushResult(sent=3, existed=True))
        engine.record(blob(data), PushResult(sent=len(data)))
        result = engine.result(blob(data))
    assert (result.bytes_sent, result.blobs_sent, result.blobs_skipped) == (3 + len(data), 1, 0)


def test_push_pending_needs_the_capability() -> None:
    digest: Future[Digest] = Future()
    with Transfer(MemoryTarget()) as engine, pytest.raises(UnsupportedError):
        engine.push_pending("application/octet-stream", 1, bytes_source(b"x"), digest, "x")


# ---------------------------------------------------------------- capabilities


def test_memory_and_layout_are_targets_with_names_and_no_remote_capabilities(tmp_path) -> None:
    store = LayoutStore(tmp_path / "store")
    memory, repo, layout = MemoryTarget(), store.target("team/model"), store.target(None)
    for target in (memory, repo, layout):
        assert isinstance(target, Target)
        for capability in (Mounter, PendingPusher, RangeReader):
            assert not isinstance(target, capability)
    assert memory.name == "memory"
    assert repo.name == "team/model"
    assert layout.name == f"oci:{store.root}"


def test_a_test_double_gains_a_capability_by_defining_it() -> None:
    target = MountingTarget(set())
    assert isinstance(target, Mounter) and not isinstance(target, PendingPusher)
    mounter: Mounter = target
    assert mounter.name == "pretend/dst"
