"""Key files: encrypted PKCS#8 PEM, passphrases, the public-key hint."""

from __future__ import annotations

import hashlib
import stat

import pytest
from cryptography.hazmat.primitives import serialization

from modelreg.attest.keys import (
    generate_private_key,
    key_hint,
    load_private_key,
    load_public_key,
    password_from_env,
    public_key_pem,
    write_key_pair,
)
from modelreg.errors import InvalidInputError


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
