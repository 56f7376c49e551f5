"""Checks that must pass before a module runs: signatures, policies, or your own.

An :data:`ArtifactCheck` is called as ``check(role, reference, target, descriptor)``
for the bundle (``role == "module"``) before its manifest is read, and for the
model (``role == "model"``) before the model's manifest is read. It raises
(normally :class:`~modelreg.errors.VerificationError`) to refuse; returning means
"passed". A check that cannot run must raise too (fail closed).

* :func:`signature_check`: ``modelreg.verify.verify_artifact`` under a
  :class:`~modelreg.verify.VerificationPolicy` (keys, identities, attestations).
* :func:`policy_check`: ``modelreg.policy`` (gather facts, evaluate); refuses
  when a policy fails, cannot be evaluated, or none applies to the reference.
* :func:`all_of`: several checks, all of which must pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelreg.content.base import ReadOnlyTarget
from modelreg.errors import ModelRegError, VerificationError
from modelreg.oci.descriptor import Descriptor

__all__ = ["ArtifactCheck", "all_of", "policy_check", "signature_check"]

ArtifactCheck = Callable[[str, str, ReadOnlyTarget, Descriptor], None]
"""``check(role, reference, target, descriptor)``; raise to refuse."""


def signature_check(policy: Any) -> ArtifactCheck:
    """Refuse what does not verify under ``policy`` (a ``VerificationPolicy``)."""

    def check(role: str, reference: str, target: ReadOnlyTarget, desc: Descriptor) -> None:
        try:
            from modelreg.verify import verify_artifact
        except ImportError as exc:  # pragma: no cover - verify ships with modelreg
            raise VerificationError(
                f"cannot verify the {role} {reference}: signature verification is unavailable "
                f"({exc})",
                hint="refusing to run unverified code (fail closed)",
            ) from exc
        try:
            result = verify_artifact(target, desc, policy)
        except ModelRegError as exc:
            raise VerificationError(
                f"could not verify the {role} {reference}@{desc.digest}: {exc.message}",
                hint="refusing to run: a verification that could not run is a failure",
            ) from exc
        if not result.ok:
            raise VerificationError(
                f"the {role} {reference}@{desc.digest} is not verified: "
                + "; ".join(result.failures[:3] or ("no signature satisfied the policy",)),
                hint="sign it (`modelreg sign`) with a key the policy trusts, or check "
                "--verify-key",
            )

    return check


def policy_check(client: Any, policies: Any) -> ArtifactCheck:
    """Refuse what ``policies`` (a ``modelreg.policy.PolicySet``) do not allow."""

    def check(role: str, reference: str, target: ReadOnlyTarget, desc: Descriptor) -> None:
        from modelreg.policy import evaluate, gather_facts

        pinned = reference if "@" in reference else f"{reference}@{desc.digest}"
        facts = gather_facts(client, pinned, policies, resolved=desc)
        decision = evaluate(policies, facts)
        if decision.allowed and decision.matched:
            return
        if not decision.matched:
            why = "no policy applies to it (nothing vouches for it)"
        else:
            why = "; ".join(decision.problems[:3]) or decision.status
        errors = [str(e) for e in facts.errors]
        if errors:
            why += " (" + "; ".join(errors[:2]) + ")"
        raise VerificationError(
            f"policy refuses the {role} {pinned}: {why}",
            hint="see `modelreg policy check` for every rule and its reason",
        )

    return check


def all_of(*checks: ArtifactCheck) -> ArtifactCheck:
    """A check that runs each of ``checks`` in order; the first refusal wins."""

    def check(role: str, reference: str, target: ReadOnlyTarget, desc: Descriptor) -> None:
        for one in checks:
            one(role, reference, target, desc)

    return check
