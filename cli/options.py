"""The typer option types that the ``modelreg`` commands share: one definition each.

main.py and the ``*_cmds`` modules all import from here. This module imports none of
them (main.py imports the ``*_cmds`` modules to call ``register()``), so importing it
never needs main.py and makes no cycle.
"""

from pathlib import Path
from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
PlainHttpOpt = Annotated[
    bool,
    typer.Option(
        "--plain-http",
        help="Talk HTTP, not HTTPS, to the registry (loopback hosts need not say so).",
    ),
]
# --plain-http as the feature commands (sign, attest, verify, referrers, policy, wasm,
# ci) have always worded it: one word from PlainHttpOpt. Kept apart so that their help
# does not change; make them one when that wording may change.
FeaturePlainHttpOpt = Annotated[
    bool,
    typer.Option(
        "--plain-http", help="Talk HTTP, not HTTPS, to the registry (loopback needs not say so)."
    ),
]
InsecureOpt = Annotated[
    bool, typer.Option("--insecure", help="Do not verify the registry's TLS certificate (warns).")
]
CaFileOpt = Annotated[
    Path | None,
    typer.Option("--ca-file", help="PEM file of CA certificates to trust for the registry."),
]
ConcurrencyOpt = Annotated[
    int, typer.Option("--concurrency", min=1, max=64, help="Blobs transferred in parallel.")
]
PolicyOpt = Annotated[
    list[Path],
    typer.Option(
        "--policy", "-p", help="Policy file or directory of *.yaml policies (repeatable)."
    ),
]
