"""``modelreg policy``: check a model against policies; lint policy files.

Exit codes of ``policy check``: 0 every applicable enforce policy passed · 1 refused
(a rule failed, or no policy applies to the reference and ``--unmatched`` is ``deny``,
the default) · 9 could not evaluate (a step such as resolve or verify could not run,
the reference cannot be canonicalised, or a policy does not load) · 2 bad input.
"""

# No ``from __future__ import annotations``: typer reads these annotations at runtime.
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from modelreg_cli.context import REGISTRY_FLAGS, Command, Remote, registry_flags
from modelreg_cli.options import JsonOpt, PolicyOpt
from modelreg_cli.render import out_console, print_json
from modelreg_cli.wiring import command_group, registrar

if TYPE_CHECKING:  # modelreg.policy is imported by the commands that use it (CLI start-up)
    from modelreg.policy import Decision, NoMatch

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_CANNOT_EVALUATE = 9

UnmatchedOpt = Annotated[
    str,
    typer.Option(
        "--unmatched",
        help="What a reference no policy matches (by its canonical name) gets: deny "
        "(refused), warn (allowed with a warning) or allow.",
    ),
]


policy_app = command_group(
    "policy",
    "Check models against policies (signatures, attestations, artifact rules).",
)

_MARK = {"passed": "[green]✓[/green]", "failed": "[red]✗[/red]", "error": "[yellow]![/yellow]"}


def exit_code(decision: "Decision", unmatched: "NoMatch" = "deny") -> int:
    if decision.status == "unmatched":
        return EXIT_FAIL if unmatched == "deny" else EXIT_PASS
    return {"pass": EXIT_PASS, "fail": EXIT_FAIL}.get(decision.status, EXIT_CANNOT_EVALUATE)


def render(decision: "Decision", unmatched: "NoMatch" = "deny") -> None:
    where = f"{decision.name}@{decision.digest}" if decision.digest else decision.name
    out_console.print(f"{decision.reference} -> {where}", markup=False)
    if not decision.matched:
        outcome = {
            "deny": "refused (nothing vouches for it)",
            "warn": "allowed with a warning (--unmatched warn)",
            "allow": "allowed (--unmatched allow)",
        }[unmatched]
        out_console.print(f"  no policy applies to this reference: {outcome}", markup=False)
    for result in decision.results:
        out_console.print(
            f"  policy {result.policy} ({result.source}) [{result.mode}]: {result.status.upper()}",
            markup=False,
        )
        for rule in result.rules:
            line = f":{rule.line}" if rule.line else ""
            out_console.print(f"    {_MARK[rule.status]} ", end="")
            out_console.print(f"{rule.rule}{line}: {rule.reason}", markup=False)
    verdict = {
        "pass": "[green]allowed[/green]",
        "fail": "[red]refused[/red]",
        "unmatched": "[red]refused[/red] (no policy applies)"
        if unmatched == "deny"
        else "[green]allowed[/green] (no policy applies)",
        "error": "[yellow]could not evaluate[/yellow] (fail closed: refused)",
    }[decision.status]
    warnings = len(decision.warnings) + (1 if unmatched == "warn" and not decision.matched else 0)
    out_console.print(f"result: {verdict}" + (f", {warnings} warning(s)" if warnings else ""))


@policy_app.command("check")
@registry_flags()
def check(
    ref: Annotated[str, typer.Argument(help="Model reference to check (tag or digest).")],
    policy: PolicyOpt,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
    unmatched: UnmatchedOpt = "deny",
) -> None:
    """Evaluate every policy that applies to REF and explain each rule.

    REF is canonicalised first (host case, :443, Docker Hub aliases, library/), so
    every spelling of a repository meets the same policies.
    Exit 0 allowed, 1 refused, 9 could not evaluate.
    """
    from modelreg.policy import evaluate, gather_facts, load_policies, no_match_setting

    with Command(json_output, remote) as cmd:
        setting = no_match_setting(unmatched, "--unmatched")
        policies = load_policies(policy)
        with cmd.client() as client:
            facts = gather_facts(client, ref, policies)
        decision = evaluate(policies, facts)
        code = exit_code(decision, setting)
        if json_output:
            doc = decision.to_dict()
            doc["exitCode"] = code
            doc["allowed"] = code == EXIT_PASS
            doc["unmatched"] = setting
            doc["errors"] = [str(e) for e in facts.errors]
            print_json(doc)
        else:
            render(decision, setting)
    raise typer.Exit(code)


@policy_app.command("lint")
def lint(
    policy: Annotated[list[Path], typer.Argument(help="Policy files or directories.")],
    json_output: JsonOpt = False,
) -> None:
    """Load policies and report the first error with its file and line (exit 9)."""
    from modelreg.policy import load_policies

    with Command(json_output):
        policies = load_policies(policy)
        rows = [
            {
                "name": p.name,
                "source": p.source,
                "line": p.line,
                "mode": p.mode,
                "digest": p.digest,
                "rules": [r.id for r in p.require.rules],
            }
            for p in policies
        ]
        if json_output:
            print_json({"policies": rows, "digest": policies.digest})
            return
        for p in policies:
            out_console.print(
                f"{p.name:<28} {p.mode:<8} {p.source}:{p.line}  "
                + ", ".join(r.id for r in p.require.rules),
                markup=False,
            )


register = registrar(policy_app)
