"""DSSE, in-toto statements, keys and key-based bundles."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization

from modelreg.errors import FormatError, InvalidInputError, SizeLimitError
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import Manifest, empty_config
from modelreg.sign import (
    BUNDLE_V03,
    COSIGN_SIGN_PREDICATE,
    MODEL_SIGNING_PREDICATE,
    Envelope,
    KeySigner,
    Statement,
    cosign_sign_statement,
    generate_private_key,
    key_hint,
    load_private_key,
    load_public_key,
    model_resources,
    model_statement,
    pae,
    parse_bundle,
    password_from_env,
    public_key_pem,
    write_key_pair,
)
from modelreg.sign._dsse import sign_envelope, verify_envelope_signature


# ------------------------------------------------------------------------ DSSE
def test_pae_matches_the_dsse_spec_vector():
    # secure-systems-lab/dsse protocol.md test vector
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("t", b"") == b"DSSEv1 1 t 0 "


def test_pae_counts_bytes_not_characters():
    assert pae("\u00e9", b"\xc3\xa9") == b"DSSEv1 2 \xc3\xa9 2 \xc3\xa9"


def test_envelope_round_trip_and_signature_covers_pae(key):
    env = sign_envelope(key, b'{"x":1}')
    again = Envelope.from_dict(json.loads(json.dumps(env.to_dict())))
    assert again == env
    assert verify_envelope_signature(key.public_key(), again)
    forged = Envelope(b'{"x":2}', env.payload_type, env.signatures)
    assert not verify_envelope_signature(key.public_key(), forged)
    retyped = Envelope(env.payload, "application/json", env.signatures)
    assert not verify_envelope_signature(key.public_key(), retyped)


def test_envelope_with_two_signatures_is_never_valid(key):
    env = sign_envelope(key, b"{}")
    doubled = Envelope(env.payload, env.payload_type, env.signatures * 2)
    assert not verify_envelope_signature(key.public_key(), doubled)


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"payload": "e30=", "signatures": [{"sig": "AA=="}]},
        {"payloadType": "t", "payload": "not base64!", "signatures": [{"sig": "AA=="}]},
        {"payloadType": "t", "payload": "e30=", "signatures": []},
        {"payloadType": "t", "payload": "e30=", "signatures": [{"sig": ""}]},
        {"payloadType": "t", "payload": "e30=", "signatures": [{"sig": "AA=="}] * 17},
    ],
)
def test_envelope_parsing_is_strict(doc):
    with pytest.raises(FormatError):
        Envelope.from_dict(doc)


# -------------------------------------------------------------------- in-toto
def test_cosign_sign_statement_shape():
    digest = Digest.from_bytes(b"manifest")
    st = cosign_sign_statement(digest, "registry.example/team/llm")
    doc = json.loads(st.raw)
    assert doc == {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "registry.example/team/llm", "digest": {"sha256": digest.hex}}],
        "predicateType": COSIGN_SIGN_PREDICATE,
        "predicate": {},
    }
    parsed = Statement.parse(st.raw)
    assert parsed.has_subject_digest(digest)
    assert not parsed.has_subject_digest(Digest.from_bytes(b"other"))


def test_cosign_statement_refuses_sha512():
    with pytest.raises(InvalidInputError):
        cosign_sign_statement(Digest.from_bytes(b"x", "sha512"))


@pytest.mark.parametrize(
    "payload",
    [
        b"[]",
        b"not json",
        b'{"_type":"https://example.com/x","subject":[{"digest":{"sha256":"aa"}}],"predicateType":"p"}',
        b'{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"p"}',
        b'{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"aa"}}]}',
        b'{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":1}}],"predicateType":"p"}',
    ],
)
def test_statement_parsing_is_strict(payload):
    with pytest.raises(FormatError):
        Statement.parse(payload)


def _layer(path: str, data: bytes, media_type: str = "application/vnd.cncf.model.weight.v1.raw"):
    return Descriptor.for_bytes(media_type, data, annotations={mt.ANN_FILEPATH: path})


def _manifest(*layers: Descriptor) -> Manifest:
    return Manifest(config=empty_config(), layers=layers, artifact_type=mt.MODEL_ARTIFACT)


def test_model_statement_orders_resources_like_model_signing():
    # PurePosixPath order: "a/b" < "a.b" (components), unlike plain string order
    manifest = _manifest(_layer("a.b", b"1"), _layer("a/b", b"2"), _layer("a.txt", b"3"))
    names = [p for p, _ in model_resources(manifest).files]
    assert names == ["a/b", "a.b", "a.txt"]
    st = model_statement(manifest, "team/tiny-llm")
    doc = json.loads(st.raw)
    assert doc["predicateType"] == MODEL_SIGNING_PREDICATE
    assert doc["subject"][0]["name"] == "tiny-llm"
    concatenated = b"".join(bytes.fromhex(r["digest"]) for r in doc["predicate"]["resources"])
    assert doc["subject"][0]["digest"]["sha256"] == hashlib.sha256(concatenated).hexdigest()
    assert doc["predicate"]["serialization"]["method"] == "files"
    assert doc["predicate"]["serialization"]["hash_type"] == "sha256"


def test_model_statement_matches_what_model_signing_computes(tmp_path):
    """The same files hashed by model_signing give the same resources and root digest."""
    from model_signing import hashing
    from model_signing._signing.signing import Payload

    files = {"a.b": b"x", "a/b": b"y", "a.txt": b"z", "sub/dir/w.bin": os.urandom(300)}
    root = tmp_path / "m"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    theirs = json.loads(
        __import__("google.protobuf.json_format", fromlist=["x"]).MessageToJson(
            Payload(hashing.hash(root)).statement.pb
        )
    )
    manifest = _manifest(*(_layer(rel, data) for rel, data in files.items()))
    ours = json.loads(model_statement(manifest, "m").raw)
    assert ours["subject"] == theirs["subject"]
    assert ours["predicate"]["resources"] == theirs["predicate"]["resources"]


def test_model_statement_refuses_archives_and_duplicates():
    with pytest.raises(InvalidInputError, match="archive"):
        model_resources(_manifest(_layer("d", b"t", "application/vnd.cncf.model.weight.v1.tar")))
    with pytest.raises(InvalidInputError, match="two layers"):
        model_resources(_manifest(_layer("a", b"1"), _layer("./a", b"2")))
    no_path = Descriptor.for_bytes("application/octet-stream", b"x")
    with pytest.raises(InvalidInputError, match="no file path"):
        model_resources(_manifest(no_path))


# ----------------------------------------------------------------------- keys
def test_keygen_writes_encrypted_pkcs8_with_mode_0600(tmp_path):
    key = generate_private_key()
    priv, pub = tmp_path / "cosign.key", tmp_path / "cosign.pub"
    write_key_pair(key, priv, pub, b"correct horse")
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    text = priv.read_bytes()
    assert text.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    loaded = load_private_key(priv, b"correct horse")
    assert public_key_pem(loaded.public_key()) == pub.read_bytes()
    # openssl-compatible: cryptography reads it back directly too
    serialization.load_pem_private_key(text, b"correct horse")
    with pytest.raises(InvalidInputError, match="already exists"):
        write_key_pair(key, priv, pub, b"x")


def test_wrong_or_missing_passphrase_never_echoes_it(tmp_path):
    key = generate_private_key()
    priv = tmp_path / "k.key"
    write_key_pair(key, priv, tmp_path / "k.pub", b"s3cret-passphrase")
    with pytest.raises(InvalidInputError) as missing:
        load_private_key(priv, None)
    assert "passphrase" in missing.value.message
    with pytest.raises(InvalidInputError) as wrong:
        load_private_key(priv, b"guess-123")
    assert "guess-123" not in str(wrong.value) and "s3cret" not in str(wrong.value)
    assert wrong.value.__cause__ is None and wrong.value.__suppress_context__


def test_password_env_order(monkeypatch):
    assert password_from_env({}) is None
    assert password_from_env({"COSIGN_PASSWORD": "c"}) == b"c"
    assert password_from_env({"COSIGN_PASSWORD": "c", "MODELREG_PASSWORD": "m"}) == b"m"
    assert password_from_env({"MODELREG_KEY_PASSWORD": "k", "MODELREG_PASSWORD": "m"}) == b"k"
    assert password_from_env({"COSIGN_PASSWORD": ""}) == b""


def test_unencrypted_key_and_unsupported_formats(tmp_path):
    key = generate_private_key()
    plain = tmp_path / "plain.key"
    write_key_pair(key, plain, tmp_path / "plain.pub", None)
    assert plain.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert load_private_key(plain).private_numbers() == key.private_numbers()
    cosign = tmp_path / "cosign.key"
    cosign.write_bytes(
        b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nabc\n"
        b"-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    )
    with pytest.raises(InvalidInputError, match="cosign's own"):
        load_private_key(cosign, b"x")
    with pytest.raises(InvalidInputError, match="not a PEM public key"):
        load_public_key(b"garbage")


def test_key_hint_is_what_model_signing_checks(key):
    pem = public_key_pem(key.public_key())
    assert key_hint(key.public_key()) == hashlib.sha256(pem).hexdigest()


# --------------------------------------------------------------------- bundles
def test_key_bundle_layout(key):
    st = cosign_sign_statement(Digest.from_bytes(b"m"))
    raw = KeySigner(key).sign(st)
    doc = json.loads(raw)
    assert doc["mediaType"] == BUNDLE_V03
    assert doc["verificationMaterial"] == {
        "publicKey": {"hint": key_hint(key.public_key())},
        "tlogEntries": [],
    }
    assert doc["dsseEnvelope"]["payloadType"] == "application/vnd.in-toto+json"
    assert base64.b64decode(doc["dsseEnvelope"]["payload"]) == st.raw
    parsed = parse_bundle(raw)
    assert parsed.material == "public-key" and parsed.content == "dsse-envelope"
    assert verify_envelope_signature(key.public_key(), parsed.envelope)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(mediaType="application/json"),
        lambda d: d.pop("verificationMaterial"),
        lambda d: d["verificationMaterial"].update(certificate={"rawBytes": "AA=="}),
        lambda d: d.update(messageSignature={"signature": "AA=="}),
        lambda d: d.pop("dsseEnvelope"),
    ],
)
def test_bundle_parsing_is_strict(key, mutate):
    doc = json.loads(KeySigner(key).sign(cosign_sign_statement(Digest.from_bytes(b"m"))))
    mutate(doc)
    with pytest.raises(FormatError):
        parse_bundle(json.dumps(doc).encode())


def test_oversized_bundle_is_refused_before_parsing():
    with pytest.raises(SizeLimitError):
        parse_bundle(b" " * (16 * 1024 * 1024 + 1))
