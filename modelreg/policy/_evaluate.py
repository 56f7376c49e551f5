"""The pure core: ``evaluate(policies, facts) -> Decision``. No I/O, no clock, no randomness."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from modelreg.policy._facts import Facts
from modelreg.policy._policy import EvalContext, Policy
from modelreg.policy._results import Decision, PolicyResult, RuleResult

__all__ = ["REFERENCE_STEP", "applicable", "evaluate"]

REFERENCE_STEP: Final = "reference"
"""The step name of a reference that could not be canonicalised (see gather_facts)."""


def applicable(policies: Iterable[Policy], facts: Facts) -> list[Policy]:
    """Policies whose ``match`` covers the reference.

    ``facts.name`` is the canonical name (:mod:`modelreg.oci.canonical`). When the
    reference could not be canonicalised, nobody can say which repository it names, so
    every policy applies (fail closed): it is denied wherever a policy enforces.
    ``match.artifactTypes`` narrows a policy to some artifact types; when the artifact
    could not be inspected its type is unknown and the policy applies (fail closed).
    """
    policies = list(policies)
    if any(e.step == REFERENCE_STEP for e in facts.errors):
        return policies
    out = []
    for policy in policies:
        if not policy.applies_to(facts.name):
            continue
        types = policy.match.artifact_types
        if types and facts.artifact is not None and facts.artifact.artifact_type not in types:
            continue
        out.append(policy)
    return out


def evaluate(policies: Iterable[Policy], facts: Facts) -> Decision:
    """Evaluate every applicable policy against ``facts``; every rule gets a result.

    A step that could not run (``facts.errors``) turns every rule of every applicable
    policy into an ``error`` result naming that step: such a decision never allows.
    """
    results = []
    for policy in applicable(policies, facts):
        if facts.errors:
            why = "; ".join(str(e) for e in facts.errors)
            rules = tuple(
                RuleResult(rule=r.id, status="error", reason=why, line=r.line)
                for r in policy.require.rules
            )
        else:
            ctx = EvalContext(facts=facts, verification=facts.verifications.get(policy.digest))
            rules = policy.evaluate(ctx)
        results.append(
            PolicyResult(
                policy=policy.name,
                source=policy.source,
                digest=policy.digest,
                mode=policy.mode,
                rules=rules,
            )
        )
    return Decision(
        reference=facts.reference, name=facts.name, digest=facts.digest, results=tuple(results)
    )
