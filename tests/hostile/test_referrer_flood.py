"""Referrer floods (issue 13; SECURITY.md: caps on everything a remote controls).

Whoever can push to a repository can push referrers. Each test pushes one kind of
flood and counts what verification fetched (never how long it took):

* a flood of signatures by other keys: the policy key's bundle is examined first and
  the walk stops there (at most the fetch window is fetched);
* referrers of other artifact types, listed by a registry that ignores the
  ``artifactType`` query: never fetched;
* more signature referrers than the cap, none valid within it: a denial that names the
  cap and how to raise it, after fetching no more than the cap;
* many valid signatures: the walk stops once the threshold is met.

The real Distribution registry (2.8: no referrers API, so the tag-schema fallback
index) is used except where the referrers API itself is under test.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modelreg import Client
from modelreg.attest.bundle import BUNDLE_V03
from modelreg.attest.keys import key_hint
from modelreg.attest.storage import FETCH_CONCURRENCY, attach_bundle
from modelreg.content.base import ReadOnlyTarget, Target
from modelreg.content.memory import MemoryTarget
from modelreg.oci.descriptor import Descriptor
from modelreg.sign import KeySigner, generate_private_key, public_key_pem, sign
from modelreg.verify import (
    ArtifactVerificationError,
    KeyAuthority,
    VerificationPolicy,
    verify_artifact,
    verify_before_pull,
    verify_reference,
)
from tests.hostile.crafted import CraftedRegistry, Reply
from tests.integration.registry_server import (
    RegistryBinaryMissing,
    RegistryServer,
    registry_binary,
    start_registry,
)
from tests.isolation import isolate

COSIGN_SIGN = "https://sigstore.dev/cosign/sign/v1"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
SBOM = "application/vnd.example.sbom"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(tmp_path, monkeypatch)
    monkeypatch.delenv("MODELREG_MAX_SIGNATURE_REFERRERS", raising=False)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    try:
        registry_binary()
    except RegistryBinaryMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    with start_registry(tmp_path_factory.mktemp("flood-registry")) as server:
        yield server


@dataclass
class Pushed:
    """A model in the real registry, and every descriptor verification fetched."""

    client: Client
    ref: str
    target: Any
    desc: Descriptor
    fetched: list[Descriptor] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = self.target.fetch

        def counting(desc: Descriptor) -> Any:
            with self.lock:
                self.fetched.append(desc)
            return real(desc)

        monkeypatch.setattr(self.target, "fetch", counting)

    @property
    def bundle_fetches(self) -> int:
        return sum(1 for d in self.fetched if d.media_type == BUNDLE_V03)


@pytest.fixture
def pushed(
    registry: RegistryServer, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Pushed]:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(os.urandom(4096))
    ref = f"{registry.host}/flood/{request.node.name.replace('_', '-')[:60]}:v1"
    with Client() as client:
        client.push(model, ref)
        _, target, desc = client.resolve(ref)
        yield Pushed(client, ref, target, desc)


def _policy(*keys: Any, threshold: int = 1, max_referrers: int | None = None) -> VerificationPolicy:
    return VerificationPolicy(
        authorities=tuple(
            KeyAuthority(public_key_pem(k.public_key()), name=f"key{i}") for i, k in enumerate(keys)
        ),
        threshold=threshold,
        max_referrers=max_referrers,
    )


def _signatures(target: Target, desc: Descriptor, n: int, *, created: str) -> list[bytes]:
    """``n`` signatures by ``n`` other keys; returns their bundles."""
    out = []
    for _ in range(n):
        result = sign(
            target, desc, KeySigner(generate_private_key()), model_signature=False, created=created
        )
        bundle = result.bundle_for(COSIGN_SIGN)
        assert bundle is not None
        out.append(bundle)
    return out


def _the_real_signature(pushed: Pushed, *, created: str) -> Any:
    """Signs the model with a new key (the one the policy trusts) dated ``created``."""
    key = generate_private_key()
    sign(pushed.target, pushed.desc, KeySigner(key), model_signature=False, created=created)
    return key


def test_signature_flood_examines_the_policy_key_first_and_stops(
    pushed: Pushed, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _the_real_signature(pushed, created="2026-01-01T00:00:00Z")
    # 199 more, all newer: newest-first alone would put the real one last, past the cap
    _signatures(pushed.target, pushed.desc, 199, created="2026-06-01T00:00:00Z")
    pushed.count(monkeypatch)
    result = verify_artifact(pushed.target, pushed.desc, _policy(key))
    assert result.ok, result.failures
    assert len(result.signatures) == 1
    assert pushed.bundle_fetches <= FETCH_CONCURRENCY
    referrer_manifests = [d for d in pushed.fetched if d.artifact_type == BUNDLE_V03]
    assert len(referrer_manifests) <= FETCH_CONCURRENCY


def test_referrers_of_other_artifact_types_are_never_fetched() -> None:
    # This registry's referrers API ignores ?artifactType= and lists everything.
    key = generate_private_key()
    memory = MemoryTarget()
    with CraftedRegistry() as server, Client() as client:
        server.model("m", "v1", [("application/vnd.cncf.model.weight.v1.raw", b"w" * 64, {})])
        _, target, subject = client.resolve(f"{server.host}/m:v1")
        memory.push_manifest(subject, target.fetch(subject).read())
        signed = sign(memory, subject, KeySigner(key), model_signature=False)
        listed = [_copy_referrer(server, memory, b.referrer) for b in signed.bundles]
        junk = []
        for i in range(30):
            body = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "artifactType": SBOM,
                    "config": {"mediaType": EMPTY, "digest": server.blob("m", b"{}"), "size": 2},
                    "layers": [],
                    "subject": subject.to_dict(),
                    "annotations": {"n": str(i)},
                }
            ).encode()
            digest = server.manifest("m", body)
            junk.append(digest)
            entry = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body)}
            listed.append({**entry, "artifactType": SBOM})
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": listed})
        server.route(
            "GET",
            rf"/v2/m/referrers/{subject.digest}(\?.*)?",
            lambda seen: Reply(200, {"Content-Type": OCI_INDEX}, index.encode()),
        )
        assert verify_reference(client, f"{server.host}/m:v1", _policy(key)).result.ok
        asked = [s.path for s in server.requests if "/referrers/" in s.path]
        assert asked and all("artifactType=" in p for p in asked)
        fetched = {s.path.rsplit("/", 1)[-1] for s in server.requests if s.method == "GET"}
        assert not fetched & set(junk)


def _copy_referrer(
    server: CraftedRegistry, memory: ReadOnlyTarget, referrer: Descriptor
) -> dict[str, Any]:
    """Serve a referrer made in ``memory`` from ``server``; returns its index entry."""
    raw = memory.fetch(referrer).read()
    doc = json.loads(raw)
    for blob in [doc["config"], *doc["layers"]]:
        server.blob("m", memory.fetch(Descriptor.from_dict(blob)).read())
    server.manifest("m", raw)
    return {
        "mediaType": referrer.media_type,
        "digest": str(referrer.digest),
        "size": referrer.size,
        "artifactType": doc["artifactType"],
        "annotations": doc["annotations"],
    }


def test_flood_past_the_cap_fails_closed_naming_the_cap(
    pushed: Pushed, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = _the_real_signature(pushed, created="2000-01-01T00:00:00Z")
    # The attacker copies the policy key's (public) hint and dates the junk later, so
    # every piece of junk sorts before the real signature.
    for bundle in _signatures(pushed.target, pushed.desc, 20, created="2001-01-01T00:00:00Z"):
        doc = json.loads(bundle)
        doc["verificationMaterial"]["publicKey"]["hint"] = key_hint(key.public_key())
        forged = json.dumps(doc).encode()
        attach_bundle(
            pushed.target,
            pushed.desc,
            forged,
            predicate_type=COSIGN_SIGN,
            created="2099-01-01T00:00:00Z",
        )
    monkeypatch.setenv("MODELREG_MAX_SIGNATURE_REFERRERS", "16")
    pushed.count(monkeypatch)
    with pytest.raises(ArtifactVerificationError) as caught:
        verify_before_pull(pushed.client, pushed.ref, tmp_path / "out", _policy(key))
    message = caught.value.message
    assert "41 signature referrers on" in message and "examined the first 16" in message
    assert "MODELREG_MAX_SIGNATURE_REFERRERS" in message
    assert pushed.bundle_fetches <= 16
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    # the operator raises the cap: the real signature is found
    monkeypatch.setenv("MODELREG_MAX_SIGNATURE_REFERRERS", "64")
    assert verify_artifact(pushed.target, pushed.desc, _policy(key)).ok


def test_threshold_met_stops_fetching_bundles(
    pushed: Pushed, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = generate_private_key(), generate_private_key()
    for k in (first, second):
        for _ in range(FETCH_CONCURRENCY + 4):
            sign(pushed.target, pushed.desc, KeySigner(k), model_signature=False)
    total = 2 * (FETCH_CONCURRENCY + 4)
    pushed.count(monkeypatch)
    result = verify_artifact(pushed.target, pushed.desc, _policy(first))
    assert result.ok and len(result.signatures) == 1
    one = pushed.bundle_fetches
    assert one <= FETCH_CONCURRENCY < total
    pushed.fetched.clear()
    result = verify_artifact(pushed.target, pushed.desc, _policy(first, second, threshold=2))
    assert result.ok and result.authorities_satisfied == 2
    assert pushed.bundle_fetches < total
