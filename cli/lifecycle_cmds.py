"""``modelreg rm | prune``: deleting model versions and retaining checkpoint series.

Wired by ``main.py`` with ``lifecycle_cmds.register(app)``. The logic is
:mod:`modelreg.lifecycle` (through ``Client.delete`` and ``Client.prune``); this
module parses flags and prints. ``modelreg prune REPO`` deletes *tags and manifests*
of a repository by a retention rule; ``modelreg cache prune`` is something else: it
frees cached blobs of the local store that no tag needs.

Exit codes: 0 done (or, with ``--dry-run``, planned) · 2 invalid input · 3 a
reference not found · 4 no permission to delete · 6 the registry refused (deletes
disabled: the message names the registry setting).
"""

# No ``from __future__ import annotations``: typer reads these annotations at runtime.
from typing import Annotated, Any

import typer
from modelreg_cli.context import Command, Remote, warn
from modelreg_cli.options import CaFileOpt, InsecureOpt, JsonOpt, PlainHttpOpt
from modelreg_cli.render import human_size, out_console, plural, print_json
from modelreg_cli.wiring import add_commands

commands = typer.Typer()

DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
]


def register(app: typer.Typer) -> None:
    """Add ``rm`` and ``prune`` to the CLI (idempotent)."""
    add_commands(app, commands)


def _print_removals(doc: dict[str, Any]) -> None:
    verb = "would remove" if doc["dryRun"] else "removed"
    for removal in doc["removed"]:
        about = f" (of {removal['subject']})" if removal["subject"] else ""
        out_console.print(f"{verb} {removal['kind']} {removal['reference']}{about}", markup=False)
        if removal["note"] and removal["kind"] in ("manifest", "tag"):
            out_console.print(f"  {removal['note']}", markup=False)
    freed = doc["freed"]
    if freed["blobs"]:
        out_console.print(
            f"freed {plural(freed['blobs'], 'blob')} ({human_size(freed['bytes'])}) "
            "of the local store",
            markup=False,
        )


@commands.command("rm")
def rm(
    refs: Annotated[
        list[str],
        typer.Argument(
            help="What to delete: REPO:TAG (a tag) or REPO@DIGEST (a manifest), in a "
            "registry (host/repo) or the local store (NAME).",
        ),
    ],
    referrers: Annotated[
        bool,
        typer.Option(
            "--referrers",
            help="Delete the whole manifest with its signatures, attestations and chunk "
            "index (and their tag-schema fallback indexes).",
        ),
    ] = False,
    dry_run: DryRunOpt = False,
    json_output: JsonOpt = False,
    plain_http: PlainHttpOpt = False,
    insecure: InsecureOpt = False,
    ca_file: CaFileOpt = None,
) -> None:
    """Delete tags or manifests from a registry or the local store.

    A registry that cannot delete a tag alone (Distribution 2.8) has the manifest
    deleted instead, with every tag on it; the output says so.
    """
    with Command(json_output, Remote(plain_http, insecure, ca_file)) as cmd:
        results = []
        with cmd.client() as client:
            for ref in refs:
                results.append(client.delete(ref, referrers=referrers, dry_run=dry_run))
        docs = [{"reference": ref, **r.to_dict()} for ref, r in zip(refs, results, strict=True)]
        if json_output:
            print_json(docs)
            return
        for doc, result in zip(docs, results, strict=True):
            _print_removals(doc)
            for problem in result.problems:
                warn(problem)


@commands.command("prune")
def prune(
    repository: Annotated[
        str, typer.Argument(help="Repository: registry/repo or NAME in the local store.")
    ],
    keep_last: Annotated[
        int,
        typer.Option(
            "--keep-last",
            metavar="N",
            min=0,
            help="Keep the N newest versions by creation time (the manifest's, else the "
            "ModelPack config's createdAt).",
        ),
    ],
    keep: Annotated[
        list[str] | None,
        typer.Option(
            "--keep",
            metavar="GLOB",
            help="Also keep versions with a tag matching GLOB (e.g. 'v*'); repeatable.",
        ),
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Only delete versions created at least this long ago (90s, 12h, 30d).",
        ),
    ] = None,
    dry_run: DryRunOpt = False,
    json_output: JsonOpt = False,
    plain_http: PlainHttpOpt = False,
    insecure: InsecureOpt = False,
    ca_file: CaFileOpt = None,
) -> None:
    """Retention for a checkpoint series: delete every version of REPOSITORY except
    the newest --keep-last, those tagged to --keep and those younger than
    --older-than, with their signatures, attestations and chunk indexes.

    Versions without a creation time are kept. (`modelreg cache prune` is different:
    it frees cached blobs of the local store and never deletes a tag.)
    """
    from modelreg.units import parse_duration

    with Command(json_output, Remote(plain_http, insecure, ca_file)) as cmd:
        age = parse_duration(older_than, "--older-than") if older_than is not None else None
        with cmd.client() as client:
            result = client.prune(
                repository, keep_last=keep_last, keep=keep or [], older_than=age, dry_run=dry_run
            )
        doc = result.to_dict()
        if json_output:
            print_json(doc)
            return
        for version in result.kept:
            tags = ", ".join(version.tags)
            out_console.print(f"keep   {tags:<30} {version.reason}", markup=False)
        verb = "would delete" if dry_run else "delete"
        for version in result.removed:
            tags = ", ".join(version.tags)
            out_console.print(f"{verb} {tags:<30} {version.created or ''}", markup=False)
        if result.deleted is not None:
            _print_removals(result.deleted.to_dict())
