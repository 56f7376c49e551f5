import json
import multiprocessing
import os

import pytest

from modelreg.content import LayoutStore, MemoryTarget, VerifyingReader, bytes_source, fetch_bytes
from modelreg.copy import copy_graph
from modelreg.errors import IntegrityError, NotFoundError, SizeLimitError
from modelreg.oci import Descriptor, Manifest
from modelreg.oci import mediatypes as mt
from modelreg.oci.manifest import empty_config


def blob(data: bytes) -> Descriptor:
    return Descriptor.for_bytes("application/octet-stream", data)


def test_verifying_reader_detects_tamper_truncation_and_trailing_bytes():
    import io

    d = blob(b"0123456789")
    for bad, what in (
        (b"0123456780", "hashes to"),
        (b"01234", "got 5 bytes"),
        (b"0123456789X", "more bytes"),
    ):
        reader = VerifyingReader(io.BytesIO(bad), d)
        with pytest.raises(IntegrityError, match=what):
            reader.read_to_end()
        assert not reader.verified
    ok = VerifyingReader(io.BytesIO(b"0123456789"), d)
    ok.read_to_end()
    assert ok.verified


def test_layout_push_fetch_and_bad_source_leaves_nothing(tmp_path):
    store = LayoutStore(tmp_path / "s")
    target = store.target("team/llm")
    d = blob(b"weights")
    assert target.push(d, bytes_source(b"weights")).sent == 7
    assert target.push(d, bytes_source(b"weights")).existed
    assert fetch_bytes(target, d, limit=100) == b"weights"
    bad = blob(b"expected")
    with pytest.raises(IntegrityError):
        target.push(bad, bytes_source(b"tampered"))
    assert not store.has_blob(bad.digest)
    assert os.listdir(tmp_path / "s" / "ingest") == []
    with pytest.raises(SizeLimitError):
        fetch_bytes(target, d, limit=3)


def test_layout_files_follow_the_image_spec(tmp_path):
    store = LayoutStore(tmp_path)
    assert json.loads((tmp_path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["schemaVersion"] == 2 and index["manifests"] == []
    m = Manifest(config=empty_config(), layers=())
    store.target(None).push_manifest(m.descriptor(), m.raw, "v1")
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["manifests"][0]["annotations"][mt.ANN_REF_NAME] == "v1"
    assert (tmp_path / "blobs" / "sha256" / m.digest.hex).read_bytes() == m.raw


def _manifest(tag_data: bytes) -> Manifest:
    return Manifest(config=empty_config(), layers=(blob(tag_data),))


def test_tags_are_per_repository_and_move(tmp_path):
    store = LayoutStore(tmp_path)
    a, b = store.target("a"), store.target("b")
    m1, m2 = _manifest(b"1"), _manifest(b"2")
    a.push_manifest(m1.descriptor(), m1.raw, "v1")
    b.push_manifest(m2.descriptor(), m2.raw, "v1")
    assert a.resolve("v1").digest == m1.digest
    assert b.resolve("v1").digest == m2.digest
    a.push_manifest(m2.descriptor(), m2.raw, "v1")
    assert a.resolve("v1").digest == m2.digest
    assert list(a.tags()) == ["v1"]
    assert a.resolve(str(m1.digest)).digest == m1.digest
    with pytest.raises(NotFoundError, match="tag 'v9' not found"):
        a.resolve("v9")


def _tag_many(root: str, worker: int) -> None:
    store = LayoutStore(root)
    target = store.target(f"repo{worker}")
    for i in range(15):
        m = _manifest(f"{worker}-{i}".encode())
        target.push_manifest(m.descriptor(), m.raw, f"t{i}")


def test_concurrent_processes_do_not_lose_tags(tmp_path):
    LayoutStore(tmp_path)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_tag_many, args=(str(tmp_path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    store = LayoutStore(tmp_path)
    for w in range(4):
        assert len(list(store.target(f"repo{w}").tags())) == 15


def test_referrers_found_by_subject(tmp_path):
    store = LayoutStore(tmp_path)
    target = store.target("m")
    subject = _manifest(b"model")
    target.push_manifest(subject.descriptor(), subject.raw, "v1")
    sig = Manifest(
        config=empty_config(),
        layers=(),
        artifact_type="application/vnd.dev.sigstore.bundle.v0.3+json",
        subject=subject.descriptor(),
    )
    target.push_manifest(sig.descriptor(), sig.raw)
    found = target.referrers(subject.descriptor())
    assert [r.digest for r in found] == [sig.digest]
    assert found[0].artifact_type == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert target.referrers(subject.descriptor(), "application/other") == []


def test_copy_graph_between_memory_and_layout_with_referrers(tmp_path):
    src = MemoryTarget()
    layer = blob(b"L" * 1000)
    src.push(layer, bytes_source(b"L" * 1000))
    src.push(empty_config(), bytes_source(b"{}"))
    m = Manifest(config=empty_config(), layers=(layer,))
    src.push_manifest(m.descriptor(), m.raw, "v1")
    sig = Manifest(
        config=empty_config(), layers=(), artifact_type="application/x.sig", subject=m.descriptor()
    )
    src.push_manifest(sig.descriptor(), sig.raw)
    dst = LayoutStore(tmp_path).target("copy")
    events = []
    result = copy_graph(src, m.descriptor(), dst, tag="v1", recursive=True, progress=events.append)
    assert result.bytes_sent == 1002 and result.blobs_sent == 2
    assert [r.digest for r in result.referrers] == [sig.digest]
    assert dst.resolve("v1").digest == m.digest
    assert [r.digest for r in dst.referrers(m.descriptor())] == [sig.digest]
    assert any(e.kind == "advance" for e in events)
    again = copy_graph(src, m.descriptor(), dst, tag="v1")
    assert again.bytes_sent == 0 and again.bytes_skipped == 1002


def test_copy_refuses_tampered_source_blob(tmp_path):
    src = MemoryTarget()
    good = b"good bytes"
    layer = blob(good)
    src.push(layer, bytes_source(good))
    src._blobs[layer.digest] = b"evil bytes"  # the source now serves other bytes
    src.push(empty_config(), bytes_source(b"{}"))
    m = Manifest(config=empty_config(), layers=(layer,))
    src.push_manifest(m.descriptor(), m.raw, "v1")
    store = LayoutStore(tmp_path)
    with pytest.raises(IntegrityError):
        copy_graph(src, m.descriptor(), store.target("x"), tag="v1")
    assert not store.has_blob(layer.digest)
    with pytest.raises(NotFoundError):
        store.target("x").resolve("v1")


def test_writer_trusting_a_reader_commits_only_after_it_verified(tmp_path):
    import io

    store = LayoutStore(tmp_path)
    d = blob(b"0123456789")
    # read stopped early: the reader never verified, nothing is stored
    with (
        pytest.raises(IntegrityError, match="did not verify"),
        VerifyingReader(io.BytesIO(b"0123456789"), d) as reader,
        store.ingest(d, verified_by=reader) as writer,
    ):
        writer.write(reader.read(4))
    assert not store.has_blob(d.digest)
    # tampered bytes: the reader raises at EOF, nothing is stored
    with (
        pytest.raises(IntegrityError),
        VerifyingReader(io.BytesIO(b"0123456780"), d) as reader,
        store.ingest(d, verified_by=reader) as writer,
    ):
        while block := reader.read(3):
            writer.write(block)
    assert not store.has_blob(d.digest)
    assert store.write_blob(d, io.BytesIO(b"0123456789")) == 10
    assert store.has_blob(d.digest)
