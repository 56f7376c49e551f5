"""Readable reports: Markdown for the GitHub step summary, plain text for logs."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelreg.ci._publish import PublishResult
    from modelreg.ci._verify import GateResult
    from modelreg.policy import Decision

__all__ = ["gate_markdown", "gate_text", "publish_markdown", "publish_text"]

_ICON = {"ok": "✅", "failed": "❌", "skipped": "⏭️", "passed": "✅", "error": "⚠️"}


def _md(text: str) -> str:
    """Escape what would break a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ").replace("`", "'")


def _policy_md(decision: Decision) -> list[str]:
    lines = ["", "| policy | rule | result | reason |", "|---|---|---|---|"]
    if not decision.matched:
        lines.append("| — | — | ❌ | no policy applies to this reference |")
    for result in decision.results:
        for rule in result.rules:
            lines.append(
                f"| {_md(result.policy)} ({result.mode}) | {_md(rule.rule)} | "
                f"{_ICON[rule.status]} {rule.status} | {_md(rule.reason)} |"
            )
    return lines


def publish_markdown(result: PublishResult) -> str:
    title = (
        "✅ Model published" if result.ok else f"❌ Model publish failed ({result.failed_stage})"
    )
    lines = [f"### {title}", ""]
    if result.pinned:
        lines.append(f"**Reference:** `{result.pinned}`  ")
    else:
        lines.append(f"**Reference:** `{result.reference}`  ")
    if result.digest:
        lines.append(f"**Digest:** `{result.digest}`  ")
    ci = result.ci
    lines.append(
        f"**CI:** {ci.name}"
        + (f" · {_md(ci.repository)}" if ci.repository else "")
        + (f" · `{ci.commit[:12]}`" if ci.commit else "")
        + (f" · [run]({ci.run_url})" if ci.run_url else "")
        + "  "
    )
    if result.signing:
        lines.append(
            f"**Signing:** {result.signing}"
            + (f" · `{_md(result.signer)}`" if result.signer else "")
            + "  "
        )
    if result.error:
        lines += ["", f"> **Error:** {_md(result.error)}"]
        if result.hint:
            lines.append(f"> **Hint:** {_md(result.hint)}")
    lines += ["", "| step | result | detail |", "|---|---|---|"]
    for step in result.steps:
        lines.append(
            f"| {_md(step.name)} | {_ICON[step.status]} {step.status} | {_md(step.detail)} |"
        )
    if result.attestations:
        lines += ["", "| attestation | referrer |", "|---|---|"]
        for att in result.attestations:
            lines.append(f"| `{att['predicateType']}` | `{att['referrer']}` |")
    if result.policy is not None:
        lines += ["", f"**Policy gate:** {result.policy.status}"]
        lines += _policy_md(result.policy)
    for warning in result.warnings:
        lines.append(f"\n> ⚠️ {_md(warning)}")
    return "\n".join(lines) + "\n\n"


def publish_text(result: PublishResult) -> str:
    lines = []
    head = "published" if result.ok else f"FAILED at {result.failed_stage}"
    lines.append(f"{head} {result.pinned or result.reference}")
    if result.digest:
        lines.append(f"  digest     {result.digest}")
    ci = result.ci
    lines.append(
        f"  ci         {ci.name}"
        + "".join(f" {v}" for v in (ci.repository, ci.workflow, ci.commit[:12], ci.run_id) if v)
    )
    if result.signing:
        lines.append(
            f"  signing    {result.signing}" + (f" by {result.signer}" if result.signer else "")
        )
    for step in result.steps:
        mark = {"ok": "ok  ", "failed": "FAIL", "skipped": "skip"}[step.status]
        lines.append(f"  [{mark}] {step.name}" + (f": {step.detail}" if step.detail else ""))
    for att in result.attestations:
        lines.append(f"  attested   {att['predicateType']}  referrer {att['referrer']}")
    if result.policy is not None:
        lines.append(f"  policy     {result.policy.status}")
        lines += _policy_text(result.policy, "    ")
    for warning in result.warnings:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)


def _policy_text(decision: Decision, indent: str) -> list[str]:
    lines = []
    if not decision.matched:
        lines.append(f"{indent}no policy applies to this reference: refused")
    marks = {"passed": "✓", "failed": "✗", "error": "!"}
    for result in decision.results:
        lines.append(f"{indent}policy {result.policy} [{result.mode}]: {result.status.upper()}")
        for rule in result.rules:
            lines.append(f"{indent}  {marks[rule.status]} {rule.rule}: {rule.reason}")
    return lines


_VERDICT = {
    "pass": "ALLOWED",
    "fail": "REFUSED",
    "unmatched": "REFUSED (no policy applies)",
    "error": "REFUSED (could not evaluate: fail closed)",
}


def _verdict(gate: GateResult) -> str:
    if gate.decision.status == "unmatched" and gate.allowed:
        return f"ALLOWED (no policy applies; unmatched: {gate.unmatched})"
    return _VERDICT[gate.decision.status]


def gate_text(gate: GateResult) -> str:
    decision = gate.decision
    lines = [f"{_verdict(gate)}  {gate.reference}"]
    if gate.pinned:
        lines.append(f"  pinned     {gate.pinned}")
    for signer in gate.signers:
        lines.append(f"  signed by  {signer}")
    for row in gate.provenance:
        lines.append(
            "  provenance "
            + " ".join(
                f"{k}={row[k]}"
                for k in ("repository", "workflow", "ref", "commit", "builder")
                if row[k]
            )
        )
    lines += _policy_text(decision, "  ")
    for error in gate.errors:
        lines.append(f"  error: {error}")
    for warning in gate.warnings:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)


def gate_markdown(gate: GateResult) -> str:
    decision = gate.decision
    icon = "✅" if gate.allowed else "❌"
    lines = [f"### {icon} Model gate: {_verdict(gate)}", ""]
    lines.append(f"**Reference:** `{gate.reference}`  ")
    if gate.pinned:
        lines.append(f"**Pinned:** `{gate.pinned}`  ")
    for signer in gate.signers:
        lines.append(f"**Signed by:** `{_md(signer)}`  ")
    for row in gate.provenance:
        lines.append(
            f"**Provenance:** {_md(row['repository'])} · {_md(row['workflow'])} · "
            f"`{row['commit'][:12]}`  "
        )
    lines += _policy_md(decision)
    for error in gate.errors:
        lines.append(f"\n> ⚠️ {_md(str(error))}")
    return "\n".join(lines) + "\n\n"
