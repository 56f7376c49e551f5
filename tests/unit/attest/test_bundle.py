"""Key-based sigstore bundles: the layout written, strict parsing, the size cap."""

from __future__ import annotations

import base64
import json

import pytest

from modelreg.attest.bundle import BUNDLE_V03, key_bundle, parse_bundle
from modelreg.attest.dsse import verify_envelope_signature
from modelreg.attest.intoto import cosign_sign_statement
from modelreg.attest.keys import key_hint
from modelreg.errors import FormatError, SizeLimitError
from modelreg.oci.digest import Digest


def test_key_bundle_layout(key):
    st = cosign_sign_statement(Digest.from_bytes(b"m"))
    raw = key_bundle(key, st)
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
    doc = json.loads(key_bundle(key, cosign_sign_statement(Digest.from_bytes(b"m"))))
    mutate(doc)
    with pytest.raises(FormatError):
        parse_bundle(json.dumps(doc).encode())


def test_oversized_bundle_is_refused_before_parsing():
    with pytest.raises(SizeLimitError):
        parse_bundle(b" " * (16 * 1024 * 1024 + 1))
