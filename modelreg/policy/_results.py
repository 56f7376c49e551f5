"""Results of a policy evaluation: one per rule, one per policy, one decision per reference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from modelreg.errors import InvalidInputError

__all__ = [
    "NO_MATCH_SETTINGS",
    "Decision",
    "Mode",
    "NoMatch",
    "PolicyResult",
    "RuleResult",
    "Status",
    "no_match_setting",
]

Status = Literal["passed", "failed", "error"]
"""``error``: the rule could not be evaluated (a step failed); it never counts as passed."""

Mode = Literal["enforce", "warn"]

NoMatch = Literal["deny", "warn", "allow"]
"""What to do with a reference no policy matches (the webhook's ``--unmatched-images``
and ``--unmatched-models``, ``policy check --unmatched``, ``ci verify --unmatched``)."""
NO_MATCH_SETTINGS: Final[tuple[NoMatch, ...]] = ("deny", "warn", "allow")


def no_match_setting(value: str, option: str) -> NoMatch:
    """``value`` as a :data:`NoMatch`; raises InvalidInputError naming ``option``."""
    for setting in NO_MATCH_SETTINGS:
        if value == setting:
            return setting
    raise InvalidInputError(
        f"{option} must be deny, warn or allow, not {value!r}",
        hint="deny refuses what no policy governs (the safe choice for a gate)",
    )


@dataclass(frozen=True, slots=True)
class RuleResult:
    rule: str
    status: Status
    reason: str
    line: int | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "status": self.status, "reason": self.reason, "line": self.line}


def worst(statuses: list[Status]) -> Status:
    if "failed" in statuses:
        return "failed"
    if "error" in statuses:
        return "error"
    return "passed"


@dataclass(frozen=True, slots=True)
class PolicyResult:
    policy: str
    source: str
    digest: str
    mode: Mode
    rules: tuple[RuleResult, ...]

    @property
    def status(self) -> Status:
        return worst([r.status for r in self.rules])

    def problems(self) -> list[str]:
        """``policy NAME: rule: reason`` for every rule that did not pass."""
        return [f"policy {self.policy}: {r.rule}: {r.reason}" for r in self.rules if not r.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "source": self.source,
            "digest": self.digest,
            "mode": self.mode,
            "status": self.status,
            "rules": [r.to_dict() for r in self.rules],
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict for one reference under a set of policies.

    ``allowed``: every matching ``enforce`` policy passed (warn-mode failures become
    ``warnings``). ``status``: ``pass``; ``fail`` when an enforce policy definitely
    failed; ``error`` when none failed but one could not be evaluated; ``unmatched``
    when no policy applies to the reference (callers decide what that means).
    """

    reference: str
    name: str
    digest: str | None
    results: tuple[PolicyResult, ...]

    @property
    def matched(self) -> bool:
        return bool(self.results)

    @property
    def enforced(self) -> tuple[PolicyResult, ...]:
        return tuple(r for r in self.results if r.mode == "enforce")

    @property
    def allowed(self) -> bool:
        return all(r.status == "passed" for r in self.enforced)

    @property
    def status(self) -> Literal["pass", "fail", "error", "unmatched"]:
        if not self.results:
            return "unmatched"
        statuses = [r.status for r in self.enforced]
        if "failed" in statuses:
            return "fail"
        if "error" in statuses:
            return "error"
        return "pass"

    def allowed_when_unmatched(self, setting: NoMatch) -> bool:
        """``allowed``, with ``setting`` deciding a reference no policy applies to."""
        if self.status == "unmatched":
            return setting != "deny"
        return self.allowed

    @property
    def problems(self) -> list[str]:
        """Every enforce-mode rule that did not pass, as ``policy NAME: rule: reason``."""
        return [p for r in self.enforced for p in r.problems()]

    @property
    def warnings(self) -> list[str]:
        """Every warn-mode rule that did not pass."""
        return [p for r in self.results if r.mode == "warn" for p in r.problems()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "name": self.name,
            "digest": self.digest,
            "allowed": self.allowed,
            "status": self.status,
            "policies": [r.to_dict() for r in self.results],
            "warnings": self.warnings,
        }
