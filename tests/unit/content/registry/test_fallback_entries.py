"""Referrers listed through a fallback index that a copying tool rewrote (issue 15).

skopeo 1.9 copies the ``sha256-<hex>`` index by re-encoding it without ``artifactType``
on the entries; the referrer manifests arrive unchanged. Also: a registry whose
referrers API answers empty while the referrers arrived only as the fallback tag."""

from __future__ import annotations

import json

import httpx
import pytest

from modelreg.content import fallback_entries
from modelreg.content.registry import RegistryTarget, referrers_tag
from modelreg.errors import SizeLimitError
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import Manifest, empty_config
from tests.unit.content.registry.conftest import MakeClient
from tests.unit.content.registry.fakes import FakeRegistry

REPO = "team/llm"
SIG = "application/vnd.test.sig"
ATT = "application/vnd.test.att"


@pytest.fixture
def repo(make_client: MakeClient) -> RegistryTarget:
    return make_client().repository(REPO)


def _subject(fake: FakeRegistry, note: str = "model") -> Descriptor:
    manifest = Manifest(
        config=empty_config(), layers=(), artifact_type=mt.MODEL_ARTIFACT, annotations={"n": note}
    )
    fake.put_manifest(REPO, manifest.raw, mt.OCI_MANIFEST, "v1")
    return manifest.descriptor()


def _referrer(fake: FakeRegistry, subject: Descriptor, kind: str, note: str) -> Manifest:
    manifest = Manifest(
        config=empty_config(),
        layers=(),
        artifact_type=kind,
        subject=subject,
        annotations={"n": note},
    )
    fake.put_manifest(REPO, manifest.raw, mt.OCI_MANIFEST)
    return manifest


def _rewritten_index(fake: FakeRegistry, subject: Descriptor, entries: list[Descriptor]) -> None:
    """The fallback index as skopeo 1.9 writes it: entries without artifactType."""
    manifests = [
        {"mediaType": d.media_type, "digest": str(d.digest), "size": d.size} for d in entries
    ]
    body = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
    fake.put_manifest(REPO, json.dumps(body).encode(), mt.OCI_INDEX, referrers_tag(subject.digest))


def test_entries_without_artifact_type_are_read_from_the_referrers(
    fake: FakeRegistry, repo: RegistryTarget
) -> None:
    subject = _subject(fake)
    sig = _referrer(fake, subject, SIG, "one")
    att = _referrer(fake, subject, ATT, "two")
    stranger = _referrer(fake, _subject(fake, "other"), SIG, "elsewhere")
    entries = [sig.descriptor(), stranger.descriptor(), att.descriptor()]
    _rewritten_index(fake, subject, entries)
    found = repo.referrers(subject)
    assert [d.digest for d in found] == [sig.digest, att.digest]  # another subject's: dropped
    assert [d.artifact_type for d in found] == [SIG, ATT]
    assert found[0].annotations == {"n": "one"}
    [only] = repo.referrers(subject, ATT)
    assert only.digest == att.digest


def test_a_vanished_referrer_is_dropped(fake: FakeRegistry, repo: RegistryTarget) -> None:
    subject = _subject(fake)
    sig = _referrer(fake, subject, SIG, "one")
    lost = Manifest(config=empty_config(), layers=(), artifact_type=SIG, subject=subject)
    _rewritten_index(fake, subject, [lost.descriptor(), sig.descriptor()])
    assert [d.digest for d in repo.referrers(subject, SIG)] == [sig.digest]


def test_typed_entries_cost_no_fetch(fake: FakeRegistry, repo: RegistryTarget) -> None:
    subject = _subject(fake)
    sig = Manifest(config=empty_config(), layers=(), artifact_type=SIG, subject=subject)
    repo.push_manifest(sig.descriptor(), sig.raw)  # modelreg's own index: typed entries
    before = fake.count("GET", f"/manifests/{sig.digest}")
    assert [d.digest for d in repo.referrers(subject, SIG)] == [sig.digest]
    assert fake.count("GET", f"/manifests/{sig.digest}") == before


def test_a_flood_of_untyped_entries_is_refused_unfetched(
    fake: FakeRegistry, repo: RegistryTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fallback_entries, "MAX_UNTYPED_ENTRIES", 3)
    subject = _subject(fake)
    flood = [_referrer(fake, subject, SIG, str(i)).descriptor() for i in range(4)]
    _rewritten_index(fake, subject, flood)
    before = fake.count("GET", "/manifests/sha256:")
    with pytest.raises(SizeLimitError, match="4 referrers without an artifactType") as err:
        repo.referrers(subject, SIG)
    assert "cp --recursive" in (err.value.hint or "")
    assert fake.count("GET", "/manifests/sha256:") == before


def test_empty_referrers_api_answer_falls_back_to_the_tag(
    fake: FakeRegistry, repo: RegistryTarget
) -> None:
    """Referrers that reached a registry with the API only through the fallback tag
    (a tool copied the tag; the registry indexed nothing) are still found."""
    fake.referrers_api = True
    subject = _subject(fake)
    sig = Manifest(config=empty_config(), layers=(), artifact_type=SIG, subject=subject)
    fake.put_manifest(REPO, sig.raw, mt.OCI_MANIFEST)
    tag = referrers_tag(subject.digest)
    _rewritten_index(fake, subject, [sig.descriptor()])
    # the fake's API lists manifests with a subject, so hide the referrer from it
    fake.interceptors.append(
        lambda request: _empty_index() if "/referrers/" in request.url.path else None
    )
    assert [d.digest for d in repo.referrers(subject, SIG)] == [sig.digest]
    assert fake.count("GET", f"/manifests/{tag}") == 1


def test_a_non_empty_referrers_api_answer_is_not_second_guessed(
    fake: FakeRegistry, repo: RegistryTarget
) -> None:
    fake.referrers_api = True
    subject = _subject(fake)
    sig = _referrer(fake, subject, SIG, "one")
    assert [d.digest for d in repo.referrers(subject)] == [sig.digest]
    assert fake.count("GET", f"/manifests/{referrers_tag(subject.digest)}") == 0


def _empty_index() -> httpx.Response:
    body = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
    return httpx.Response(200, headers={"Content-Type": mt.OCI_INDEX}, json=body)
