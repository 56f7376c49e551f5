"""Keyless signing through sigstore-python's Signer, talking to the tests' own
Fulcio- and Rekor-like endpoints on loopback (no internet)."""

from __future__ import annotations

import json

import pytest

from modelreg.errors import InvalidInputError
from modelreg.sign import (
    COSIGN_SIGN_PREDICATE,
    MODEL_SIGNING_PREDICATE,
    SLSA_PROVENANCE_V1,
    KeylessOptions,
    KeylessSigner,
    attest,
    resolve_identity_token,
    sign,
    slsa_provenance,
)
from modelreg.verify import verify_artifact
from tests.unit.signing_fixtures import ALICE, ISSUER, keyless_policy

WORKFLOW = "https://github.com/acme/models/.github/workflows/release.yml@refs/tags/v1"


@pytest.fixture
def sigstore_services(fake, tmp_path):
    with fake.serving(tmp_path) as served:
        yield served


def test_sign_and_attest_keyless_then_verify_offline(stored, fake, sigstore_services, no_network):
    _, trust_config, trusted_root = sigstore_services
    token = fake.identity_token(WORKFLOW, ISSUER)
    options = KeylessOptions(identity_token=token, trust_config=str(trust_config))
    with KeylessSigner(options) as signer:
        assert (signer.identity, signer.issuer) == (WORKFLOW, ISSUER)
        signed = sign(stored.target, stored.desc, signer, name="team/tiny-llm")
        attest(stored.target, stored.desc, signer, SLSA_PROVENANCE_V1, slsa_provenance(environ={}))
    assert [b.predicate_type for b in signed.bundles] == [
        COSIGN_SIGN_PREDICATE,
        MODEL_SIGNING_PREDICATE,
    ]
    bundle = json.loads(signed.bundles[0].bundle)
    assert "certificate" in bundle["verificationMaterial"]
    assert bundle["verificationMaterial"]["tlogEntries"][0]["kindVersion"] == {
        "kind": "dsse",
        "version": "0.0.1",
    }
    policy = keyless_policy(
        trusted_root,
        identity=None,
        regexp=r"https://github\.com/acme/models/.*",
        required=(SLSA_PROVENANCE_V1,),
    )
    result = verify_artifact(stored.target, stored.desc, policy)
    assert result.ok, result.failures
    assert {a.predicate_type for a in result.attestations} == {
        MODEL_SIGNING_PREDICATE,
        SLSA_PROVENANCE_V1,
    }
    assert no_network == []  # only loopback was used, for signing


def test_token_from_environment(stored, fake, sigstore_services, monkeypatch):
    _, trust_config, trusted_root = sigstore_services
    monkeypatch.setenv("SIGSTORE_ID_TOKEN", fake.identity_token(ALICE, ISSUER, email=ALICE))
    with KeylessSigner(KeylessOptions(trust_config=str(trust_config), ambient=False)) as signer:
        sign(stored.target, stored.desc, signer, model_signature=False)
    assert verify_artifact(stored.target, stored.desc, keyless_policy(trusted_root)).ok


def test_missing_token_says_where_to_get_one(monkeypatch):
    monkeypatch.delenv("SIGSTORE_ID_TOKEN", raising=False)
    with pytest.raises(InvalidInputError, match="identity token"):
        resolve_identity_token(None, ambient=False)


def test_bad_token_is_never_echoed(sigstore_services, fake):
    _, trust_config, _ = sigstore_services
    expired = fake.identity_token(ALICE, ISSUER, lifetime=-3600)
    with (
        pytest.raises(InvalidInputError) as info,
        KeylessSigner(KeylessOptions(identity_token=expired, trust_config=str(trust_config))),
    ):
        pass
    assert expired not in str(info.value)
    assert expired.split(".")[1] not in str(info.value)


def test_unreadable_trust_config(fake, tmp_path):
    token = fake.identity_token(ALICE, ISSUER)
    with (
        pytest.raises(InvalidInputError, match="trust config"),
        KeylessSigner(
            KeylessOptions(identity_token=token, trust_config=str(tmp_path / "missing.json"))
        ),
    ):
        pass
