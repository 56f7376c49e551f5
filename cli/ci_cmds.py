"""``modelreg ci publish | verify``: the CI pipeline step and the deploy gate.

Exit codes of ``ci publish``: 0 published · 2 usage · 10 push failed · 11 sign failed
(including: no OIDC token, a key that does not load) · 12 attest failed · 13 the policy
gate refused what was published. Pre-flight checks run first: when they fail, nothing
is pushed.

Exit codes of ``ci verify``: 0 allowed · 13 refused · 9 could not evaluate (registry
unreachable, a policy that does not load...: refused, fail closed) · 2 usage.

Results: ``$GITHUB_OUTPUT`` (digest, reference, ...), ``$GITHUB_STEP_SUMMARY``
(Markdown), a GitLab dotenv report (``--dotenv``, ``$MODELREG_DOTENV``, or
``modelreg.env`` in GitLab CI) and ``--summary-json FILE``.
"""

# No ``from __future__ import annotations``: typer reads these annotations at runtime.
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from modelreg_cli.context import REGISTRY_FLAGS, Command, Remote, print_error, registry_flags, warn
from modelreg_cli.options import JsonOpt, OptionalPolicyOpt
from modelreg_cli.policy_cmds import UnmatchedOpt
from modelreg_cli.render import out_console, print_json
from modelreg_cli.signing import KEYLESS_FLAGS, Keyless, keyless_flags
from modelreg_cli.wiring import command_group, registrar

from modelreg.errors import InvalidInputError

if TYPE_CHECKING:  # modelreg.ci is imported by the commands (CLI start-up)
    from modelreg.ci import CIOutputs, PublishError

SummaryOpt = Annotated[
    Path | None,
    typer.Option("--summary-json", help="Write a JSON summary of the step to this file."),
]
DotenvOpt = Annotated[
    Path | None,
    typer.Option(
        "--dotenv",
        help="GitLab dotenv report to write (default in GitLab CI: modelreg.env).",
    ),
]


ci_app = command_group(
    "ci",
    "CI pipeline steps: publish (push, sign, attest, gate) and verify (deploy gate).",
)


@ci_app.command("publish")
@registry_flags()
@keyless_flags()
def publish_cmd(
    directory: Annotated[Path, typer.Argument(help="Model directory to publish.")],
    ref: Annotated[str, typer.Argument(help="Where to: registry/repo:tag.")],
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="Sign with this private key: a PEM file, or env://VAR for a secret "
            "(default: $MODELREG_SIGNING_KEY when set, else keyless).",
        ),
    ] = None,
    keyless: Keyless = KEYLESS_FLAGS,
    lineage: Annotated[
        Path | None,
        typer.Option("--lineage", help="Training-lineage predicate (JSON) to attest."),
    ] = None,
    policy: OptionalPolicyOpt = None,
    summary_json: SummaryOpt = None,
    dotenv: DotenvOpt = None,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
) -> None:
    """Push a model, sign it, attest its provenance (and lineage), gate on policies.

    Exit 0 published, 10 push, 11 sign, 12 attest, 13 policy failed.
    """
    from modelreg.ci import CIOutputs, PublishError, SigningOptions, publish, publish_text

    with Command(json_output, remote) as cmd:
        if key and keyless.keyless:
            raise InvalidInputError("choose one way to sign: --key or --keyless, not both")
        outputs = CIOutputs.from_env(summary_json=summary_json, dotenv=dotenv)
        signing = SigningOptions(
            key=key,
            keyless=keyless.keyless,
            identity_token=keyless.identity_token,
            identity_token_file=(
                str(keyless.identity_token_file) if keyless.identity_token_file else None
            ),
            trust_config=str(keyless.trust_config) if keyless.trust_config else None,
            staging=keyless.staging,
        )
        try:
            result = publish(
                directory,
                ref,
                signing=signing,
                lineage=lineage,
                policies=policy or (),
                options=cmd.options,
                outputs=outputs,
            )
        except PublishError as exc:
            _publish_failed(exc, outputs, json_output)
        if json_output:
            print_json(result.to_dict())
        else:
            out_console.print(publish_text(result), markup=False, highlight=False)
        _warn_all(outputs)


def _publish_failed(exc: "PublishError", outputs: "CIOutputs", json_output: bool) -> NoReturn:
    """What was done before the failing stage, the failure, and the stage's exit code."""
    from modelreg.ci import publish_text

    if json_output:
        print_json(exc.result.to_dict())
    else:
        out_console.print(publish_text(exc.result), markup=False, highlight=False)
    print_error(f"{exc.stage} failed: {exc.message}", exc.hint)
    _warn_all(outputs)
    raise typer.Exit(exc.exit_code) from None


def _warn_all(outputs: "CIOutputs") -> None:
    """The problems met writing the step's outputs ($GITHUB_OUTPUT, dotenv, ...)."""
    for warning in outputs.warnings:
        warn(warning)


@ci_app.command("verify")
@registry_flags()
def verify_cmd(
    ref: Annotated[str, typer.Argument(help="Model reference to admit (tag or digest).")],
    policy: OptionalPolicyOpt = None,
    summary_json: SummaryOpt = None,
    dotenv: DotenvOpt = None,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
    unmatched: UnmatchedOpt = "deny",
) -> None:
    """The deploy gate: check REF against policies; deploy the pinned digest it prints.

    Exit 0 allowed, 13 refused, 9 could not evaluate (fail closed).
    """
    from modelreg.ci import CIOutputs, verify
    from modelreg.policy import no_match_setting

    with Command(json_output, remote) as cmd:
        if not policy:
            raise InvalidInputError(
                "ci verify needs at least one --policy FILE",
                hint="a gate without a policy would admit anything",
            )
        outputs = CIOutputs.from_env(summary_json=summary_json, dotenv=dotenv)
        gate = verify(
            ref,
            policy,
            options=cmd.options,
            outputs=outputs,
            unmatched=no_match_setting(unmatched, "--unmatched"),
        )
        if json_output:
            print_json(gate.to_dict())
        else:
            out_console.print(gate.report(), markup=False, highlight=False)
        _warn_all(outputs)
    raise typer.Exit(gate.exit_code)


register = registrar(ci_app)
