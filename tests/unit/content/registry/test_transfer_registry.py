"""The transfer engine with a real RegistryTarget (fake registry over MockTransport):
capabilities found by type, and blobs mounted across repositories of one registry."""

from __future__ import annotations

from modelreg.content.base import (
    Mounter,
    PendingPusher,
    RangeReader,
    Target,
    bytes_source,
)
from modelreg.content.memory import MemoryTarget
from modelreg.copy import copy_graph
from modelreg.events import Event
from modelreg.oci import Descriptor, Manifest
from modelreg.oci import mediatypes as mt
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import empty_config
from modelreg.transfer import Transfer
from tests.unit.content.registry.conftest import MakeClient
from tests.unit.content.registry.fakes import FakeRegistry

DATA = bytes(range(256)) * 1024


def blob(data: bytes = DATA) -> Descriptor:
    return Descriptor(mt.model_layer("weight"), Digest.from_bytes(data), len(data))


def test_registry_target_has_every_capability(make_client: MakeClient) -> None:
    repo = make_client().repository("team/a")
    assert isinstance(repo, Target)
    assert isinstance(repo, Mounter)
    assert isinstance(repo, PendingPusher)
    assert isinstance(repo, RangeReader)
    # checked by mypy too: each protocol accepts the real target
    mounter: Mounter = repo
    pending: PendingPusher = repo
    ranges: RangeReader = repo
    assert mounter.name == pending.name == ranges.name == f"{repo.client.host}/team/a"
    assert ranges.supports_range is None


def test_mountable_only_from_another_repository_of_the_same_client(
    make_client: MakeClient,
) -> None:
    client = make_client()
    a, b = client.repository("team/a"), client.repository("team/b")
    assert b.mountable_from(a) == "team/a"
    assert a.mountable_from(client.repository("team/a")) is None
    assert b.mountable_from(make_client().repository("team/a")) is None
    assert b.mountable_from(MemoryTarget()) is None


def test_range_support_is_the_clients_and_sticks_once_ignored(make_client: MakeClient) -> None:
    client = make_client()
    a, b = client.repository("team/a"), client.repository("team/b")
    a._learned_range(False)
    a._learned_range(True)
    assert a.supports_range is False and b.supports_range is False
    assert make_client().repository("team/a").supports_range is None


def test_copy_between_repositories_of_one_registry_mounts(
    fake: FakeRegistry, make_client: MakeClient
) -> None:
    client = make_client()
    src, dst = client.repository("team/a"), client.repository("team/b")
    src.push(blob(), bytes_source(DATA))
    src.push(empty_config(), bytes_source(b"{}"))
    manifest = Manifest(config=empty_config(), layers=(blob(),))
    src.push_manifest(manifest.descriptor(), manifest.raw, "v1")
    events: list[Event] = []
    result = copy_graph(src, manifest.descriptor(), dst, tag="v1", progress=events.append)
    assert (result.blobs_mounted, result.bytes_mounted) == (2, len(DATA) + 2)
    assert (result.bytes_sent, result.blobs_sent) == (0, 0)
    assert sorted(e.kind for e in events) == ["mounted", "mounted"]
    assert fake.blobs["team/b"][str(blob().digest)] == DATA


def test_mount_hint_names_repositories_for_a_local_source(
    fake: FakeRegistry, make_client: MakeClient
) -> None:
    client = make_client()
    client.repository("team/base").push(blob(), bytes_source(DATA))
    dst = client.repository("team/new")
    uploads = fake.count("PUT", "/uploads/")
    with Transfer(dst, mount_hint=lambda d: ["team/base"]) as engine:
        engine.send(blob(), bytes_source(DATA), "w")
        result = engine.result(blob())
    assert (result.blobs_mounted, result.bytes_sent) == (1, 0)
    assert fake.count("PUT", "/uploads/") == uploads and fake.count("PATCH", "/uploads/") == 0
