"""``modelreg``: the command-line application (entered through :mod:`modelreg_cli.main`).

Thin by design: parse flags, call :mod:`modelreg`, render the result, map errors
to exit codes. Exit codes (also in the README):

0 success · 1 unexpected error · 2 invalid input or usage · 3 not found ·
4 authentication or permission · 5 integrity (digest/size mismatch) ·
6 registry or network error · 7 verification failed · 8 unsafe or malformed
content · 9 policy could not be evaluated · 10-13 ``ci publish`` stages (10 also
``wasm run``: the module failed) · 14 local disk full, over quota or read-only ·
15 an optional extra is missing (``pip install 'modelreg[EXTRA]'``) · 130 interrupted

This module is the application and its global flags only. The commands live in the
``*_cmds`` modules, at module level, and join the application through their
``register(app)``; what every command shares (errors to exit codes, the registry
flags, progress) is :mod:`modelreg_cli.context`. The command modules import the
library inside their commands, so ``modelreg --help`` stays quick and, for example,
``modelreg.policy`` is imported only by the commands that evaluate policies.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from modelreg_cli import (
    cache_cmds,
    ci_cmds,
    core_cmds,
    distribution_cmds,
    lazy_cmds,
    lifecycle_cmds,
    policy_cmds,
    sign_cmds,
    wasm_cmds,
    webhook_cmds,
)
from modelreg_cli.context import State
from modelreg_cli.render import out_console

import modelreg

app = typer.Typer(
    name="modelreg",
    help="Machine-learning models as OCI artifacts: push, pull, inspect and copy models "
    "between directories, the embedded local store and any OCI registry.",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        out_console.print(f"modelreg {modelreg.__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks for errors.")
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="No progress on stderr, for every command."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    State.verbose = verbose
    State.quiet = quiet


# In this order `modelreg --help` lists them: core commands, then the features.
for _module in (
    core_cmds,
    distribution_cmds,
    lifecycle_cmds,
    sign_cmds,
    policy_cmds,
    webhook_cmds,
    lazy_cmds,
    wasm_cmds,
    ci_cmds,
    cache_cmds,
):
    _module.register(app)


def main_args(args: list[str]) -> Any:
    """Run the CLI in-process with ``args`` (for tests); returns the exit code."""
    try:
        code = app(args, standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    return code or 0
