"""Sigstore bundles (v0.1-v0.3): build key-based ones, parse any of them.

A key-based bundle (what ``cosign sign --key`` and ``model_signing sign key``
write in the new format)::

    {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
     "verificationMaterial": {"publicKey": {"hint": "<hex sha256 of the PEM>"},
                              "tlogEntries": []},
     "dsseEnvelope": {"payload": ..., "payloadType": ..., "signatures": [{"sig": ...}]}}

Keyless bundles (certificate + transparency-log entry) are produced and
verified by sigstore-python; here they are only recognised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from modelreg._json import canonical_json, loads_strict
from modelreg.attest.dsse import Envelope, sign_envelope
from modelreg.attest.intoto import Statement
from modelreg.attest.keys import PrivateKey, key_hint
from modelreg.errors import FormatError

__all__ = [
    "BUNDLE_MEDIA_TYPES",
    "BUNDLE_V03",
    "MAX_BUNDLE_BYTES",
    "ParsedBundle",
    "key_bundle",
    "parse_bundle",
]

BUNDLE_V03: Final = "application/vnd.dev.sigstore.bundle.v0.3+json"
BUNDLE_MEDIA_TYPES: Final = frozenset(
    {
        BUNDLE_V03,
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
    }
)
MAX_BUNDLE_BYTES: Final = 16 * 1024 * 1024
"""A bundle is refused above this size before it is read (SECURITY.md case 5)."""

MaterialKind = Literal["public-key", "certificate", "certificate-chain"]


@dataclass(frozen=True, slots=True)
class ParsedBundle:
    """The parts of a bundle modelreg looks at; ``raw`` is the JSON it came from."""

    media_type: str
    material: MaterialKind
    envelope: Envelope | None
    has_message_signature: bool
    key_hint: str | None
    raw: bytes

    @property
    def content(self) -> str:
        """``dev.sigstore.bundle.content``: ``dsse-envelope`` or ``message-signature``."""
        return "dsse-envelope" if self.envelope is not None else "message-signature"


def key_bundle(key: PrivateKey, statement: Statement, *, deterministic: bool = False) -> bytes:
    """Sign ``statement`` with ``key`` and wrap it in a v0.3 bundle (JSON bytes)."""
    envelope = sign_envelope(key, statement.raw, deterministic=deterministic)
    doc = {
        "mediaType": BUNDLE_V03,
        "verificationMaterial": {
            "publicKey": {"hint": key_hint(key.public_key())},
            "tlogEntries": [],
        },
        "dsseEnvelope": envelope.to_dict(),
    }
    return canonical_json(doc)


def parse_bundle(data: bytes, what: str = "sigstore bundle") -> ParsedBundle:
    """Parse the outer structure of a bundle; signatures are not checked here."""
    obj: Any = loads_strict(data, what=what, max_bytes=MAX_BUNDLE_BYTES)
    if not isinstance(obj, dict):
        raise FormatError(f"{what} must be a JSON object")
    media_type = obj.get("mediaType")
    if media_type not in BUNDLE_MEDIA_TYPES:
        raise FormatError(
            f"{what} has mediaType {media_type!r}",
            hint=f"supported: {', '.join(sorted(BUNDLE_MEDIA_TYPES))}",
        )
    vm = obj.get("verificationMaterial")
    if not isinstance(vm, dict):
        raise FormatError(f"{what} has no verificationMaterial")
    material: MaterialKind
    hint: str | None = None
    present = [k for k in ("publicKey", "certificate", "x509CertificateChain") if k in vm]
    if len(present) != 1:
        raise FormatError(
            f"{what} must carry exactly one of publicKey, certificate, x509CertificateChain"
        )
    if present[0] == "publicKey":
        material = "public-key"
        pk = vm["publicKey"]
        if not isinstance(pk, dict):
            raise FormatError(f"{what}: publicKey must be an object")
        raw_hint = pk.get("hint")
        hint = raw_hint if isinstance(raw_hint, str) else None
    elif present[0] == "certificate":
        material = "certificate"
    else:
        material = "certificate-chain"
    has_dsse = "dsseEnvelope" in obj and obj["dsseEnvelope"] is not None
    has_msg = "messageSignature" in obj and obj["messageSignature"] is not None
    if has_dsse == has_msg:
        raise FormatError(f"{what} must carry exactly one of dsseEnvelope, messageSignature")
    envelope = Envelope.from_dict(obj["dsseEnvelope"], f"{what} envelope") if has_dsse else None
    return ParsedBundle(
        media_type=media_type,
        material=material,
        envelope=envelope,
        has_message_signature=has_msg,
        key_hint=hint,
        raw=bytes(data),
    )
