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
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from modelreg_cli.context import REGISTRY_FLAGS, Command, Remote, registry_flags, warn
from modelreg_cli.options import DryRunOpt, JsonOpt, TrustedRootOpt
from modelreg_cli.render import human_size, out_console, plural, print_json
from modelreg_cli.wiring import registrar

from modelreg.errors import InvalidInputError

if TYPE_CHECKING:
    from modelreg.verify import VerificationPolicy

commands = typer.Typer()


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
@registry_flags()
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
    remote: Remote = REGISTRY_FLAGS,
) -> None:
    """Delete tags or manifests from a registry or the local store.

    A registry that cannot delete a tag alone (Distribution 2.8) has the manifest
    deleted instead, with every tag on it; the output says so.
    """
    with Command(json_output, remote) as cmd:
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
@registry_flags()
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
    keep_signed_by: Annotated[
        list[Path] | None,
        typer.Option(
            "--keep-signed-by",
            metavar="KEY",
            help="Also keep versions with a signature that verifies against this public "
            "key (PEM, as verify --key); repeatable: signed by any of them.",
        ),
    ] = None,
    keep_signed_identity: Annotated[
        list[str] | None,
        typer.Option(
            "--keep-signed-identity",
            metavar="ID",
            help="Also keep versions signed keyless by this identity (exact SAN; needs "
            "--keep-signed-issuer); repeatable.",
        ),
    ] = None,
    keep_signed_identity_regexp: Annotated[
        list[str] | None,
        typer.Option(
            "--keep-signed-identity-regexp",
            metavar="REGEX",
            help="As --keep-signed-identity, a regular expression matched against the whole SAN.",
        ),
    ] = None,
    keep_signed_issuer: Annotated[
        str | None,
        typer.Option(
            "--keep-signed-issuer", metavar="URL", help="OIDC issuer of the keyless identities."
        ),
    ] = None,
    trusted_root: TrustedRootOpt = None,
    dry_run: DryRunOpt = False,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
) -> None:
    """Retention for a checkpoint series: delete every version of REPOSITORY except
    the newest --keep-last, those tagged to --keep, those younger than --older-than
    and those signed by a --keep-signed-by key (or identity), with their signatures,
    attestations and chunk indexes.

    Versions without a creation time are kept, and so are versions whose signatures
    could not be checked (the output says which). A signature counts only when it
    verifies for that version's digest, as `modelreg verify` checks it. (`modelreg
    cache prune` is different: it frees cached blobs of the local store and never
    deletes a tag.)
    """
    from modelreg.units import parse_duration

    with Command(json_output, remote) as cmd:
        age = parse_duration(older_than, "--older-than") if older_than is not None else None
        signed = _keep_signed_policy(
            keep_signed_by or [],
            keep_signed_identity or [],
            keep_signed_identity_regexp or [],
            keep_signed_issuer,
            trusted_root,
        )
        with cmd.client() as client:
            result = client.prune(
                repository,
                keep_last=keep_last,
                keep=keep or [],
                older_than=age,
                keep_signed_by=signed,
                dry_run=dry_run,
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
        for problem in result.problems:
            warn(problem)


def _keep_signed_policy(
    keys: list[Path],
    identities: list[str],
    regexps: list[str],
    issuer: str | None,
    trusted_root: Path | None,
) -> "VerificationPolicy | None":
    """The policy a version must verify against to be kept (None: no such rule)."""
    from modelreg.verify import policy_from_options

    if (identities or regexps) and not issuer:
        raise InvalidInputError(
            "--keep-signed-identity[-regexp] needs the identity's OIDC issuer",
            hint="add --keep-signed-issuer (e.g. https://token.actions.githubusercontent.com)",
        )
    if (issuer or trusted_root) and not (identities or regexps):
        raise InvalidInputError(
            "--keep-signed-issuer and --trusted-root go with --keep-signed-identity[-regexp]"
        )
    if not (keys or identities or regexps):
        return None
    return policy_from_options(
        keys=keys,
        identities=identities,
        identity_regexps=regexps,
        issuer=issuer,
        trusted_root=trusted_root,
        offline=trusted_root is not None,
    )


register = registrar(commands)
