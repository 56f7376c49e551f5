"""Signing keys: ECDSA P-256 (also P-384/P-521) as PEM, private keys encrypted.

* ``generate_key_pair`` writes PKCS#8 ``ENCRYPTED PRIVATE KEY`` PEM (the best
  encryption ``cryptography`` offers) and a SubjectPublicKeyInfo public key PEM;
  ``model_signing`` and ``openssl`` read both.
* The passphrase comes from ``MODELREG_KEY_PASSWORD``, ``MODELREG_PASSWORD`` or
  ``COSIGN_PASSWORD`` (first one set), or from the caller (the CLI prompts).
  It never appears in an error message.
* Private key files are written with mode 0600, never over an existing file
  unless asked, and atomically: a failed write leaves what was there.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelreg._fs import atomic_write
from modelreg.errors import InvalidInputError

__all__ = [
    "PASSWORD_ENV_VARS",
    "PrivateKey",
    "PublicKey",
    "ecdsa_for",
    "generate_private_key",
    "key_fingerprint",
    "key_hint",
    "load_private_key",
    "load_public_key",
    "password_from_env",
    "private_key_pem",
    "public_key_pem",
    "write_key_pair",
]

PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey

PASSWORD_ENV_VARS: Final = ("MODELREG_KEY_PASSWORD", "MODELREG_PASSWORD", "COSIGN_PASSWORD")
_CURVES: Final[dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}
MAX_KEY_FILE: Final = 64 * 1024


def ecdsa_for(key: PublicKey, *, deterministic: bool = False) -> ec.ECDSA:
    """ECDSA with the hash that goes with the curve (P-256/SHA-256, ...)."""
    hash_cls = _CURVES.get(key.curve.name)
    if hash_cls is None:
        raise InvalidInputError(
            f"unsupported elliptic curve {key.curve.name}",
            hint="use an ECDSA P-256, P-384 or P-521 key",
        )
    return ec.ECDSA(hash_cls(), deterministic_signing=deterministic)


def password_from_env(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The key passphrase from the environment, or None when no variable is set."""
    env = os.environ if environ is None else environ
    for name in PASSWORD_ENV_VARS:
        value = env.get(name)
        if value is not None:
            return value.encode("utf-8")
    return None


def generate_private_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: PrivateKey, password: bytes | None) -> bytes:
    """PKCS#8 PEM, encrypted unless ``password`` is empty or None."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def public_key_pem(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_fingerprint(key: PublicKey) -> str:
    """``sha256:<hex>`` of the DER SubjectPublicKeyInfo: one key, one identity."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def key_hint(key: PublicKey) -> str:
    """``verificationMaterial.publicKey.hint``: hex SHA-256 of the public key PEM.

    The form ``model_signing`` writes and checks; other verifiers treat the hint
    as an opaque lookup key.
    """
    return hashlib.sha256(public_key_pem(key)).hexdigest()


def _read_small(path: str | os.PathLike[str], what: str) -> bytes:
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_KEY_FILE:
            raise InvalidInputError(f"{what} {str(p)!r} is {size} bytes: not a PEM key file")
        return p.read_bytes()
    except FileNotFoundError as exc:
        raise InvalidInputError(f"{what} {str(p)!r} does not exist") from exc
    except IsADirectoryError as exc:
        raise InvalidInputError(f"{what} {str(p)!r} is a directory") from exc
    except PermissionError as exc:
        raise InvalidInputError(f"cannot read {what} {str(p)!r}: permission denied") from exc


def load_private_key(
    source: str | os.PathLike[str] | bytes, password: bytes | None = None
) -> PrivateKey:
    """Load an EC private key from a PEM file (or PEM bytes)."""
    data = source if isinstance(source, bytes) else _read_small(source, "private key file")
    label = "the private key" if isinstance(source, bytes) else f"private key {str(source)!r}"
    if b"ENCRYPTED SIGSTORE PRIVATE KEY" in data or b"ENCRYPTED COSIGN PRIVATE KEY" in data:
        raise InvalidInputError(
            f"{label} is in cosign's own encrypted format, which modelreg does not read",
            hint="generate a key with `modelreg keygen`, or convert it to PKCS#8 PEM with openssl",
        )
    encrypted = b"ENCRYPTED" in data or b"Proc-Type: 4,ENCRYPTED" in data
    if encrypted and not password:
        raise InvalidInputError(
            f"{label} is encrypted and no passphrase was given",
            hint="set MODELREG_KEY_PASSWORD (or COSIGN_PASSWORD), or run in a terminal to be asked",
        )
    try:
        key = serialization.load_pem_private_key(data, password if encrypted else None)
    except (ValueError, TypeError) as exc:
        if encrypted:
            raise InvalidInputError(
                f"cannot decrypt {label}: wrong passphrase or damaged file",
                hint="check MODELREG_KEY_PASSWORD / COSIGN_PASSWORD",
            ) from None
        raise InvalidInputError(
            f"{label} is not a PEM private key", hint="expected '-----BEGIN PRIVATE KEY-----'"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in _CURVES:
        raise InvalidInputError(
            f"{label} is not an ECDSA P-256/P-384/P-521 key",
            hint="generate one with `modelreg keygen`",
        )
    return key


def load_public_key(source: str | os.PathLike[str] | bytes) -> PublicKey:
    """Load an EC public key from a PEM file or PEM bytes (SubjectPublicKeyInfo)."""
    data = source if isinstance(source, bytes) else _read_small(source, "public key file")
    label = "the public key" if isinstance(source, bytes) else f"public key {str(source)!r}"
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(
            f"{label} is not a PEM public key",
            hint="expected '-----BEGIN PUBLIC KEY-----' (e.g. modelreg.pub from `modelreg keygen`)",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _CURVES:
        raise InvalidInputError(f"{label} is not an ECDSA P-256/P-384/P-521 public key")
    return key


def write_key_pair(
    key: PrivateKey,
    private_path: str | os.PathLike[str],
    public_path: str | os.PathLike[str],
    password: bytes | None,
    *,
    force: bool = False,
) -> None:
    """Write the private key (0600, encrypted when ``password``) and its public key."""
    priv = Path(private_path)
    pub = Path(public_path)
    for path in (priv, pub):
        if path.exists() and not force:
            raise InvalidInputError(
                f"{str(path)!r} already exists", hint="choose another name or pass --force"
            )
    atomic_write(priv, private_key_pem(key, password), mode=0o600, overwrite=force)
    atomic_write(pub, public_key_pem(key.public_key()), overwrite=force)
