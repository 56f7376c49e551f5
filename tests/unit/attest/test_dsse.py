"""DSSE envelopes: PAE, strict parsing, one signature over PAE."""

from __future__ import annotations

import json

import pytest

from modelreg.attest.dsse import Envelope, pae, sign_envelope, verify_envelope_signature
from modelreg.errors import FormatError


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
