"""``modelreg prefetch``: warm pull-through caches and mirrors before a rollout."""

# No ``from __future__ import annotations``: typer reads these annotations at runtime.
from typing import Annotated

import typer
from modelreg_cli.context import REGISTRY_FLAGS, Command, Remote, registry_flags, warn
from modelreg_cli.options import (
    JsonOpt,
    QuietOpt,
)
from modelreg_cli.render import human_size, out_console, plural, print_json
from modelreg_cli.wiring import registrar

commands = typer.Typer()


@commands.command("prefetch")
@registry_flags(concurrency=True)
def prefetch(
    ref: Annotated[str, typer.Argument(metavar="REF", help="Model to warm the mirrors with.")],
    via: Annotated[
        list[str] | None,
        typer.Option(
            "--via",
            metavar="MIRROR",
            help="Mirror or pull-through cache to warm: HOST[:PORT] or http(s)://HOST[:PORT] "
            "(repeatable; default: the mirrors hosts.toml lists for the registry).",
        ),
    ] = None,
    referrers: Annotated[
        bool,
        typer.Option("--referrers", help="Warm signatures, attestations and the chunk index too."),
    ] = False,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
) -> None:
    """Read every blob of a model through mirrors so that they cache it, keeping
    nothing: a rollout then starts warm. Every byte is verified; a mirror that fails
    is skipped for the registry, and the summary says how many bytes each host served
    (a mirror is warm when the registry served none). The registry flags are the
    registry's; a mirror's settings come from hosts.toml."""
    with Command(json_output, remote, quiet=quiet) as cmd:
        with cmd.client() as client, cmd.progress() as progress:
            result = client.prefetch(
                ref, via=tuple(via or ()), referrers=referrers, progress=progress
            )
        if json_output:
            print_json(result.to_dict())
            return
        out_console.print(
            f"prefetched {result.reference}: {plural(result.blobs, 'blob')}, "
            f"{human_size(result.blob_bytes)}"
            + (f", {plural(result.referrers, 'referrer')}" if referrers else ""),
            markup=False,
        )
        for m in result.mirrors:
            state = "warm" if m.warm else "NOT warm"
            out_console.print(
                f"  {m.mirror}: {state}; served {human_size(m.from_mirror)}, upstream "
                f"{result.upstream} served {human_size(m.from_upstream)}"
                + (" (it served wrong bytes: untrusted)" if m.untrusted else ""),
                markup=False,
            )
        if not result.warm:
            warn("a mirror is not warm: the registry served some of the model (see above)")


register = registrar(commands)
