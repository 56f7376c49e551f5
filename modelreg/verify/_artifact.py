"""Verify the signatures and attestations of one manifest, by digest.

For a descriptor resolved once, every bundle referrer (and legacy cosign
``.sig``/``.att`` layer) is checked in this order, and counted only when all
steps pass:

1. the referrer names the digest as its subject, the bundle bytes match their
   descriptor and stay under the size cap;
2. the bundle parses, carries exactly one DSSE signature over an in-toto
   payload;
3. the signature verifies against a policy authority: a public key
   (``cryptography``) or a keyless identity (sigstore-python's ``Verifier``
   with the policy's trusted root: chain, SCT, transparency log, time);
4. the statement is read from the *verified* payload only, and its subject
   names the verified digest (the model-transparency statement instead has to
   describe exactly the manifest's files).

Signatures (``https://sigstore.dev/cosign/sign/v1``) count towards the
threshold over distinct authorities, one signer (key or identity) crediting at
most one authority (a maximum bipartite matching). Attestations of the required
predicate types must be signed by any policy authority.

Bounded work per decision (issue 13; the webhook, ``ci verify`` and ``verify``
all come through :func:`verify_artifact`). Whoever can push referrers decides
how many there are, so:

* legacy cosign tags are read first (two tag lookups, at most 64 layers each)
  so that the early stop below knows everything outside the referrers;
* only referrers whose artifactType is a sigstore bundle are candidates
  (:func:`~modelreg.attest.storage.bundle_referrers`: nothing else is fetched),
  ordered by :func:`~modelreg.attest.storage.order_candidates`: bundles whose
  (unauthenticated) key hint names a policy key first, then unhinted ones
  (cosign-made, keyless), then those hinted for other keys; within a group the
  predicate types the policy needs first, then newest, then by digest;
* at most ``max_referrers`` candidates are examined (default 64,
  ``$MODELREG_MAX_SIGNATURE_REFERRERS`` or ``VerificationPolicy.max_referrers``).
  When more exist and the first ones do not meet the policy, the first failure
  says so and how to raise the cap;
* candidates are fetched eight at a time but checked one by one in that order.
  For a signature-only policy the walk stops as soon as the threshold is met
  (so ``verify --key`` reports the signature that met it, not every one) or
  the candidates left could no longer meet it (each bundle credits at most one
  more authority). With required attestations all candidates are examined: a
  policy rule may put a condition on a predicate that any one of several
  attestations may pass, and a denial should report every verified statement.
  The outcome and the report depend only on the listed set, never on which
  fetch finished first.

The trade-off: an attacker who can push can also copy a key hint and forge a
``created`` date, so 64 junk bundles ranked before the real one turn a
verification into a denial (fail closed, with the cap named in the message),
never into unbounded work or a false "verified". Honest floods (many signers,
rotated keys) keep verifying: the policy's own key sorts first.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from modelreg._json import loads_strict
from modelreg.attest.bundle import parse_bundle
from modelreg.attest.dsse import INTOTO_PAYLOAD_TYPE, Envelope, verify_envelope_signature
from modelreg.attest.intoto import COSIGN_SIGN_PREDICATE, Statement
from modelreg.attest.keys import PublicKey, ecdsa_for, key_fingerprint, key_hint, load_public_key
from modelreg.attest.model_transparency import (
    MODEL_SIGNING_PREDICATE,
    model_resources,
    model_subject_digest,
)
from modelreg.attest.storage import (
    StoredBundle,
    bundle_referrers,
    fetch_bundles,
    legacy_layers,
    order_candidates,
)
from modelreg.content.base import ReadOnlyTarget
from modelreg.copy import fetch_node
from modelreg.errors import FormatError, InvalidInputError, ModelRegError, PolicyError
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import Manifest
from modelreg.settings import DEFAULT_MAX_SIGNATURE_REFERRERS, Settings
from modelreg.verify._sigstore import (
    IdentityPolicy,
    KeylessRejected,
    keyless_verifier,
    verify_keyless_bundle,
)
from modelreg.verify._types import (
    KeyAuthority,
    KeylessAuthority,
    VerificationPolicy,
    VerificationResult,
    VerifiedAttestation,
    VerifiedSignature,
)

__all__ = [
    "DEFAULT_MAX_REFERRERS",
    "MAX_REFERRERS_ENV",
    "Checked",
    "PreparedPolicy",
    "VerifyContext",
    "check_bundle",
    "prepare_policy",
    "verify_artifact",
]

COSIGN_SIMPLESIGNING_TYPE = "cosign container image signature"
DEFAULT_MAX_REFERRERS = DEFAULT_MAX_SIGNATURE_REFERRERS
"""Signature referrers one verification examines unless the policy or env says otherwise."""
MAX_REFERRERS_ENV = "MODELREG_MAX_SIGNATURE_REFERRERS"


# --------------------------------------------------------------------- policy


@dataclass(frozen=True)
class _Auth:
    index: int
    label: str
    kind: Literal["key", "keyless"]
    key: PublicKey | None = None
    fingerprint: str | None = None
    keyless: KeylessAuthority | None = None


@dataclass(frozen=True)
class PreparedPolicy:
    """A validated policy: authorities deduplicated, keys loaded."""

    policy: VerificationPolicy
    auths: tuple[_Auth, ...]
    max_referrers: int = DEFAULT_MAX_REFERRERS

    @property
    def key_auths(self) -> tuple[_Auth, ...]:
        return tuple(a for a in self.auths if a.kind == "key")

    @property
    def key_hints(self) -> frozenset[str] | None:
        """The bundle key hints of the policy keys (None: the policy has no key)."""
        keys = [a.key for a in self.key_auths if a.key is not None]
        return frozenset(key_hint(k) for k in keys) if keys else None

    @property
    def wanted_predicates(self) -> frozenset[str]:
        return frozenset((COSIGN_SIGN_PREDICATE, *self.policy.required_attestations))

    @property
    def keyless_auths(self) -> tuple[_Auth, ...]:
        return tuple(a for a in self.auths if a.kind == "keyless")


def prepare_policy(policy: VerificationPolicy, settings: Settings | None = None) -> PreparedPolicy:
    """Validate a policy; raises :class:`PolicyError` when it cannot be applied.

    ``settings`` gives the referrer cap when the policy sets none (default: from the
    environment, ``$MODELREG_MAX_SIGNATURE_REFERRERS``)."""
    if not isinstance(policy, VerificationPolicy):
        raise PolicyError("verification needs a VerificationPolicy")
    if not policy.authorities:
        raise PolicyError(
            "the verification policy names no authority (key or keyless identity)",
            hint="give --key, or --certificate-identity[-regexp] with --certificate-oidc-issuer",
        )
    auths: list[_Auth] = []
    seen: set[str] = set()
    for authority in policy.authorities:
        if isinstance(authority, KeyAuthority):
            try:
                key = load_public_key(bytes(authority.public_key_pem))
            except InvalidInputError as exc:
                raise PolicyError(
                    f"policy key {authority.name or '(unnamed)'}: {exc.message}", hint=exc.hint
                ) from exc
            fingerprint = key_fingerprint(key)
            if fingerprint in seen:
                continue  # the same key listed twice counts once
            seen.add(fingerprint)
            label = authority.name or f"key {fingerprint[:19]}"
            auths.append(_Auth(len(auths), label, "key", key=key, fingerprint=fingerprint))
        elif isinstance(authority, KeylessAuthority):
            IdentityPolicy(authority.issuer, authority.identity, authority.identity_regexp)
            ident = (
                authority.identity
                if authority.identity is not None
                else f"/{authority.identity_regexp}/"
            )
            dedupe = f"keyless|{authority.issuer}|{authority.identity}|{authority.identity_regexp}"
            if dedupe in seen:
                continue
            seen.add(dedupe)
            auths.append(
                _Auth(len(auths), f"{ident} ({authority.issuer})", "keyless", keyless=authority)
            )
        else:
            raise PolicyError(f"unknown authority type {type(authority).__name__}")
    if not isinstance(policy.threshold, int) or policy.threshold < 1:
        raise PolicyError(f"threshold must be at least 1, got {policy.threshold!r}")
    if policy.threshold > len(auths):
        raise PolicyError(
            f"threshold {policy.threshold} is more than the {len(auths)} distinct authorities",
            hint="a key or identity listed twice counts once",
        )
    for kind in policy.required_attestations:
        if not isinstance(kind, str) or not kind:
            raise PolicyError(f"required attestation type {kind!r} is not a predicate type URI")
    return PreparedPolicy(policy, tuple(auths), _max_referrers(policy, settings))


def _max_referrers(policy: VerificationPolicy, settings: Settings | None) -> int:
    value: object = policy.max_referrers
    if value is None:
        return (settings or Settings.from_env()).max_signature_referrers
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PolicyError(
            f"max_referrers must be a whole number of at least 1, got {value!r}",
            hint=f"the default is {DEFAULT_MAX_REFERRERS}",
        )
    return value


# --------------------------------------------------------------- one bundle


@dataclass
class Checked:
    """A bundle whose signature verified against at least one authority."""

    statement: Statement
    auths: list[int]
    signer_id: str
    signer: str
    issuer: str | None
    kind: Literal["key", "keyless"]
    bundle_digest: str


@dataclass
class VerifyContext:
    prepared: PreparedPolicy
    verifier: Any = None

    def keyless_verifier(self) -> Any:
        if self.verifier is None:
            p = self.prepared.policy
            self.verifier = keyless_verifier(p.trusted_root, p.offline)
        return self.verifier


def _verify_with_keys(envelope: Envelope, ctx: VerifyContext) -> list[_Auth]:
    return [
        a for a in ctx.prepared.key_auths if a.key and verify_envelope_signature(a.key, envelope)
    ]


def check_bundle(data: bytes, bundle_digest: str, ctx: VerifyContext) -> Checked | str:
    """Verify one bundle's signature; returns the verified statement or why not."""
    try:
        parsed = parse_bundle(data)
    except (FormatError, ModelRegError) as exc:
        return f"not a usable sigstore bundle: {exc.message}"
    if parsed.envelope is None:
        return "a message-signature bundle (not DSSE): not verified by modelreg"
    if parsed.envelope.payload_type != INTOTO_PAYLOAD_TYPE:
        return f"unexpected DSSE payloadType {parsed.envelope.payload_type!r}"
    if len(parsed.envelope.signatures) != 1:
        return (
            f"DSSE envelope carries {len(parsed.envelope.signatures)} signatures; exactly 1 allowed"
        )
    kind: Literal["key", "keyless"]
    if parsed.material == "public-key":
        if not ctx.prepared.key_auths:
            return "key-signed bundle, but the policy names no key"
        matched = _verify_with_keys(parsed.envelope, ctx)
        if not matched:
            return "signed by a key that is not in the policy (or the signature is invalid)"
        payload = parsed.envelope.payload
        first = matched[0]
        signer_id = f"key|{first.fingerprint}"
        signer, issuer, kind = str(first.fingerprint), None, "key"
        auth_indexes = [a.index for a in matched]
    else:
        if not ctx.prepared.keyless_auths:
            return "keyless (certificate) bundle, but the policy names no keyless identity"
        reasons: list[str] = []
        auth_indexes = []
        payload = b""
        signer = ""
        issuer = None
        for auth in ctx.prepared.keyless_auths:
            assert auth.keyless is not None
            ident = IdentityPolicy(
                auth.keyless.issuer, auth.keyless.identity, auth.keyless.identity_regexp
            )
            try:
                payload_type, verified_payload, san, iss = verify_keyless_bundle(
                    ctx.keyless_verifier(), data, ident
                )
            except KeylessRejected as exc:
                reasons.append(str(exc))
                continue
            if payload_type != INTOTO_PAYLOAD_TYPE:
                return f"unexpected DSSE payloadType {payload_type!r}"
            auth_indexes.append(auth.index)
            payload, signer, issuer = verified_payload, san, iss
        if not auth_indexes:
            unique = list(dict.fromkeys(reasons))
            return "keyless bundle rejected: " + "; ".join(unique[:3])
        signer_id = f"keyless|{issuer}|{signer}"
        kind = "keyless"
    try:
        statement = Statement.parse(payload, "signed statement")
    except FormatError as exc:
        return exc.message
    return Checked(statement, auth_indexes, signer_id, signer, issuer, kind, bundle_digest)


# ----------------------------------------------------------------- legacy cosign


def _check_legacy_sig(
    data: bytes, signature: bytes, bundle_digest: str, ctx: VerifyContext
) -> Checked | str:
    matched: list[_Auth] = []
    for auth in ctx.prepared.key_auths:
        assert auth.key is not None
        if not isinstance(auth.key, ec.EllipticCurvePublicKey):
            continue
        try:
            auth.key.verify(signature, data, ecdsa_for(auth.key))
        except InvalidSignature:
            continue
        matched.append(auth)
    if not matched:
        return "legacy cosign signature not made by a policy key"
    try:
        doc = loads_strict(data, what="legacy cosign signature payload")
        critical = doc["critical"]
        signed_digest = critical["image"]["docker-manifest-digest"]
        kind = critical["type"]
    except (FormatError, KeyError, TypeError):
        return "legacy cosign signature payload is not a simple-signing document"
    if kind != COSIGN_SIMPLESIGNING_TYPE:
        return f"legacy cosign payload type {kind!r}"
    # Present it as the equivalent cosign v3 statement (verified above).
    statement = Statement.parse(
        json.dumps(
            {
                "_type": "https://in-toto.io/Statement/v1",
                "subject": [{"name": "", "digest": _digest_map(str(signed_digest))}],
                "predicateType": COSIGN_SIGN_PREDICATE,
                "predicate": {},
            }
        ).encode()
    )
    return _checked_by_keys(statement, matched, bundle_digest)


def _checked_by_keys(statement: Statement, matched: list[_Auth], bundle_digest: str) -> Checked:
    """A legacy cosign layer verified by the policy keys in ``matched`` (first names it)."""
    first = matched[0]
    return Checked(
        statement,
        [a.index for a in matched],
        f"key|{first.fingerprint}",
        str(first.fingerprint),
        None,
        "key",
        bundle_digest,
    )


def _digest_map(text: str) -> dict[str, str]:
    alg, _, hex_value = text.partition(":")
    return {alg: hex_value.lower()} if hex_value else {}


def _check_legacy_att(data: bytes, bundle_digest: str, ctx: VerifyContext) -> Checked | str:
    try:
        what = "legacy cosign attestation"
        envelope = Envelope.from_dict(loads_strict(data, what=what), what)
    except (ValueError, FormatError) as exc:
        return f"legacy cosign attestation is not a DSSE envelope: {exc}"
    if envelope.payload_type != INTOTO_PAYLOAD_TYPE:
        return f"unexpected DSSE payloadType {envelope.payload_type!r}"
    if len(envelope.signatures) != 1:
        return f"DSSE envelope carries {len(envelope.signatures)} signatures; exactly 1 allowed"
    matched = _verify_with_keys(envelope, ctx)
    if not matched:
        return "legacy cosign attestation not signed by a policy key"
    try:
        statement = Statement.parse(envelope.payload, "legacy attestation statement")
    except FormatError as exc:
        return exc.message
    return _checked_by_keys(statement, matched, bundle_digest)


# --------------------------------------------------------------------- matching


def max_matching(edges: dict[str, set[int]]) -> dict[str, int]:
    """Maximum bipartite matching signer -> authority (Kuhn's augmenting paths)."""
    owner: dict[int, str] = {}

    def augment(signer: str, visited: set[int]) -> bool:
        for auth in sorted(edges[signer]):
            if auth in visited:
                continue
            visited.add(auth)
            if auth not in owner or augment(owner[auth], visited):
                owner[auth] = signer
                return True
        return False

    for signer in sorted(edges):
        augment(signer, set())
    return {signer: auth for auth, signer in owner.items()}


# --------------------------------------------------------------------- the walk


@dataclass
class _Walk:
    desc: Descriptor
    ctx: VerifyContext
    target: ReadOnlyTarget
    manifest: Manifest | None = None
    manifest_loaded: bool = False
    signatures: list[Checked] = field(default_factory=list)
    attestations: list[Checked] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def satisfied(self) -> int:
        """Distinct authorities credited so far (the maximum matching)."""
        edges: dict[str, set[int]] = {}
        for sig in self.signatures:
            edges.setdefault(sig.signer_id, set()).update(sig.auths)
        return len(max_matching(edges))

    def missing_attestations(self) -> list[str]:
        present = {a.statement.predicate_type for a in self.attestations}
        return [k for k in self.ctx.prepared.policy.required_attestations if k not in present]

    def still_needed(self) -> int:
        """Bundles that must still verify: each adds one authority or one attestation type."""
        policy = self.ctx.prepared.policy
        missing_signers = max(0, policy.threshold - self.satisfied())
        return missing_signers + len(self.missing_attestations())

    def load_manifest(self) -> Manifest | None:
        if not self.manifest_loaded:
            self.manifest_loaded = True
            node = fetch_node(self.target, self.desc)
            self.manifest = node if isinstance(node, Manifest) else None
        return self.manifest

    def classify(self, checked: Checked, where: str) -> None:
        st = checked.statement
        if st.predicate_type == MODEL_SIGNING_PREDICATE:
            reason = self.model_statement_mismatch(st)
            if reason:
                self.skipped.append(f"{where}: {reason}")
                return
            self.attestations.append(checked)
            return
        if not st.has_subject_digest(self.desc.digest):
            named = ", ".join(
                f"{alg}:{value[:12]}" for s in st.subjects for alg, value in s.digest.items()
            )
            self.skipped.append(
                f"{where}: statement ({st.predicate_type}) is about {named or 'nothing'}, "
                f"not {self.desc.digest}"
            )
            return
        if st.predicate_type == COSIGN_SIGN_PREDICATE:
            self.signatures.append(checked)
        else:
            self.attestations.append(checked)

    def model_statement_mismatch(self, st: Statement) -> str | None:
        """Why a model-transparency statement does not describe this manifest."""
        manifest = self.load_manifest()
        if manifest is None:
            return "model-level statement for a digest that is not an image manifest"
        try:
            expected = model_resources(manifest)
        except InvalidInputError as exc:
            return (
                f"model-level statement, but the manifest has no file-by-file form: {exc.message}"
            )
        resources = st.predicate.get("resources")
        if not isinstance(resources, list):
            return "model-level statement without resources"
        listed: list[tuple[str, str]] = []
        for r in resources:
            if not isinstance(r, dict) or r.get("algorithm") != "sha256":
                return "model-level statement with a non-sha256 resource"
            listed.append((str(r.get("name")), str(r.get("digest"))))
        if len(st.subjects) != 1 or st.subjects[0].digest.get("sha256") != model_subject_digest(
            listed
        ):
            return "model-level statement whose subject digest does not match its resources"
        if sorted(listed) != sorted(expected.files):
            return "model-level statement lists other files or digests than the manifest"
        return None


def verify_artifact(
    target: ReadOnlyTarget,
    desc: Descriptor,
    policy: VerificationPolicy,
    *,
    settings: Settings | None = None,
) -> VerificationResult:
    """Verify ``desc`` (already resolved to a digest) in ``target`` against ``policy``.

    Never raises for "not verified": ``ok`` is False and ``failures`` say why.
    Raises :class:`ModelRegError` when verification could not run (registry
    unreachable, invalid policy, unreadable trusted root): callers treat that
    as a failure too.
    """
    prepared = prepare_policy(policy, settings)
    walk = _Walk(desc, VerifyContext(prepared), target)
    _walk_legacy(walk)
    listed = order_candidates(
        bundle_referrers(target, desc),
        key_hints=prepared.key_hints,
        predicate_types=prepared.wanted_predicates,
    )
    cap = prepared.max_referrers
    _walk_bundles(walk, listed[:cap])
    notes: list[str] = []
    if len(listed) > cap and walk.still_needed():
        notes.append(
            f"{len(listed)} signature referrers on {desc.digest}; examined the first {cap} "
            "(bundles hinted for a policy key first, then newest) and they do not meet the "
            f"policy; raise the cap with {MAX_REFERRERS_ENV}=N (or the policy's max_referrers), "
            "or delete the referrers you do not trust (list them with `modelreg referrers`)"
        )
    return _decide(walk, prepared, notes)


def _walk_legacy(walk: _Walk) -> None:
    ctx = walk.ctx
    for legacy in legacy_layers(walk.target, walk.desc):
        where = f"legacy cosign .{legacy.kind} layer {legacy.layer.digest.short}"
        if legacy.has_certificate:
            walk.skipped.append(f"{where}: legacy keyless signatures are not verified; re-sign")
            continue
        if legacy.kind == "sig":
            assert legacy.signature is not None
            checked = _check_legacy_sig(
                legacy.data, legacy.signature, str(legacy.layer.digest), ctx
            )
        else:
            checked = _check_legacy_att(legacy.data, str(legacy.layer.digest), ctx)
        if isinstance(checked, str):
            walk.skipped.append(f"{where}: {checked}")
        else:
            walk.classify(checked, where)


def _walk_bundles(walk: _Walk, candidates: list[Descriptor]) -> None:
    """Check ``candidates`` in order, stopping early for a signature-only policy.

    With required attestations every candidate is examined: a policy rule may
    put a condition on a predicate that any one of several attestations may
    pass, and a failed decision should still report every verified statement.
    """
    early = not walk.ctx.prepared.policy.required_attestations
    remaining = len(candidates)
    if early and _can_stop(walk, remaining):
        return
    fetched = fetch_bundles(walk.target, walk.desc, candidates)
    with contextlib.closing(fetched):  # cancels the fetches not needed any more
        for item in fetched:
            remaining -= 1
            if isinstance(item, tuple):
                referrer, error = item
                walk.skipped.append(f"referrer {referrer.digest.short}: {error.message}")
            else:
                _consider(walk, item)
            if early and _can_stop(walk, remaining):
                return


def _can_stop(walk: _Walk, remaining: int) -> bool:
    """The threshold is met, or ``remaining`` bundles could not meet it."""
    needed = walk.still_needed()
    if needed > remaining:
        walk.skipped.append(
            f"{remaining} signature referrer(s) not examined: too few left to meet the policy"
        )
        return True
    return not needed


def _consider(walk: _Walk, stored: StoredBundle) -> None:
    where = f"bundle {stored.layer.digest.short}"
    checked = check_bundle(stored.data, str(stored.layer.digest), walk.ctx)
    if isinstance(checked, str):
        walk.skipped.append(f"{where}: {checked}")
        return
    walk.classify(checked, where)


def _decide(walk: _Walk, prepared: PreparedPolicy, notes: list[str]) -> VerificationResult:
    policy = prepared.policy
    labels = {a.index: a.label for a in prepared.auths}
    edges: dict[str, set[int]] = {}
    for sig in walk.signatures:
        edges.setdefault(sig.signer_id, set()).update(sig.auths)
    matching = max_matching(edges)
    satisfied = len(matching)
    signatures = tuple(
        VerifiedSignature(
            authority=labels[matching.get(sig.signer_id, sig.auths[0])],
            kind=sig.kind,
            signer=sig.signer,
            issuer=sig.issuer,
            bundle_digest=sig.bundle_digest,
        )
        for sig in walk.signatures
    )
    attestations = tuple(
        VerifiedAttestation(
            predicate_type=a.statement.predicate_type,
            predicate=dict(a.statement.predicate),
            signer=a.signer,
            bundle_digest=a.bundle_digest,
        )
        for a in walk.attestations
    )
    failures: list[str] = list(notes)  # first: callers show only the first few
    if satisfied < policy.threshold:
        failures.append(
            f"signature threshold not met: {satisfied} of the required {policy.threshold} "
            f"authorities signed {walk.desc.digest}"
        )
    present = {a.predicate_type for a in attestations}
    for kind in policy.required_attestations:
        if kind not in present:
            failures.append(
                f"required attestation {kind} is missing (none signed by a policy authority "
                f"for {walk.desc.digest})"
            )
    if failures and walk.skipped:
        failures.extend(walk.skipped[:20])
    return VerificationResult(
        digest=str(walk.desc.digest),
        ok=not failures,
        signatures=signatures,
        attestations=attestations,
        failures=tuple(failures),
        skipped=tuple(walk.skipped),
        threshold=policy.threshold,
        authorities_satisfied=satisfied,
    )
