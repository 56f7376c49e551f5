"""``verify``: the deploy-side gate. Resolve once, check every policy, pin the digest.

Exit codes: 0 allowed · 13 refused (a rule failed, or no policy applies and the
no-match setting is ``deny``, the default) · 9 could not evaluate (registry
unreachable, a bundle that cannot be fetched...: refused, fail closed). The reference is
canonicalised (:mod:`modelreg.oci.canonical`) before any policy is matched, so no
spelling of a governed repository escapes its policy. The deploy step should use
:attr:`GateResult.pinned`, the digest that was checked, never the tag.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from modelreg.ci._outputs import CIOutputs
from modelreg.client import Client, RemoteOptions
from modelreg.oci.canonical import canonical_reference
from modelreg.policy import (
    Decision,
    Facts,
    NoMatch,
    StepError,
    evaluate,
    gather_facts,
    load_policies,
)
from modelreg.sign import SLSA_PROVENANCE_V1

__all__ = ["EXIT_ALLOWED", "EXIT_CANNOT_EVALUATE", "EXIT_REFUSED", "GateResult", "verify"]

EXIT_ALLOWED: Final = 0
EXIT_REFUSED: Final = 13
EXIT_CANNOT_EVALUATE: Final = 9


def _provenance_summary(predicate: Mapping[str, Any]) -> dict[str, str]:
    """Repository, commit, workflow, builder and run of a SLSA v1 predicate (best effort)."""
    build = predicate.get("buildDefinition") or {}
    external = build.get("externalParameters") or {}
    workflow = external.get("workflow") if isinstance(external.get("workflow"), dict) else {}
    deps = build.get("resolvedDependencies") or []
    commit = ""
    for dep in deps if isinstance(deps, list) else []:
        if isinstance(dep, dict) and isinstance(dep.get("digest"), dict):
            commit = str(dep["digest"].get("gitCommit", "")) or commit
            if commit:
                break
    run = predicate.get("runDetails") or {}
    repository = (workflow or {}).get("repository") or external.get("source") or ""
    if not repository and isinstance(external.get("repository"), str):
        repository = external["repository"]
    wf = (workflow or {}).get("path") or external.get("entryPoint") or ""
    if not wf and isinstance(external.get("workflow"), str):
        wf = external["workflow"]
    ref = (workflow or {}).get("ref") or external.get("ref") or ""
    return {
        "buildType": str(build.get("buildType", "")),
        "repository": str(repository),
        "ref": str(ref),
        "workflow": str(wf),
        "commit": commit,
        "builder": str((run.get("builder") or {}).get("id", "")),
        "invocation": str((run.get("metadata") or {}).get("invocationId", "")),
    }


@dataclass
class GateResult:
    reference: str
    decision: Decision
    errors: tuple[StepError, ...] = ()
    provenance: list[dict[str, str]] = field(default_factory=list)
    signers: list[str] = field(default_factory=list)
    unmatched: NoMatch = "deny"
    """What a reference no policy applies to gets: refused (deny), or allowed (warn, allow)."""

    @property
    def digest(self) -> str | None:
        return self.decision.digest

    @property
    def pinned(self) -> str | None:
        if not self.decision.digest:
            return None
        return f"{self.decision.name}@{self.decision.digest}"

    @property
    def allowed(self) -> bool:
        status = self.decision.status
        return status == "pass" or (status == "unmatched" and self.unmatched != "deny")

    @property
    def warnings(self) -> list[str]:
        out = list(self.decision.warnings)
        if self.decision.status == "unmatched" and self.unmatched == "warn":
            out.append(f"no policy applies to {self.decision.name}")
        return out

    @property
    def exit_code(self) -> int:
        status = self.decision.status
        if self.allowed:
            return EXIT_ALLOWED
        if status == "error":
            return EXIT_CANNOT_EVALUATE
        return EXIT_REFUSED

    def outputs(self) -> dict[str, str]:
        return {
            "allowed": "true" if self.allowed else "false",
            "status": self.decision.status,
            "digest": self.digest or "",
            "reference": self.pinned or "",
            "exit-code": str(self.exit_code),
        }

    def to_dict(self) -> dict[str, Any]:
        doc = self.decision.to_dict()
        doc.update(
            {
                "pinned": self.pinned,
                "exitCode": self.exit_code,
                "errors": [str(e) for e in self.errors],
                "provenance": self.provenance,
                "signers": self.signers,
                "unmatched": self.unmatched,
                "allowed": self.allowed,
                "warnings": self.warnings,
            }
        )
        return doc

    def report(self) -> str:
        from modelreg.ci._report import gate_text

        return gate_text(self)

    def markdown(self) -> str:
        from modelreg.ci._report import gate_markdown

        return gate_markdown(self)


def _collect(facts: Facts) -> tuple[list[dict[str, str]], list[str]]:
    provenance: list[dict[str, str]] = []
    signers: list[str] = []
    for outcome in facts.verifications.values():
        if isinstance(outcome, StepError):
            continue
        for sig in outcome.signatures:
            who = f"{sig.signer} ({sig.issuer})" if sig.issuer else sig.signer
            if who not in signers:
                signers.append(who)
        for att in outcome.attestations:
            if att.predicate_type == SLSA_PROVENANCE_V1:
                row = _provenance_summary(att.predicate)
                if row not in provenance:
                    provenance.append(row)
    return provenance, signers


def verify(
    reference: str,
    policies: Sequence[str | os.PathLike[str]],
    *,
    options: RemoteOptions | None = None,
    client: Client | None = None,
    outputs: CIOutputs | None = None,
    unmatched: NoMatch = "deny",
) -> GateResult:
    """Check ``reference`` against ``policies``; never raises for "refused".

    Raises ModelRegError only for bad input (a policy that does not load, a reference
    that cannot be canonicalised: refused, with the reason). A registry that cannot be
    reached is a decision with status ``error`` (exit 9), not an exception.
    ``unmatched``: what a reference that no policy applies to gets (``deny``: exit 13).
    """
    policy_set = load_policies([Path(p) for p in policies])
    canonical_reference(reference)
    own = client is None
    active = client if client is not None else Client(options or RemoteOptions())
    try:
        facts = gather_facts(active, reference, policy_set)
    finally:
        if own:
            active.close()
    decision = evaluate(policy_set, facts)
    provenance, signers = _collect(facts)
    result = GateResult(reference, decision, facts.errors, provenance, signers, unmatched)
    if outputs is not None:
        outputs.write(result.outputs(), result.to_dict(), result.markdown())
    return result
