"""in-toto statements and cosign's signature statement."""

from __future__ import annotations

import json

import pytest

from modelreg.attest.intoto import COSIGN_SIGN_PREDICATE, Statement, cosign_sign_statement
from modelreg.errors import FormatError, InvalidInputError
from modelreg.oci.digest import Digest


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
