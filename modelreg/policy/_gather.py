"""The I/O step: resolve a reference, describe the artifact, verify it under each policy.

Everything that can fail here becomes a :class:`StepError` in the facts (fail closed:
the pure evaluation turns it into ``error`` results, never into a pass). Only
:class:`~modelreg.errors.ModelRegError` is expected from the library; anything else is
recorded too, with its type, so that a bug denies rather than crashes a webhook.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from modelreg.content.base import ReadOnlyTarget, fetch_bytes
from modelreg.copy import fetch_node
from modelreg.errors import ModelRegError, PolicyError
from modelreg.model import annotations as ann
from modelreg.model.unpack import layer_path
from modelreg.oci.canonical import canonical_reference
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import Manifest
from modelreg.policy._evaluate import REFERENCE_STEP, applicable
from modelreg.policy._facts import (
    ANN_FILE_UNSAFE,
    ArtifactFacts,
    Facts,
    FileFact,
    StepError,
    VerificationOutcome,
)
from modelreg.policy._policy import KeyAuthoritySpec, Policy

__all__ = [
    "MAX_CONFIG_BYTES",
    "Verifier",
    "default_verifier",
    "gather_facts",
    "verification_policy",
]

MAX_CONFIG_BYTES: Final = 4 * 1024 * 1024

Verifier = Callable[[ReadOnlyTarget, Descriptor, Policy], VerificationOutcome]
"""Verifies ``desc`` under a policy's authorities; may raise ModelRegError."""


def verification_policy(policy: Policy) -> Any:
    """The ``modelreg.verify.VerificationPolicy`` for a policy's signature requirements."""
    if policy.signatures is None:
        raise PolicyError(f"policy {policy.name} requires no signature")
    try:
        verify = importlib.import_module("modelreg.verify")
    except ImportError as exc:
        raise PolicyError(
            "signature verification is not available in this build (modelreg.verify missing)",
            hint="install a modelreg release that includes signature verification",
        ) from exc
    authorities = []
    for spec in policy.signatures.authorities:
        if isinstance(spec, KeyAuthoritySpec):
            authorities.append(
                verify.KeyAuthority(public_key_pem=spec.public_key_pem, name=spec.name)
            )
        else:
            authorities.append(
                verify.KeylessAuthority(
                    issuer=spec.issuer,
                    identity=spec.identity,
                    identity_regexp=spec.anchored_regexp,
                )
            )
    return verify.VerificationPolicy(
        authorities=tuple(authorities),
        threshold=policy.signatures.threshold,
        required_attestations=policy.attestation_types,
        trusted_root=policy.signatures.trusted_root,
        offline=True,
    )


def default_verifier(
    target: ReadOnlyTarget, desc: Descriptor, policy: Policy
) -> VerificationOutcome:
    verify = importlib.import_module("modelreg.verify")
    result: VerificationOutcome = verify.verify_artifact(target, desc, verification_policy(policy))
    return result


def artifact_facts(target: ReadOnlyTarget, desc: Descriptor) -> ArtifactFacts:
    """Describe an artifact from its manifest and config (no layer is read)."""
    node = fetch_node(target, desc)
    if not isinstance(node, Manifest):
        return ArtifactFacts(
            media_type=node.media_type,
            artifact_type=node.artifact_type,
            config=None,
            annotations=dict(node.annotations),
        )
    config: Mapping[str, Any] | None = None
    if node.config.media_type.endswith("json") and node.config.size <= MAX_CONFIG_BYTES:
        raw = fetch_bytes(target, node.config, limit=MAX_CONFIG_BYTES, what="config")
        try:
            loaded = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            loaded = None
        config = loaded if isinstance(loaded, dict) else None
    files = tuple(
        FileFact(
            # a part of a split weight file names its whole file in dev.modelreg.part.path
            path=layer_path(layer) or layer.annotations.get(ann.ANN_PART_PATH),
            media_type=layer.media_type,
            size=layer.size,
            digest=str(layer.digest),
            unsafe=_unsafe(layer.annotations),
        )
        for layer in node.layers
    )
    return ArtifactFacts(
        media_type=node.media_type,
        artifact_type=node.effective_artifact_type,
        config=config,
        files=files,
        annotations=dict(node.annotations),
    )


def _unsafe(annotations: Mapping[str, str]) -> str | None:
    """The packer's unsafe-file flag, under its current or its legacy name."""
    for key in (ann.ANN_FILE_UNSAFE, ann.LEGACY_ANN_FILE_UNSAFE, ANN_FILE_UNSAFE):
        value = annotations.get(key)
        if value is not None:
            return value
    return None


def _error(step: str, exc: BaseException) -> StepError:
    if isinstance(exc, ModelRegError):
        return StepError(step, exc.message)
    return StepError(step, f"{type(exc).__name__}: {exc}")


def gather_facts(
    client: Any,
    reference: str,
    policies: Iterable[Policy],
    *,
    verifier: Verifier | None = None,
    deadline: float | None = None,
    resolved: Descriptor | None = None,
) -> Facts:
    """Collect the facts the policies need about ``reference`` through ``client``.

    ``reference`` is in modelreg's CLI grammar (no host: the local store); it is
    canonicalised once here (:func:`~modelreg.oci.canonical.canonical_reference`) and the
    canonical reference is what is matched, resolved and verified. One that cannot be
    canonicalised is an error every policy applies to (fail closed).

    ``client`` is a :class:`modelreg.client.Client` (anything with ``resolve`` and
    ``target``). ``resolved``: the manifest descriptor when the caller already resolved
    the tag (the webhook does, once); otherwise the tag is resolved here, once, and
    everything after works on the digest. ``deadline`` (``time.monotonic()``) stops
    before steps that would start too late.
    """
    verifier = verifier or default_verifier
    try:
        # the one place policy matching learns the name: canonical, whatever the spelling
        ref = canonical_reference(reference)
    except ModelRegError as exc:
        return Facts(
            reference=reference,
            name=reference,
            digest=None,
            errors=(_error(REFERENCE_STEP, exc),),
        )
    name = ref.name
    policies = list(policies)
    digest = str(ref.digest) if ref.digest else None
    base = Facts(reference=reference, name=name, digest=digest)
    if not applicable(policies, base):
        return base

    def late(step: str) -> StepError | None:
        if deadline is not None and time.monotonic() > deadline:
            return StepError(step, "the decision budget ran out before this step")
        return None

    if (err := late("resolve")) is not None:
        return Facts(reference, name, digest, errors=(err,))
    try:
        target = client.target(ref, create=False)
        desc = resolved if resolved is not None else client.resolve(ref)[2]
    except Exception as exc:
        return Facts(reference, name, digest, errors=(_error("resolve", exc),))
    digest = str(desc.digest)
    if ref.digest is not None and str(ref.digest) != digest:
        return Facts(
            reference,
            name,
            digest,
            errors=(StepError("resolve", f"resolved to {digest}, not {ref.digest}"),),
        )
    if (err := late("inspect")) is not None:
        return Facts(reference, name, digest, errors=(err,))
    try:
        artifact = artifact_facts(target, desc)
    except Exception as exc:
        return Facts(reference, name, digest, errors=(_error("inspect", exc),))
    facts = Facts(reference, name, digest, artifact=artifact)
    verifications: dict[str, VerificationOutcome] = {}
    for policy in applicable(policies, facts):
        if not policy.needs_verification or policy.digest in verifications:
            continue
        if (err := late("verify")) is not None:
            verifications[policy.digest] = err
            continue
        try:
            verifications[policy.digest] = verifier(target, desc, policy)
        except Exception as exc:
            verifications[policy.digest] = _error("verify", exc)
    return Facts(reference, name, digest, artifact=artifact, verifications=verifications)
