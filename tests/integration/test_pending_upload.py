"""Uploads that start before the digest is known (hash and send in one pass)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future

import pytest

from modelreg.content.base import bytes_source
from modelreg.content.registry import RegistryClient
from modelreg.errors import IntegrityError
from modelreg.oci import Descriptor, Digest
from modelreg.oci import mediatypes as mt

SIZE = 70 * 1024 * 1024  # above the monolithic limit: a session with PATCH


@pytest.fixture
def target(registry_factory):
    server = registry_factory()
    with RegistryClient(server.host) as client:
        yield client.repository("pending/blob")


def _later(value: Digest, gate: threading.Event) -> Future[Digest]:
    fut: Future[Digest] = Future()

    def resolve() -> None:
        gate.wait(30)
        fut.set_result(value)

    threading.Thread(target=resolve, daemon=True).start()
    return fut


def test_pending_upload_sends_once_and_registry_checks_digest(target):
    data = os.urandom(SIZE)
    digest = Digest.from_bytes(data)
    gate = threading.Event()
    fut = _later(digest, gate)
    gate.set()
    desc, result = target.push_pending(mt.model_layer("weight"), SIZE, bytes_source(data), fut)
    assert desc.digest == digest and not result.existed
    assert result.sent == SIZE
    assert target.exists(desc)
    with target.fetch(desc) as reader:
        assert reader.read() == data


def test_pending_upload_stops_early_when_the_blob_exists(target):
    data = os.urandom(SIZE)
    digest = Digest.from_bytes(data)
    done = Future()
    done.set_result(digest)
    target.push_pending(mt.model_layer("weight"), SIZE, bytes_source(data), done)
    again: Future[Digest] = Future()
    again.set_result(digest)
    _, result = target.push_pending(mt.model_layer("weight"), SIZE, bytes_source(data), again)
    assert result.existed
    assert result.sent < SIZE // 4  # cancelled after the first blocks


def test_pending_upload_with_wrong_digest_is_refused(target):
    data = os.urandom(SIZE)
    wrong: Future[Digest] = Future()
    wrong.set_result(Digest.from_bytes(b"something else"))
    with pytest.raises(IntegrityError):
        target.push_pending(mt.model_layer("weight"), SIZE, bytes_source(data), wrong)
    assert not target.exists(Descriptor(mt.model_layer("weight"), Digest.from_bytes(data), SIZE))


def test_pending_upload_mounts_from_another_repository(target):
    data = os.urandom(SIZE)
    digest = Digest.from_bytes(data)
    done: Future[Digest] = Future()
    done.set_result(digest)
    target.push_pending(mt.model_layer("weight"), SIZE, bytes_source(data), done)
    other = target.client.repository("pending/other")
    asked = []

    def mount_from(desc):
        asked.append(desc.digest)
        return ["pending/nowhere", target.repository]

    again: Future[Digest] = Future()
    again.set_result(digest)
    desc, result = other.push_pending(
        mt.model_layer("weight"), SIZE, bytes_source(data), again, mount_from
    )
    assert result.mounted and not result.existed
    assert result.sent == 0  # the digest was known before the first block
    assert asked == [digest] and other.exists(desc)
