"""Sign and attest models: sigstore bundles stored as OCI referrers.

What ``sign`` writes for a manifest ``M`` (each a sigstore bundle v0.3 holding one
DSSE envelope, stored as a referrer of ``M`` in cosign v3's layout):

1. cosign's signature statement (``https://sigstore.dev/cosign/sign/v1``) with
   subject ``M``'s digest: what ``cosign verify`` and ``modelreg verify`` check;
2. for ModelPack-style manifests (one raw layer per file), the model-transparency
   v1.0 statement derived from the manifest without reading any weight, so the
   pulled directory verifies with ``model_signing verify``.

``attest`` signs any predicate about ``M`` the same way. Signing is key-based
(:class:`KeySigner`, ECDSA with ``cryptography``) or keyless
(:class:`KeylessSigner`, sigstore-python: Fulcio certificate + Rekor entry).

Everything works on a descriptor resolved once: callers resolve a tag, then
sign the digest (``Client.resolve``).

The wire formats (key files, DSSE, in-toto, bundles, referrer storage) live in
:mod:`modelreg.attest`, shared with :mod:`modelreg.verify`; this package adds
the signers, the statements chosen for a manifest and the predicates, and
re-exports the format names it has always exported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelreg.attest.bundle import (
    BUNDLE_MEDIA_TYPES,
    BUNDLE_V03,
    MAX_BUNDLE_BYTES,
    ParsedBundle,
    key_bundle,
    parse_bundle,
)
from modelreg.attest.dsse import INTOTO_PAYLOAD_TYPE, Envelope, EnvelopeSignature, pae
from modelreg.attest.intoto import (
    COSIGN_SIGN_PREDICATE,
    STATEMENT_TYPE,
    Statement,
    Subject,
    cosign_sign_statement,
)
from modelreg.attest.keys import (
    PASSWORD_ENV_VARS,
    PrivateKey,
    PublicKey,
    generate_private_key,
    key_fingerprint,
    key_hint,
    load_private_key,
    load_public_key,
    password_from_env,
    public_key_pem,
    write_key_pair,
)
from modelreg.attest.model_transparency import (
    MODEL_SIGNING_COMPAT_PREDICATE,
    MODEL_SIGNING_PREDICATE,
    ModelResources,
    model_resources,
    model_statement,
    model_subject_digest,
)
from modelreg.attest.storage import (
    ANN_BUNDLE_CONTENT,
    ANN_PREDICATE_TYPE,
    StoredBundle,
    attach_bundle,
    bundle_referrer,
    iter_bundles,
    legacy_layers,
)
from modelreg.content.base import Target
from modelreg.copy import fetch_node
from modelreg.errors import InvalidInputError
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import Manifest
from modelreg.sign._keyless import KeylessOptions, KeylessSigner, resolve_identity_token
from modelreg.sign.predicates import (
    MODEL_SCAN_PREDICATE,
    SLSA_PROVENANCE_V1,
    TRAINING_LINEAGE_PREDICATE,
    ScanFinding,
    model_scan,
    slsa_provenance,
    training_lineage,
    validate_training_lineage,
)

__all__ = [
    "ANN_BUNDLE_CONTENT",
    "ANN_PREDICATE_TYPE",
    "BUNDLE_MEDIA_TYPES",
    "BUNDLE_V03",
    "COSIGN_SIGN_PREDICATE",
    "INTOTO_PAYLOAD_TYPE",
    "MAX_BUNDLE_BYTES",
    "MODEL_SCAN_PREDICATE",
    "MODEL_SIGNING_COMPAT_PREDICATE",
    "MODEL_SIGNING_PREDICATE",
    "PASSWORD_ENV_VARS",
    "SLSA_PROVENANCE_V1",
    "STATEMENT_TYPE",
    "TRAINING_LINEAGE_PREDICATE",
    "AttachedBundle",
    "BundleSigner",
    "Envelope",
    "EnvelopeSignature",
    "KeySigner",
    "KeylessOptions",
    "KeylessSigner",
    "ModelResources",
    "ParsedBundle",
    "PrivateKey",
    "PublicKey",
    "ScanFinding",
    "SignResult",
    "Statement",
    "StoredBundle",
    "Subject",
    "attach_bundle",
    "attest",
    "bundle_referrer",
    "cosign_sign_statement",
    "generate_private_key",
    "iter_bundles",
    "key_bundle",
    "key_fingerprint",
    "key_hint",
    "legacy_layers",
    "load_private_key",
    "load_public_key",
    "model_resources",
    "model_scan",
    "model_statement",
    "model_subject_digest",
    "pae",
    "parse_bundle",
    "password_from_env",
    "public_key_pem",
    "resolve_identity_token",
    "scan_findings",
    "sign",
    "slsa_provenance",
    "training_lineage",
    "validate_training_lineage",
    "write_key_pair",
]


class BundleSigner(Protocol):
    """Turns a statement into a sigstore bundle (JSON bytes)."""

    @property
    def identity(self) -> str | None: ...

    def sign(self, statement: Statement) -> bytes: ...


class KeySigner:
    """Key-based signing: DSSE over the statement, bundle with a public-key hint."""

    def __init__(self, key: PrivateKey, *, deterministic: bool = False) -> None:
        self.key = key
        self.deterministic = deterministic

    @property
    def identity(self) -> str:
        return key_fingerprint(self.key.public_key())

    def sign(self, statement: Statement) -> bytes:
        return key_bundle(self.key, statement, deterministic=self.deterministic)


@dataclass(frozen=True)
class AttachedBundle:
    predicate_type: str
    referrer: Descriptor
    bundle: bytes = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"predicateType": self.predicate_type, "referrer": str(self.referrer.digest)}


@dataclass(frozen=True)
class SignResult:
    """What was signed (the digest) and the referrers written for it."""

    digest: str
    signer: str | None
    bundles: tuple[AttachedBundle, ...]
    notes: tuple[str, ...] = ()

    def bundle_for(self, predicate_type: str) -> bytes | None:
        for b in self.bundles:
            if b.predicate_type == predicate_type:
                return b.bundle
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "signer": self.signer,
            "referrers": [b.to_dict() for b in self.bundles],
            "notes": list(self.notes),
        }


def sign(
    target: Target,
    desc: Descriptor,
    signer: BundleSigner,
    *,
    name: str | None = None,
    model_signature: bool = True,
    created: str | None = None,
) -> SignResult:
    """Sign the manifest ``desc`` (and its files, model-transparency style).

    ``name`` is the repository name recorded in the statements' subjects
    (informational: verification binds on digests).
    """
    statement = cosign_sign_statement(desc.digest, name or "")
    bundle = signer.sign(statement)
    attached = [
        AttachedBundle(
            COSIGN_SIGN_PREDICATE,
            attach_bundle(
                target, desc, bundle, predicate_type=COSIGN_SIGN_PREDICATE, created=created
            ),
            bundle,
        )
    ]
    notes: list[str] = []
    if model_signature:
        node = fetch_node(target, desc)
        if isinstance(node, Manifest) and node.layers:
            try:
                model_stmt = model_statement(node, name or "model")
            except InvalidInputError as exc:
                notes.append(f"no model-level signature: {exc.message}")
            else:
                model_bundle = signer.sign(model_stmt)
                ref = attach_bundle(
                    target,
                    desc,
                    model_bundle,
                    predicate_type=MODEL_SIGNING_PREDICATE,
                    created=created,
                )
                attached.append(AttachedBundle(MODEL_SIGNING_PREDICATE, ref, model_bundle))
        else:
            notes.append("no model-level signature: not a manifest with file layers")
    return SignResult(str(desc.digest), signer.identity, tuple(attached), tuple(notes))


def attest(
    target: Target,
    desc: Descriptor,
    signer: BundleSigner,
    predicate_type: str,
    predicate: Mapping[str, Any],
    *,
    name: str | None = None,
    created: str | None = None,
) -> SignResult:
    """Sign ``predicate`` about ``desc`` and store it as a referrer."""
    if not predicate_type or not isinstance(predicate_type, str):
        raise InvalidInputError("an attestation needs a predicate type (a URI)")
    if not isinstance(predicate, Mapping):
        raise InvalidInputError("a predicate must be a JSON object")
    if desc.digest.algorithm != "sha256":
        raise InvalidInputError(f"cannot attest {desc.digest}: subjects are bound on sha256")
    if predicate_type == TRAINING_LINEAGE_PREDICATE:
        validate_training_lineage(dict(predicate))
    statement = Statement(
        subjects=(Subject(name or "", {"sha256": desc.digest.hex}),),
        predicate_type=predicate_type,
        predicate=dict(predicate),
    )
    bundle = signer.sign(statement)
    ref = attach_bundle(target, desc, bundle, predicate_type=predicate_type, created=created)
    return SignResult(
        str(desc.digest), signer.identity, (AttachedBundle(predicate_type, ref, bundle),)
    )


def scan_findings(target: Target, desc: Descriptor) -> list[ScanFinding]:
    """Unsafe-format (pickle) findings for the model ``desc``: for a model-scan predicate."""
    from modelreg.sign._scan import scan_manifest

    node = fetch_node(target, desc)
    if not isinstance(node, Manifest):
        raise InvalidInputError(f"{desc.digest} is an index; scan one of its manifests")
    return scan_manifest(target, node)
