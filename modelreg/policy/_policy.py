"""Policies as objects: a :class:`Policy` is a match plus an :class:`AllOf` of rules.

Rules are small objects with a pure ``evaluate(ctx) -> RuleResult``; :class:`AllOf` and
:class:`AnyOf` combine them (an empty combinator is an error, never a silent pass).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from modelreg.policy._conditions import MISSING, Condition, ConditionError, lookup
from modelreg.policy._facts import Facts, StepError, VerificationOutcome
from modelreg.policy._glob import Glob
from modelreg.policy._results import Mode, RuleResult, Status, worst
from modelreg.policy._spdx import expression_allowed

__all__ = [
    "API_VERSION",
    "KIND",
    "AllOf",
    "AnyOf",
    "AttestationRule",
    "EvalContext",
    "FormatRule",
    "KeyAuthoritySpec",
    "KeylessAuthoritySpec",
    "LicenseRule",
    "Match",
    "MaxSizeRule",
    "NoPickleRule",
    "Policy",
    "RequiredFieldsRule",
    "Rule",
    "SignatureRule",
]

API_VERSION = "modelreg.dev/v1alpha1"
KIND = "ModelPolicy"


@dataclass(frozen=True)
class EvalContext:
    facts: Facts
    verification: VerificationOutcome | None = None


class Rule(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def line(self) -> int | None: ...

    def evaluate(self, ctx: EvalContext) -> RuleResult: ...


def _result(rule: Rule, status: Status, reason: str) -> RuleResult:
    return RuleResult(rule=rule.id, status=status, reason=reason, line=rule.line)


@dataclass(frozen=True)
class AllOf:
    """Every rule must pass."""

    rules: tuple[Rule, ...]
    id: str = "allOf"
    line: int | None = None

    def __post_init__(self) -> None:
        if not self.rules:
            raise ValueError("an empty AllOf would pass everything; give at least one rule")

    def results(self, ctx: EvalContext) -> tuple[RuleResult, ...]:
        return tuple(_safe(rule, ctx) for rule in self.rules)

    def evaluate(self, ctx: EvalContext) -> RuleResult:
        results = self.results(ctx)
        status = worst([r.status for r in results])
        bad = [f"{r.rule}: {r.reason}" for r in results if not r.passed]
        return _result(self, status, "; ".join(bad) if bad else "all passed")


@dataclass(frozen=True)
class AnyOf:
    """At least one rule must pass."""

    rules: tuple[Rule, ...]
    id: str = "anyOf"
    line: int | None = None

    def __post_init__(self) -> None:
        if not self.rules:
            raise ValueError("an empty AnyOf can never pass; give at least one rule")

    def evaluate(self, ctx: EvalContext) -> RuleResult:
        results = [_safe(rule, ctx) for rule in self.rules]
        for r in results:
            if r.passed:
                return _result(self, "passed", f"{r.rule}: {r.reason}")
        status: Status = "error" if all(r.status == "error" for r in results) else "failed"
        return _result(
            self, status, "none passed: " + "; ".join(f"{r.rule}: {r.reason}" for r in results)
        )


def _safe(rule: Rule, ctx: EvalContext) -> RuleResult:
    """Evaluate a rule; anything unexpected is an ``error`` result (fail closed), not a crash."""
    try:
        return rule.evaluate(ctx)
    except ConditionError as exc:
        return _result(rule, "error", f"could not evaluate: {exc}")
    except Exception as exc:
        return _result(rule, "error", f"could not evaluate: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- authorities
@dataclass(frozen=True)
class KeyAuthoritySpec:
    name: str
    public_key_pem: bytes = field(repr=False)
    line: int | None = None
    kind: Literal["key"] = "key"

    def accepts(self, authority: str, kind: str, signer: str, issuer: str | None) -> bool:
        return kind == "key" and authority == self.name

    def describe(self) -> str:
        return f"key {self.name}"


@dataclass(frozen=True)
class KeylessAuthoritySpec:
    name: str
    issuer: str
    identity: str | None = None
    identity_regexp: str | None = None
    line: int | None = None
    kind: Literal["keyless"] = "keyless"

    @property
    def anchored_regexp(self) -> str | None:
        """The identity regexp anchored at both ends (an unanchored one over-matches)."""
        if self.identity_regexp is None:
            return None
        return f"^(?:{self.identity_regexp})$"

    def accepts(self, authority: str, kind: str, signer: str, issuer: str | None) -> bool:
        if kind != "keyless" or issuer != self.issuer:
            return False
        if self.identity is not None:
            return signer == self.identity
        assert self.identity_regexp is not None
        return re.fullmatch(self.identity_regexp, signer) is not None

    def describe(self) -> str:
        who = self.identity if self.identity is not None else f"/{self.identity_regexp}/"
        return f"keyless {who} from {self.issuer}"


AuthoritySpec = KeyAuthoritySpec | KeylessAuthoritySpec


def _verification(ctx: EvalContext) -> tuple[Any, Status, str]:
    """The verification result for this policy, or the status and reason why there is none.

    No result, or a step that could not run, is an ``error``; a result for another digest
    (a replayed or swapped result) is a ``failed``.
    """
    v = ctx.verification
    if v is None:
        return None, "error", "no verification was performed for this policy"
    if isinstance(v, StepError):
        return None, "error", str(v)
    digest = ctx.facts.digest
    if digest is None or v.digest != digest:
        return None, "failed", f"verification result is for {v.digest}, not for {digest}"
    return v, "passed", ""


@dataclass(frozen=True)
class SignatureRule:
    """At least ``threshold`` distinct authorities signed the digest (N-of-M)."""

    authorities: tuple[AuthoritySpec, ...]
    threshold: int = 1
    trusted_root: str | None = None
    id: str = "signatures"
    line: int | None = None

    def evaluate(self, ctx: EvalContext) -> RuleResult:
        v, status, why = _verification(ctx)
        if v is None:
            return _result(self, status, why)
        satisfied: list[str] = []
        for spec in self.authorities:
            for sig in v.signatures:
                if spec.accepts(sig.authority, sig.kind, sig.signer, sig.issuer):
                    satisfied.append(spec.name)
                    break
        count = len(satisfied)  # each authority counts once, however many signatures it made
        need = f"{count} of the {self.threshold} required"
        if count >= self.threshold:
            return _result(self, "passed", f"signed by {', '.join(satisfied)} ({need})")
        detail = "; ".join(v.failures) if v.failures else "no valid signature from them"
        names = ", ".join(a.describe() for a in self.authorities)
        return _result(self, "failed", f"{need} authorities signed ({names}): {detail}")


@dataclass(frozen=True)
class AttestationRule:
    """A verified attestation of ``predicate_type`` exists and satisfies ``condition``."""

    predicate_type: str
    condition: Condition | None = None
    id: str = ""
    line: int | None = None

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", f"attestations[{self.predicate_type}]")

    def evaluate(self, ctx: EvalContext) -> RuleResult:
        v, status, why = _verification(ctx)
        if v is None:
            return _result(self, status, why)
        found = [a for a in v.attestations if a.predicate_type == self.predicate_type]
        if not found:
            return _result(self, "failed", f"no verified attestation of type {self.predicate_type}")
        if self.condition is None:
            return _result(self, "passed", f"verified attestation signed by {found[0].signer}")
        whys = []
        for att in found:
            doc = {
                "predicateType": att.predicate_type,
                "predicate": dict(att.predicate),
                "signer": att.signer,
                "reference": ctx.facts.reference,
                "digest": ctx.facts.digest,
            }
            ok, reason = self.condition.check(doc)  # ConditionError -> error via _safe
            if ok:
                return _result(self, "passed", f"{reason} (signed by {att.signer})")
            whys.append(reason)
        return _result(self, "failed", "; ".join(whys))


# ------------------------------------------------------------------ artifact
def _artifact(ctx: EvalContext) -> Any:
    return ctx.facts.artifact


def _config_section(ctx: EvalContext, key: str) -> Mapping[str, Any] | None:
    art = _artifact(ctx)
    cfg = art.config if art is not None else None
    section = cfg.get(key) if isinstance(cfg, Mapping) else None
    return section if isinstance(section, Mapping) else None


@dataclass(frozen=True)
class FormatRule:
    formats: tuple[str, ...]
    id: str = "artifact.formats"
    line: int | None = None

    def evaluate(self, ctx: EvalContext) -> RuleResult:
        if _artifact(ctx) is None:
            return _result(self, "error", "artifact not inspected")
        section = _config_section(ctx, "config")
        fmt = section.get("format") if section else None
        if not isinstance(fmt, str) or not fmt:
            return _result(self, "failed", "the model config declares no format (config.format)")
        allowed = {f.lower() for f in self.formats}
        if fmt.lower() in allowed:
            return _result(self, "passed", f"format {fmt}")
        return _result(self, "failed", f"format {fmt} is not one of {', '.join(self.formats)}")


@dataclass(frozen=True)
class NoPickleRule:
    """No pickle-based file (loading one can execute code); archives count as unknown."""

    id: str = "artifact.noPickle"
    line: int | None = None

    def evaluate(self, ctx: EvalContext) -> RuleResult:
        art = _artifact(ctx)
        if art is None:
            return _result(self, "error", "artifact not inspected")
        pickles = [f.path or f.digest for f in art.files if f.is_pickle]
        archives = [f.path or f.digest for f in art.files if f.is_archive and not f.is_pickle]
        problems = []
        if pickles:
            problems.append("pickle-based files: " + ", ".join(pickles))
        if archives:
            problems.append(
                "archive layers whose files are not listed (may hide pickles): "
                + ", ".join(archives)
            )
        if problems:
            return _result(self, "failed", "; ".join(problems))
        return _result(self, "passed", f"no pickle-based file among {len(art.files)} files")


@dataclass(frozen=True)
class LicenseRule:
    allowed: tuple[str, ...]
    id: str = "artifact.licenses"
    line: int | None = None

    def evaluate(self, ctx: EvalContext) -> RuleResult:
        if _artifact(ctx) is None:
            return _result(self, "error", "artifact not inspected")
        section = _config_section(ctx, "descriptor")
        licenses = section.get("licenses") if section else None
        if not isinstance(licenses, list) or not licenses:
            return _result(self, "failed", "the model declares no license (descriptor.licenses)")
        bad = [
            str(x)
            for x in licenses
            if not (isinstance(x, str) and expression_allowed(x, self.allowed))
        ]
        if bad:
            return _result(
                self,
                "failed",
                f"license {', '.join(bad)} not in the allow-list ({', '.join(self.allowed)})",
            )
        return _result(self, "passed", "licenses " + ", ".join(str(x) for x in licenses))


@dataclass(frozen=True)
class MaxSizeRule:
    max_bytes: int
    id: str = "artifact.maxSizeBytes"
    line: int | None = None

    def evaluate(self, ctx: EvalContext) -> RuleResult:
        art = _artifact(ctx)
        if art is None:
            return _result(self, "error", "artifact not inspected")
        size = art.total_size
        ok = size <= self.max_bytes
        rel = "within" if ok else "over"
        return _result(self, "passed" if ok else "failed", f"{size} bytes, {rel} {self.max_bytes}")


@dataclass(frozen=True)
class RequiredFieldsRule:
    fields: tuple[str, ...]
    id: str = "artifact.requiredFields"
    line: int | None = None

    def evaluate(self, ctx: EvalContext) -> RuleResult:
        art = _artifact(ctx)
        if art is None:
            return _result(self, "error", "artifact not inspected")
        cfg = art.config if isinstance(art.config, Mapping) else {}
        missing = []
        for path in self.fields:
            value = lookup(cfg, path)
            if value is MISSING or value is None or value in ("", [], {}):
                missing.append(path)
        if missing:
            return _result(self, "failed", "missing in the model config: " + ", ".join(missing))
        return _result(self, "passed", "present: " + ", ".join(self.fields))


# -------------------------------------------------------------------- policy
@dataclass(frozen=True)
class Match:
    references: tuple[Glob, ...]
    artifact_types: tuple[str, ...] = ()

    def matches_name(self, name: str) -> bool:
        return any(g.matches(name) for g in self.references)


@dataclass(frozen=True)
class Policy:
    """One loaded ``ModelPolicy``: who it applies to, its mode, and its rules.

    ``digest`` covers the whole normalised document *including the content of the key
    files it names*: any change to what the policy means changes the digest.
    """

    name: str
    mode: Mode
    match: Match
    require: AllOf
    digest: str
    source: str = "<policy>"
    line: int | None = None
    description: str = ""
    signatures: SignatureRule | None = None
    attestation_types: tuple[str, ...] = ()
    document: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def needs_verification(self) -> bool:
        return self.signatures is not None

    def applies_to(self, name: str) -> bool:
        return self.match.matches_name(name)

    def evaluate(self, ctx: EvalContext) -> tuple[RuleResult, ...]:
        return self.require.results(ctx)

    def label(self) -> str:
        return f"{self.name} ({self.source}:{self.line})" if self.line else self.name
