"""Key-based verification and SECURITY.md cases 10, 11, 16, 17, 18."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from modelreg.attest.dsse import pae
from modelreg.attest.keys import ecdsa_for
from modelreg.content.base import bytes_source
from modelreg.errors import PolicyError
from modelreg.oci.manifest import Manifest, empty_config
from modelreg.sign import (
    COSIGN_SIGN_PREDICATE,
    MODEL_SIGNING_PREDICATE,
    SLSA_PROVENANCE_V1,
    KeySigner,
    Statement,
    Subject,
    attach_bundle,
    attest,
    cosign_sign_statement,
    public_key_pem,
    sign,
)
from modelreg.verify import (
    ArtifactVerificationError,
    KeyAuthority,
    KeylessAuthority,
    VerificationPolicy,
    max_matching,
    verify_artifact,
    verify_before_pull,
    verify_reference,
)
from tests.unit.signing_fixtures import key_policy, write_model


def _sign(stored, key, **kw):
    return sign(stored.target, stored.desc, KeySigner(key), name="team/tiny-llm", **kw)


def test_key_signature_verifies_and_reports_what_was_verified(stored, key):
    _sign(stored, key)
    result = verify_artifact(
        stored.target, stored.desc, key_policy(key, required=(MODEL_SIGNING_PREDICATE,))
    )
    assert result.ok, result.failures
    assert result.digest == str(stored.desc.digest)
    assert [s.kind for s in result.signatures] == ["key"]
    assert result.signatures[0].authority == "key0"
    assert result.signatures[0].signer.startswith("sha256:")
    assert [a.predicate_type for a in result.attestations] == [MODEL_SIGNING_PREDICATE]
    doc = result.to_dict()
    assert doc["ok"] is True and doc["digest"] == str(stored.desc.digest)
    json.dumps(doc)


def test_unsigned_and_unknown_key_fail_with_reasons(stored, key, other_key):
    nothing = verify_artifact(stored.target, stored.desc, key_policy(key))
    assert not nothing.ok and "threshold not met: 0 of the required 1" in nothing.failures[0]
    _sign(stored, other_key)
    wrong = verify_artifact(stored.target, stored.desc, key_policy(key))
    assert not wrong.ok
    assert any("not in the policy" in f for f in wrong.failures)


# ------------------------------------------------------------------ case 10
def test_case10_content_changed_after_signing(stored, key, client, tmp_path):
    """Changing a file gives a new manifest digest; the old signature does not cover it."""
    _sign(stored, key)
    (stored.model_dir / "model.safetensors").write_bytes(b"tampered weights")
    client.push(stored.model_dir, stored.ref)
    _, target, changed = client.resolve(stored.ref)
    assert changed.digest != stored.desc.digest
    result = verify_artifact(target, changed, key_policy(key))
    assert not result.ok


def test_case10_model_statement_for_other_files_is_not_counted(stored, key, client):
    """A model-level statement is checked file by file against the manifest."""
    signed = _sign(stored, key)
    model_bundle = signed.bundle_for(MODEL_SIGNING_PREDICATE)
    (stored.model_dir / "extra.txt").write_bytes(b"added after signing")
    client.push(stored.model_dir, "team/tiny-llm:v2")
    _, target, other = client.resolve("team/tiny-llm:v2")
    attach_bundle(target, other, model_bundle, predicate_type=MODEL_SIGNING_PREDICATE)
    sign(target, other, KeySigner(key), model_signature=False)
    result = verify_artifact(target, other, key_policy(key, required=(MODEL_SIGNING_PREDICATE,)))
    assert not result.ok
    assert any("other files or digests" in s for s in result.skipped)


# ------------------------------------------------------------------ case 11
def test_case11_signature_for_a_replayed_onto_b(stored, key, client, tmp_path):
    signed = _sign(stored, key, model_signature=False)
    bundle = signed.bundle_for(COSIGN_SIGN_PREDICATE)
    client.push(write_model(tmp_path / "other-model"), "team/other:v1")
    _, target, b_desc = client.resolve("team/other:v1")
    attach_bundle(target, b_desc, bundle, predicate_type=COSIGN_SIGN_PREDICATE)
    result = verify_artifact(target, b_desc, key_policy(key))
    assert not result.ok
    assert any(f"not {b_desc.digest}" in s for s in result.skipped)
    # and the same bundle still verifies where it belongs
    assert verify_artifact(stored.target, stored.desc, key_policy(key)).ok


def test_case11_attestation_about_another_digest_is_not_counted(stored, key, client, tmp_path):
    client.push(write_model(tmp_path / "other-model"), "team/other:v1")
    _, _, b_desc = client.resolve("team/other:v1")
    statement = Statement((Subject("x", {"sha256": b_desc.digest.hex}),), SLSA_PROVENANCE_V1, {})
    attach_bundle(
        stored.target,
        stored.desc,
        KeySigner(key).sign(statement),
        predicate_type=SLSA_PROVENANCE_V1,
    )
    _sign(stored, key, model_signature=False)
    result = verify_artifact(
        stored.target, stored.desc, key_policy(key, required=(SLSA_PROVENANCE_V1,))
    )
    assert not result.ok and any("required attestation" in f for f in result.failures)


# ------------------------------------------------------------------ case 16
def test_case16_other_predicate_type_is_not_a_signature(stored, key):
    statement = Statement(
        (Subject("", {"sha256": stored.desc.digest.hex}),),
        "https://example.com/not-a-signature",
        {},
    )
    attach_bundle(
        stored.target,
        stored.desc,
        KeySigner(key).sign(statement),
        predicate_type=COSIGN_SIGN_PREDICATE,
    )
    result = verify_artifact(stored.target, stored.desc, key_policy(key))
    assert not result.ok
    assert [a.predicate_type for a in result.attestations] == [
        "https://example.com/not-a-signature"
    ]


def _raw_bundle(
    key: ec.EllipticCurvePrivateKey, payload: bytes, payload_type: str, n_sigs: int = 1
) -> bytes:
    sig = key.sign(pae(payload_type, payload), ecdsa_for(key.public_key()))
    return json.dumps(
        {
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": "x"}},
            "dsseEnvelope": {
                "payload": base64.b64encode(payload).decode(),
                "payloadType": payload_type,
                "signatures": [{"sig": base64.b64encode(sig).decode()}] * n_sigs,
            },
        }
    ).encode()


def test_case16_unexpected_payload_type(stored, key):
    payload = cosign_sign_statement(stored.desc.digest).raw
    attach_bundle(
        stored.target,
        stored.desc,
        _raw_bundle(key, payload, "application/json"),
        predicate_type="x",
    )
    result = verify_artifact(stored.target, stored.desc, key_policy(key))
    assert not result.ok and any("payloadType" in s for s in result.skipped)


def test_case16_two_signatures_in_one_envelope(stored, key):
    payload = cosign_sign_statement(stored.desc.digest).raw
    bundle = _raw_bundle(key, payload, "application/vnd.in-toto+json", n_sigs=2)
    attach_bundle(stored.target, stored.desc, bundle, predicate_type=COSIGN_SIGN_PREDICATE)
    result = verify_artifact(stored.target, stored.desc, key_policy(key))
    assert not result.ok and any("exactly 1 allowed" in s for s in result.skipped)
    # the same envelope with one signature verifies: only the count was wrong
    attach_bundle(
        stored.target,
        stored.desc,
        _raw_bundle(key, payload, "application/vnd.in-toto+json"),
        predicate_type=COSIGN_SIGN_PREDICATE,
    )
    assert verify_artifact(stored.target, stored.desc, key_policy(key)).ok


# ------------------------------------------------------------------ case 17
def test_case17_same_key_listed_twice_counts_once(stored, key):
    _sign(stored, key)
    pem = public_key_pem(key.public_key())
    twice = VerificationPolicy(
        authorities=(KeyAuthority(pem, "a"), KeyAuthority(pem.replace(b"\n", b"\r\n"), "b")),
        threshold=2,
    )
    with pytest.raises(PolicyError, match="distinct"):
        verify_artifact(stored.target, stored.desc, twice)


def test_case17_one_key_signing_twice_counts_once(stored, key, other_key):
    _sign(stored, key)
    _sign(stored, key)
    policy = key_policy(key, other_key, threshold=2)
    result = verify_artifact(stored.target, stored.desc, policy)
    assert not result.ok and result.authorities_satisfied == 1
    assert len(result.signatures) == 2  # both bundles are reported...
    _sign(stored, other_key)
    result = verify_artifact(stored.target, stored.desc, policy)
    assert result.ok and result.authorities_satisfied == 2  # ...but only distinct keys count


def test_matching_credits_each_signer_once():
    # alice matches A and B, bob only B: both authorities satisfied
    assert len(max_matching({"alice": {0, 1}, "bob": {1}})) == 2
    # two signers who can only satisfy the same authority satisfy one
    assert len(max_matching({"alice": {0}, "bob": {0}})) == 1
    assert max_matching({}) == {}


# ----------------------------------------------------------- attestations
def test_required_attestation_present_absent_and_foreign_signer(stored, key, other_key):
    _sign(stored, key, model_signature=False)
    policy = key_policy(key, required=(SLSA_PROVENANCE_V1,))
    assert not verify_artifact(stored.target, stored.desc, policy).ok
    attest(
        stored.target,
        stored.desc,
        KeySigner(other_key),
        SLSA_PROVENANCE_V1,
        {"buildDefinition": {}},
    )
    foreign = verify_artifact(stored.target, stored.desc, policy)
    assert not foreign.ok and foreign.attestations == ()
    attest(
        stored.target,
        stored.desc,
        KeySigner(key),
        SLSA_PROVENANCE_V1,
        {"buildDefinition": {"x": 1}},
    )
    good = verify_artifact(stored.target, stored.desc, policy)
    assert good.ok
    assert good.attestations[0].predicate == {"buildDefinition": {"x": 1}}


# ------------------------------------------------------------------ case 18
def test_case18_verify_reference_pins_the_digest(stored, key):
    _sign(stored, key)
    verified = verify_reference(stored.client, stored.ref, key_policy(key))
    assert verified.result.ok
    assert verified.reference.digest == stored.desc.digest


def test_case18_tag_moved_after_verification_pulls_what_was_verified(
    stored, key, client, tmp_path, monkeypatch
):
    _sign(stored, key)
    original = {p.name: p.read_bytes() for p in stored.model_dir.iterdir() if p.is_file()}
    import modelreg.verify as verify_mod

    real = verify_mod.verify_artifact

    def verify_then_move_tag(target, desc, policy):
        result = real(target, desc, policy)
        # the attacker re-points the tag right after verification
        evil = write_model(tmp_path / "evil", {"model.safetensors": b"evil", "config.json": b"{}"})
        client.push(evil, stored.ref)
        return result

    monkeypatch.setattr(verify_mod, "verify_artifact", verify_then_move_tag)
    out = tmp_path / "out"
    result, pulled = verify_before_pull(client, stored.ref, out, key_policy(key))
    assert result.ok and pulled.digest == str(stored.desc.digest)
    assert (out / "model.safetensors").read_bytes() == original["model.safetensors"]


def test_failed_verification_writes_nothing(stored, key, other_key, tmp_path):
    _sign(stored, other_key)
    out = tmp_path / "never"
    with pytest.raises(ArtifactVerificationError) as info:
        verify_before_pull(stored.client, stored.ref, out, key_policy(key))
    assert info.value.exit_code == 7 and not info.value.result.ok
    assert not out.exists()


# ------------------------------------------------------------------ policy
@pytest.mark.parametrize(
    "policy",
    [
        VerificationPolicy(authorities=()),
        VerificationPolicy(authorities=(KeyAuthority(b"not a pem"),)),
        VerificationPolicy(
            authorities=(KeylessAuthority(issuer="https://i", identity="a", identity_regexp="a"),)
        ),
        VerificationPolicy(authorities=(KeylessAuthority(issuer="https://i"),)),
        VerificationPolicy(authorities=(KeylessAuthority(issuer="", identity="a"),)),
        VerificationPolicy(
            authorities=(KeylessAuthority(issuer="https://i", identity_regexp="(unclosed"),)
        ),
        VerificationPolicy(
            authorities=(KeylessAuthority(issuer="https://i", identity="a"),), threshold=0
        ),
    ],
)
def test_unusable_policies_raise_policy_error(stored, policy):
    with pytest.raises(PolicyError):
        verify_artifact(stored.target, stored.desc, policy)


# ------------------------------------------------------------------ legacy
def _legacy(stored, key, suffix, layer_media_type, data, annotations):
    from modelreg.attest.storage import legacy_tag
    from modelreg.oci.descriptor import Descriptor

    layer = Descriptor.for_bytes(layer_media_type, data, annotations=annotations)
    stored.target.push(layer, bytes_source(data))
    stored.target.push(empty_config(), bytes_source(b"{}"))
    m = Manifest(config=empty_config(), layers=(layer,))
    stored.target.push_manifest(m.descriptor(), m.raw, tag=legacy_tag(stored.desc, suffix))


def test_legacy_cosign_sig_and_att_verify_with_keys(stored, key, other_key):
    from modelreg.attest.dsse import sign_envelope
    from modelreg.attest.storage import (
        ANN_COSIGN_SIGNATURE,
        COSIGN_DSSE_LAYER,
        COSIGN_SIMPLESIGNING,
    )

    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": "registry.example/team/tiny-llm"},
                "image": {"docker-manifest-digest": str(stored.desc.digest)},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
    ).encode()
    sig = base64.b64encode(key.sign(payload, ecdsa_for(key.public_key()))).decode()
    _legacy(stored, key, "sig", COSIGN_SIMPLESIGNING, payload, {ANN_COSIGN_SIGNATURE: sig})
    statement = Statement(
        (Subject("x", {"sha256": stored.desc.digest.hex}),), SLSA_PROVENANCE_V1, {}
    )
    env = json.dumps(sign_envelope(key, statement.raw).to_dict()).encode()
    _legacy(stored, key, "att", COSIGN_DSSE_LAYER, env, {"predicateType": SLSA_PROVENANCE_V1})
    result = verify_artifact(
        stored.target, stored.desc, key_policy(key, required=(SLSA_PROVENANCE_V1,))
    )
    assert result.ok, result.failures
    assert not verify_artifact(stored.target, stored.desc, key_policy(other_key)).ok


def test_legacy_sig_for_another_digest_is_not_counted(stored, key):
    from modelreg.attest.storage import ANN_COSIGN_SIGNATURE, COSIGN_SIMPLESIGNING

    payload = json.dumps(
        {
            "critical": {
                "image": {"docker-manifest-digest": "sha256:" + "0" * 64},
                "type": "cosign container image signature",
            }
        }
    ).encode()
    sig = base64.b64encode(key.sign(payload, ecdsa_for(key.public_key()))).decode()
    _legacy(stored, key, "sig", COSIGN_SIMPLESIGNING, payload, {ANN_COSIGN_SIGNATURE: sig})
    assert not verify_artifact(stored.target, stored.desc, key_policy(key)).ok
