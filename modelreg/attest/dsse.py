"""DSSE envelopes (secure-systems-lab/dsse v1.0): PAE, parse, serialise, sign, verify.

A DSSE signature covers ``PAE(payloadType, payload)``, never the JSON around it:

    "DSSEv1" SP len(type) SP type SP len(body) SP body

where lengths are decimal byte counts. Parsing is strict: base64 must decode,
``signatures`` must be a non-empty list; callers that need *exactly one*
signature (sigstore bundles) check :attr:`Envelope.signatures` themselves.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from modelreg._json import object_list
from modelreg.attest.keys import PrivateKey, PublicKey, ecdsa_for
from modelreg.errors import FormatError

__all__ = [
    "INTOTO_PAYLOAD_TYPE",
    "Envelope",
    "EnvelopeSignature",
    "b64decode",
    "pae",
    "sign_envelope",
    "verify_envelope_signature",
]

INTOTO_PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
MAX_SIGNATURES: Final = 16


def pae(payload_type: str, payload: bytes) -> bytes:
    """The Pre-Authentication Encoding that DSSE signs."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


def b64decode(text: Any, what: str) -> bytes:
    """Decode standard or URL-safe base64 (DSSE accepts both), strictly."""
    if not isinstance(text, str):
        raise FormatError(f"{what} must be a base64 string")
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"{what} is not valid base64: {exc}") from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True, slots=True)
class EnvelopeSignature:
    sig: bytes
    keyid: str = ""

    def to_dict(self) -> dict[str, str]:
        out = {"sig": _b64(self.sig)}
        if self.keyid:
            out["keyid"] = self.keyid
        return out


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed DSSE envelope: the payload bytes exactly as signed."""

    payload: bytes
    payload_type: str
    signatures: tuple[EnvelopeSignature, ...]

    @property
    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)

    def to_dict(self) -> dict[str, Any]:
        return {
            "payload": _b64(self.payload),
            "payloadType": self.payload_type,
            "signatures": [s.to_dict() for s in self.signatures],
        }

    @classmethod
    def from_dict(cls, obj: Any, what: str = "DSSE envelope") -> Envelope:
        if not isinstance(obj, Mapping):
            raise FormatError(f"{what} must be a JSON object")
        payload_type = obj.get("payloadType")
        if not isinstance(payload_type, str) or not payload_type:
            raise FormatError(f"{what}: payloadType must be a non-empty string")
        payload = b64decode(obj.get("payload"), f"{what} payload")
        raw_sigs = object_list(
            obj, "signatures", what=what, limit=MAX_SIGNATURES, counted="carries {} signatures"
        )
        sigs = []
        for i, raw in enumerate(raw_sigs):
            sig = b64decode(raw.get("sig"), f"{what} signatures[{i}].sig")
            if not sig:
                raise FormatError(f"{what}: signatures[{i}].sig is empty")
            keyid = raw.get("keyid") or ""
            if not isinstance(keyid, str):
                raise FormatError(f"{what}: signatures[{i}].keyid must be a string")
            sigs.append(EnvelopeSignature(sig, keyid))
        return cls(payload=payload, payload_type=payload_type, signatures=tuple(sigs))


def sign_envelope(
    key: PrivateKey,
    payload: bytes,
    payload_type: str = INTOTO_PAYLOAD_TYPE,
    *,
    deterministic: bool = False,
) -> Envelope:
    """Sign ``payload`` with an EC private key; one signature, no keyid.

    ``deterministic`` uses RFC 6979 nonces (reproducible output, e.g. golden files).
    """
    algorithm = ecdsa_for(key.public_key(), deterministic=deterministic)
    signature = key.sign(pae(payload_type, payload), algorithm)
    return Envelope(payload, payload_type, (EnvelopeSignature(signature),))


def verify_envelope_signature(key: PublicKey, envelope: Envelope) -> bool:
    """True when the envelope has exactly one signature and ``key`` made it."""
    if len(envelope.signatures) != 1:
        return False
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(envelope.signatures[0].sig, envelope.pae, ecdsa_for(key))
    except InvalidSignature:
        return False
    return True
