"""The public verification types (a contract: extend only compatibly)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from modelreg._json import camel_fields

__all__ = [
    "Authority",
    "KeyAuthority",
    "KeylessAuthority",
    "VerificationPolicy",
    "VerificationResult",
    "VerifiedAttestation",
    "VerifiedSignature",
]


@dataclass(frozen=True)
class KeyAuthority:
    """A public key (PEM) whose signatures are trusted."""

    public_key_pem: bytes
    name: str = ""


@dataclass(frozen=True)
class KeylessAuthority:
    """A Sigstore identity: OIDC ``issuer`` plus exactly one of ``identity``
    (exact SAN) or ``identity_regexp`` (matched against the whole SAN)."""

    issuer: str
    identity: str | None = None
    identity_regexp: str | None = None


Authority = KeyAuthority | KeylessAuthority


@dataclass(frozen=True)
class VerificationPolicy:
    """What must hold for an artifact to verify.

    ``threshold`` counts distinct authorities (N-of-M); one key or one identity
    counts once however many bundles it made or however often it is listed.
    Attestations of ``required_attestations`` types must be signed by one of
    the authorities and name the verified digest. ``trusted_root`` is a
    sigstore ``trusted_root.json`` for keyless authorities; without it the
    production root embedded in / cached by sigstore-python is used (refreshed
    over the network only when ``offline`` is False).

    ``max_referrers`` caps the signature referrers one verification examines
    (after filtering by artifact type); None means ``$MODELREG_MAX_SIGNATURE_REFERRERS``,
    else 64. A repository with more fails closed with a message naming the cap.
    """

    authorities: tuple[Authority, ...]
    threshold: int = 1
    required_attestations: tuple[str, ...] = ()
    trusted_root: str | None = None
    offline: bool = True
    max_referrers: int | None = None


@dataclass(frozen=True)
class VerifiedSignature:
    authority: str
    kind: Literal["key", "keyless"]
    signer: str
    issuer: str | None
    bundle_digest: str

    def to_dict(self) -> dict[str, Any]:
        return camel_fields(self, "authority", "kind", "signer", "issuer", "bundle_digest")


@dataclass(frozen=True)
class VerifiedAttestation:
    predicate_type: str
    predicate: dict[str, Any]
    signer: str
    bundle_digest: str

    def to_dict(self) -> dict[str, Any]:
        return camel_fields(self, "predicate_type", "signer", "bundle_digest", "predicate")


@dataclass(frozen=True)
class VerificationResult:
    """What was verified. ``ok`` is the decision; ``failures`` say why it is
    False; ``skipped`` lists bundles that were looked at and not counted (with
    the reason), whatever the decision."""

    digest: str
    ok: bool
    signatures: tuple[VerifiedSignature, ...]
    attestations: tuple[VerifiedAttestation, ...]
    failures: tuple[str, ...]
    skipped: tuple[str, ...] = field(default=())
    threshold: int = 1
    authorities_satisfied: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            **camel_fields(self, "digest", "ok", "threshold", "authorities_satisfied"),
            "signatures": [s.to_dict() for s in self.signatures],
            "attestations": [a.to_dict() for a in self.attestations],
            "failures": list(self.failures),
            "skipped": list(self.skipped),
        }
