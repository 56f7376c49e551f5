"""Keyless bundles through sigstore-python's ``Verifier``, with our identity policy.

sigstore-python checks, for a certificate bundle: a verified time (the log's
integrated time under a signed entry timestamp, or an RFC 3161 timestamp), the
chain to the trusted root's Fulcio CA at that time, the embedded SCT against
the CT log keys, key usage and the code-signing EKU, the identity policy, the
Merkle inclusion proof and its signed checkpoint, the signed entry timestamp,
the certificate's validity at the verified time, the DSSE signature, and that
the log entry matches the bundle. Nothing here weakens any of that: the
identity policy is one more check (issuer equal, SAN exact or fully matching
an anchored regular expression).

No network I/O: a trusted root given as a file is read from disk; without one
the production root comes from sigstore-python's TUF cache (``offline=True``:
no refresh) or is refreshed over the network (``offline=False``).
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any, Final

from modelreg.errors import PolicyError

__all__ = [
    "IdentityPolicy",
    "KeylessRejected",
    "cert_identities",
    "cert_issuer",
    "keyless_verifier",
    "verify_keyless_bundle",
]

OIDC_ISSUER_V1: Final = "1.3.6.1.4.1.57264.1.1"
OIDC_ISSUER_V2: Final = "1.3.6.1.4.1.57264.1.8"
OTHERNAME_SAN: Final = "1.3.6.1.4.1.57264.1.7"

_cache_lock = threading.Lock()
_verifiers: dict[tuple[str, int, int] | tuple[str, bool], Any] = {}


class KeylessRejected(Exception):
    """A keyless bundle that does not verify (the message says which step)."""


def _decode_utf8_der(raw: bytes) -> str | None:
    """The value of a DER UTF8String (tag 0x0c), or None."""
    if len(raw) < 2 or raw[0] != 0x0C:
        return None
    length = raw[1]
    offset = 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(raw[2 : 2 + n], "big")
        offset = 2 + n
    try:
        return raw[offset : offset + length].decode("utf-8")
    except UnicodeDecodeError:
        return None


def cert_issuer(cert: Any) -> str | None:
    """The OIDC issuer Fulcio recorded (v2 extension first, then the legacy one)."""
    from cryptography import x509

    for oid, der in ((OIDC_ISSUER_V2, True), (OIDC_ISSUER_V1, False)):
        try:
            ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
        except x509.ExtensionNotFound:
            continue
        raw = ext.value.value
        if der:
            value = _decode_utf8_der(raw)
            if value is not None:
                return value
        else:
            try:
                return str(raw.decode("utf-8"))
            except UnicodeDecodeError:
                return None
    return None


def cert_identities(cert: Any) -> list[str]:
    """SAN values Sigstore uses as identities: emails, URIs, Sigstore other-names."""
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out: list[str] = list(san.get_values_for_type(x509.RFC822Name))
    out.extend(san.get_values_for_type(x509.UniformResourceIdentifier))
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id.dotted_string == OTHERNAME_SAN:
            value = _decode_utf8_der(other.value)
            if value is not None:
                out.append(value)
    return out


class IdentityPolicy:
    """sigstore ``VerificationPolicy``: issuer equal; SAN exact or fullmatch."""

    def __init__(self, issuer: str, identity: str | None, identity_regexp: str | None) -> None:
        if (identity is None) == (identity_regexp is None):
            raise PolicyError(
                "a keyless authority needs exactly one of identity or identity_regexp",
                hint="give --certificate-identity or --certificate-identity-regexp, not both",
            )
        if not issuer:
            raise PolicyError("a keyless authority needs an OIDC issuer")
        self.issuer = issuer
        self.identity = identity
        try:
            self.pattern = re.compile(identity_regexp) if identity_regexp is not None else None
        except re.error as exc:
            raise PolicyError(
                f"invalid identity regular expression {identity_regexp!r}: {exc}"
            ) from exc
        self.matched: str | None = None

    def matches(self, san: str) -> bool:
        if self.identity is not None:
            return san == self.identity
        assert self.pattern is not None
        return self.pattern.fullmatch(san) is not None

    def verify(self, cert: Any) -> None:
        from sigstore.errors import VerificationError as SigstoreVerificationError

        issuer = cert_issuer(cert)
        if issuer != self.issuer:
            raise SigstoreVerificationError(
                f"certificate issuer is {issuer!r}, the policy wants {self.issuer!r}"
            )
        for san in cert_identities(cert):
            if self.matches(san):
                self.matched = san
                return
        wanted = self.identity if self.identity is not None else f"/{self.pattern.pattern}/"  # type: ignore[union-attr]
        raise SigstoreVerificationError(
            f"certificate identities {cert_identities(cert)} do not match {wanted}"
        )


def keyless_verifier(trusted_root: str | None, offline: bool) -> Any:
    """A sigstore ``Verifier`` for a trusted root file (cached by path, size, mtime)."""
    from sigstore.models import ClientTrustConfig, TrustedRoot
    from sigstore.verify import Verifier

    key: tuple[str, int, int] | tuple[str, bool]
    if trusted_root is not None:
        try:
            st = os.stat(trusted_root)
        except OSError as exc:
            raise PolicyError(
                f"cannot read the trusted root {trusted_root!r}: {exc.strerror}",
                hint="pass --trusted-root with a sigstore trusted_root.json",
            ) from exc
        key = (os.path.abspath(trusted_root), st.st_size, st.st_mtime_ns)
    else:
        key = ("<production>", offline)
    with _cache_lock:
        cached = _verifiers.get(key)
    if cached is not None:
        return cached
    try:
        if trusted_root is not None:
            verifier = Verifier(trusted_root=TrustedRoot.from_file(trusted_root))
        else:
            config = ClientTrustConfig.production(offline=offline)
            verifier = Verifier(trusted_root=config.trusted_root)
    except Exception as exc:
        where = trusted_root or "the Sigstore production trust root"
        raise PolicyError(
            f"cannot load {where}: {type(exc).__name__}: {exc}",
            hint="pass --trusted-root with a valid sigstore trusted_root.json",
        ) from exc
    with _cache_lock:
        _verifiers[key] = verifier
    return verifier


def verify_keyless_bundle(
    verifier: Any, bundle_json: bytes, policy: IdentityPolicy
) -> tuple[str, bytes, str, str]:
    """Verify a certificate bundle; returns (payloadType, payload, identity, issuer)."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle

    try:
        bundle = Bundle.from_json(bundle_json)
        payload_type, payload = verifier.verify_dsse(bundle, policy)
    except SigstoreError as exc:
        raise KeylessRejected(str(exc).strip() or type(exc).__name__) from None
    except Exception as exc:  # fail closed: anything unexpected is a rejection
        raise KeylessRejected(f"keyless bundle rejected: {type(exc).__name__}: {exc}") from None
    return str(payload_type), bytes(payload), policy.matched or "", policy.issuer
