"""Keyless verification with sigstore-python's real Verifier against a private
Sigstore built by the tests (no network), and SECURITY.md cases 12-16, 19."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from modelreg.sign import (
    COSIGN_SIGN_PREDICATE,
    SLSA_PROVENANCE_V1,
    KeySigner,
    Statement,
    Subject,
    attach_bundle,
    cosign_sign_statement,
    public_key_pem,
    sign,
)
from modelreg.verify import KeyAuthority, KeylessAuthority, VerificationPolicy, verify_artifact
from tests.integration.sigstore_fixtures import Tamper
from tests.unit.signing_fixtures import ALICE, ISSUER, keyless_policy

BOB = "bob@example.com"


def attach_keyless(stored, fake, identity=ALICE, issuer=ISSUER, statement=None, **kw):
    statement = statement or cosign_sign_statement(stored.desc.digest, "team/tiny-llm")
    bundle = fake.keyless_bundle(statement.raw, identity, issuer, **kw)
    attach_bundle(stored.target, stored.desc, bundle, predicate_type=statement.predicate_type)
    return bundle


def verify(stored, policy):
    return verify_artifact(stored.target, stored.desc, policy)


def test_keyless_signature_verifies(stored, fake, trusted_root):
    attach_keyless(stored, fake)
    result = verify(stored, keyless_policy(trusted_root))
    assert result.ok, result.failures
    sig = result.signatures[0]
    assert (sig.kind, sig.signer, sig.issuer) == ("keyless", ALICE, ISSUER)


def test_uri_identity_and_anchored_regexp(stored, fake, trusted_root):
    workflow = "https://github.com/acme/models/.github/workflows/release.yml@refs/heads/main"
    attach_keyless(stored, fake, identity=workflow)
    ok = verify(
        stored,
        keyless_policy(
            trusted_root, identity=None, regexp=r"https://github\.com/acme/.*@refs/heads/main"
        ),
    )
    assert ok.ok, ok.failures


# ------------------------------------------------------------------ case 12
@pytest.mark.parametrize(
    ("policy_kw", "why"),
    [
        ({"identity": BOB}, "do not match"),
        ({"issuer": "https://evil.example"}, "issuer"),
        ({"identity": None, "regexp": r"alice@example\.com"}, "do not match"),
        ({"identity": None, "regexp": r".*@example\.com"}, "do not match"),
    ],
)
def test_case12_wrong_identity_issuer_or_overmatching_regexp(
    stored, fake, trusted_root, policy_kw, why
):
    # the signer's SAN only *contains* the trusted identity: an unanchored search would accept it
    attach_keyless(stored, fake, identity="alice@example.com.attacker.net")
    if "issuer" in policy_kw:
        policy_kw = {**policy_kw, "identity": "alice@example.com.attacker.net"}
    result = verify(stored, keyless_policy(trusted_root, **policy_kw))
    assert not result.ok
    assert any(why in s for s in result.skipped), result.skipped


# ------------------------------------------------------------------ case 13
def test_case13_certificate_expired_at_the_logged_time(stored, fake, trusted_root):
    attach_keyless(stored, fake, tamper=Tamper(integrated_time_offset=11 * 60))
    result = verify(stored, keyless_policy(trusted_root))
    assert not result.ok
    assert any(
        "expired" in s or "validity" in s or "certificate" in s.lower() for s in result.skipped
    )


def test_case13_logged_before_the_certificate_existed(stored, fake, trusted_root):
    attach_keyless(stored, fake, tamper=Tamper(integrated_time_offset=-120))
    assert not verify(stored, keyless_policy(trusted_root)).ok


def test_case13_no_time_evidence(stored, fake, trusted_root):
    attach_keyless(stored, fake, tamper=Tamper(no_inclusion_promise=True))
    result = verify(stored, keyless_policy(trusted_root))
    assert not result.ok
    assert any("inclusion promise or signed timestamp" in s for s in result.skipped)


def test_old_signature_verifies_after_the_certificate_expired(stored, fake, trusted_root):
    """Keyless certificates live 10 minutes; the log's time is what counts."""
    attach_keyless(stored, fake, signed_at=dt.datetime(2025, 3, 1, tzinfo=dt.UTC))
    assert verify(stored, keyless_policy(trusted_root)).ok


# ------------------------------------------------------------------ case 14
@pytest.mark.parametrize(
    "tamper",
    [
        Tamper(bad_inclusion_proof=True),
        Tamper(bad_checkpoint_signature=True),
        Tamper(checkpoint_root=b"\x01" * 32),
        Tamper(bad_set=True),
        Tamper(entry_payload=b'{"another":"payload"}'),
    ],
    ids=[
        "inclusion-proof",
        "checkpoint-signature",
        "checkpoint-root",
        "signed-entry-timestamp",
        "entry-does-not-match-bundle",
    ],
)
def test_case14_transparency_log_evidence_must_hold(stored, fake, trusted_root, tamper):
    attach_keyless(stored, fake, tamper=tamper)
    result = verify(stored, keyless_policy(trusted_root))
    assert not result.ok, tamper
    assert result.signatures == ()


def test_case14_log_key_not_in_trusted_root(stored, fake, trusted_root):
    from tests.integration.sigstore_fixtures import FakeSigstore

    rogue_log = FakeSigstore()  # its own Rekor key; same CA and CT log as the trusted root
    rogue_log.ca_key, rogue_log.ca_cert, rogue_log.ct_key = fake.ca_key, fake.ca_cert, fake.ct_key
    attach_keyless(stored, rogue_log)
    result = verify(stored, keyless_policy(trusted_root))
    assert not result.ok and any("log entry" in s for s in result.skipped), result.skipped


# ------------------------------------------------------------------ case 15
@pytest.mark.parametrize(
    "cert_kwargs",
    [{"code_signing": False}, {"digital_signature": False}, {"ca": True}],
    ids=["no-code-signing-eku", "no-digital-signature", "leaf-is-a-ca"],
)
def test_case15_certificate_profile(stored, fake, trusted_root, cert_kwargs):
    attach_keyless(stored, fake, cert_kwargs=cert_kwargs)
    assert not verify(stored, keyless_policy(trusted_root)).ok


def test_case15_root_embedded_in_the_bundle_is_not_trusted(stored, fake, trusted_root):
    rogue_key, rogue_root = fake.rogue_ca()
    statement = cosign_sign_statement(stored.desc.digest)
    # a certificate the rogue CA issued, and the rogue root in the bundle's chain
    bundle = fake.keyless_bundle(
        statement.raw,
        ALICE,
        ISSUER,
        chain=[rogue_root],
        cert_kwargs={"issuer_key": rogue_key, "issuer_cert": rogue_root},
    )
    attach_bundle(stored.target, stored.desc, bundle, predicate_type=COSIGN_SIGN_PREDICATE)
    result = verify(stored, keyless_policy(trusted_root))
    assert not result.ok
    assert any("chain" in s for s in result.skipped), result.skipped


@pytest.mark.parametrize(
    "tamper",
    [Tamper(sct_log_key=ec.generate_private_key(ec.SECP256R1())), Tamper(no_sct=True)],
    ids=["sct-from-unknown-log", "no-sct"],
)
def test_case15_sct_must_come_from_a_trusted_ct_log(stored, fake, trusted_root, tamper):
    attach_keyless(stored, fake, tamper=tamper)
    result = verify(stored, keyless_policy(trusted_root))
    assert not result.ok
    assert any("SCT" in s or "signed certificate timestamp" in s for s in result.skipped), (
        result.skipped
    )


# ------------------------------------------------------------------ case 16
def test_case16_keyless_envelope_with_two_signatures(stored, fake, trusted_root):
    attach_keyless(stored, fake, extra_signature=True)
    assert not verify(stored, keyless_policy(trusted_root)).ok


def test_case16_keyless_unexpected_payload_type(stored, fake, trusted_root):
    statement = cosign_sign_statement(stored.desc.digest)
    bundle = fake.keyless_bundle(statement.raw, ALICE, ISSUER, payload_type="application/json")
    attach_bundle(stored.target, stored.desc, bundle, predicate_type=COSIGN_SIGN_PREDICATE)
    result = verify(stored, keyless_policy(trusted_root))
    assert not result.ok and any("payloadType" in s for s in result.skipped)


# ------------------------------------------------------------------ case 17
def test_case17_one_identity_satisfies_one_authority(stored, fake, trusted_root):
    policy = VerificationPolicy(
        authorities=(
            KeylessAuthority(issuer=ISSUER, identity=ALICE),
            KeylessAuthority(issuer=ISSUER, identity_regexp=r".*@example\.com"),
        ),
        threshold=2,
        trusted_root=str(trusted_root),
    )
    attach_keyless(stored, fake)
    attach_keyless(stored, fake, signed_at=dt.datetime(2025, 5, 5, tzinfo=dt.UTC))
    alone = verify(stored, policy)
    assert not alone.ok and alone.authorities_satisfied == 1
    attach_keyless(stored, fake, identity=BOB)
    both = verify(stored, policy)
    assert both.ok and both.authorities_satisfied == 2


def test_mixed_key_and_keyless_threshold(stored, fake, trusted_root, key):
    policy = VerificationPolicy(
        authorities=(
            KeyAuthority(public_key_pem(key.public_key()), "release-key"),
            KeylessAuthority(issuer=ISSUER, identity=ALICE),
        ),
        threshold=2,
        required_attestations=(SLSA_PROVENANCE_V1,),
        trusted_root=str(trusted_root),
    )
    sign(stored.target, stored.desc, KeySigner(key), model_signature=False)
    attach_keyless(stored, fake)
    slsa = Statement(
        (Subject("m", {"sha256": stored.desc.digest.hex}),), SLSA_PROVENANCE_V1, {"b": 1}
    )
    attach_keyless(stored, fake, statement=slsa)
    result = verify(stored, policy)
    assert result.ok, result.failures
    assert {s.kind for s in result.signatures} == {"key", "keyless"}
    assert result.attestations[0].signer == ALICE


# ------------------------------------------------------------------ case 19
def test_case19_offline_keyless_verification_makes_no_network_io(
    stored, fake, trusted_root, no_network
):
    attach_keyless(stored, fake)
    result = verify(stored, keyless_policy(trusted_root))
    assert result.ok, result.failures
    assert no_network == []


def test_no_keyless_authority_means_keyless_bundles_are_skipped(stored, fake, key):
    attach_keyless(stored, fake)
    policy = VerificationPolicy(authorities=(KeyAuthority(public_key_pem(key.public_key())),))
    result = verify(stored, policy)
    assert not result.ok and any("no keyless identity" in s for s in result.skipped)


def test_case19_the_network_guard_catches_what_it_should(stored, fake, no_network):
    """Online keyless verification (a TUF refresh) is caught by the guard, and
    fails closed: verification that could not run raises, it never passes."""
    import socket

    from modelreg.errors import ModelRegError
    from tests.integration.sigstore_fixtures import NetworkBlocked

    with pytest.raises(NetworkBlocked):
        socket.create_connection(("192.0.2.1", 443), timeout=1)
    attach_keyless(stored, fake)
    online = VerificationPolicy(
        authorities=(KeylessAuthority(issuer=ISSUER, identity=ALICE),), offline=False
    )
    with pytest.raises(ModelRegError) as info:
        verify(stored, online)
    assert "production trust root" in info.value.message
    assert len(no_network) >= 2
