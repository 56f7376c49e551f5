"""``modelreg cache``: what the local store and cache cost on disk, pruning them,
and checking every blob (``cache verify``, alias ``cache fsck``).

Wired by ``main.py`` with ``cache_cmds.register(app)``. ``cache prune`` removes
*cached* blobs no tag needs; it never touches tags (``modelreg prune REPO`` is the
retention of a repository's tags, in :mod:`modelreg_cli.lifecycle_cmds`).

Exit codes: 0 done (problems found on the way are printed as warnings) · 2 invalid
input (a size, ``$MODELREG_CHUNK_CACHE_MAX``) · 3 the store is not an OCI layout ·
5 ``cache verify`` found damaged blobs and did not repair all of them (they are in
``quarantine/``; the store no longer serves them) · 8 ``cache prune`` removed no
blob because the store is damaged (``index.json`` unreadable, a tagged manifest
missing or corrupt); temp files and chunks were still pruned.
"""

# No ``from __future__ import annotations``: typer reads these annotations at runtime.
from typing import TYPE_CHECKING, Annotated, Any

import typer
from modelreg_cli.context import REGISTRY_FLAGS, Command, Remote, registry_flags, warn
from modelreg_cli.options import DryRunOpt, JsonOpt
from modelreg_cli.render import human_size, out_console, plural, print_json
from modelreg_cli.wiring import command_group, registrar

if TYPE_CHECKING:  # imported by the commands that use it: it brings the registry client
    from modelreg import cache as gc  # the store's gc plus the chunk store of lazy reads

EXIT_DAMAGED = 8
EXIT_CORRUPT = 5

cache_app = command_group(
    "cache",
    "The local store and cache under $MODELREG_HOME: see its disk use, prune "
    "unreferenced cached blobs, verify every blob.",
)


def _chunk_limit(text: str | None) -> int | None:
    """``--chunks-max``, else ``$MODELREG_CHUNK_CACHE_MAX``, else None (no limit)."""
    from modelreg import cache as gc

    if text is not None:
        return gc.parse_size_limit(text, "--chunks-max")
    return gc.chunk_cache_max()


def _row(label: str, size: int, count: str, note: str) -> str:
    return f"{label:<13} {human_size(size):>10}  {count:<14} {note}"


def _print_usage(info: "gc.Usage", limit: int | None) -> None:
    from modelreg import cache as gc

    cap = f"limit {human_size(limit)}" if limit is not None else "no limit"
    lines = [
        f"store         {info.store}",
        f"tags          {info.tags}",
        _row(
            "referenced",
            info.referenced_bytes,
            f"{plural(info.referenced_blobs, 'blob')}",
            "tagged models and their referrers",
        ),
        _row(
            "unreferenced",
            info.unreferenced_bytes,
            f"{plural(info.unreferenced_blobs, 'blob')}",
            "cache: `modelreg cache prune` removes them",
        ),
        _row(
            "chunks",
            info.chunk_bytes,
            f"{info.chunks} chunks",
            f"lazy reads; {cap} ({gc.CHUNK_CACHE_MAX_ENV})",
        ),
        _row(
            "temp",
            info.temp_bytes,
            f"{plural(info.temp_files, 'file')}",
            "leftovers older than a day",
        ),
    ]
    if info.other_files:
        lines.append(
            _row(
                "other",
                info.other_bytes,
                f"{plural(info.other_files, 'file')}",
                "not blobs; left alone",
            )
        )
    if info.state_bytes is not None:
        lines.append(_row("state", info.state_bytes, "", "digest caches, blob locations"))
    lines.append(_row("total", info.total_bytes, "", ""))
    for line in lines:
        out_console.print(line.rstrip(), markup=False)


def _print_prune(result: "gc.PruneResult") -> None:
    verb = "would remove" if result.dry_run else "removed"
    out_console.print(
        f"{verb} {len(result.removed_blobs)} unreferenced blobs "
        f"({human_size(result.blob_bytes)}), {result.temp_files} temp files "
        f"({human_size(result.temp_bytes)}), {result.chunks} chunks "
        f"({human_size(result.chunk_bytes)}): {human_size(result.freed_bytes)} in all",
        markup=False,
    )
    if result.kept_recent_blobs:
        out_console.print(
            f"kept {result.kept_recent_blobs} unreferenced blobs "
            f"({human_size(result.kept_recent_bytes)}) written too recently (--older-than)",
            markup=False,
        )
    if result.dropped_entries:
        out_console.print(
            f"{'would drop' if result.dry_run else 'dropped'} "
            f"{len(result.dropped_entries)} untagged index.json entries",
            markup=False,
        )
    out_console.print(
        f"chunk store: {result.chunks_left} chunks, {human_size(result.chunk_bytes_left)}",
        markup=False,
    )


@cache_app.command("info")
def info(json_output: JsonOpt = False) -> None:
    """Bytes used by tagged models, unreferenced cached blobs, lazy-read chunks,
    temporary leftovers and state databases (nothing is changed)."""
    from modelreg import cache as gc
    from modelreg import settings

    with Command(json_output):
        limit = _chunk_limit(None)
        result = gc.usage(settings.store_dir(), state=settings.home() / "state")
        if json_output:
            doc: dict[str, Any] = result.to_dict()
            doc["chunkLimitBytes"] = limit
            print_json(doc)
        else:
            _print_usage(result, limit)
        for problem in result.problems:
            warn(problem)
        if result.missing_blobs:
            warn(f"{plural(result.missing_blobs, 'blob')} that tagged models need are missing")


@cache_app.command("prune")
def prune(
    dry_run: DryRunOpt = False,
    chunks_max: Annotated[
        str | None,
        typer.Option(
            "--chunks-max",
            metavar="SIZE",
            help="Trim the lazy-read chunk store to SIZE (e.g. 20GiB, 0 empties it), least "
            "recently used first; default $MODELREG_CHUNK_CACHE_MAX, else no trim.",
        ),
    ] = None,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Only remove blobs written at least this long ago (a running pull may "
            "not have tagged what it just wrote): seconds or 90s, 15m, 1h, 30d.",
        ),
    ] = "1h",
    json_output: JsonOpt = False,
) -> None:
    """Remove cached blobs no tagged model needs, stale temp files and, with a limit,
    the least recently used chunks. Tagged models and their referrers are kept.

    Exit 8 when the store is damaged so that no blob could be judged unreferenced.
    """
    from modelreg import cache as gc
    from modelreg import settings
    from modelreg.units import parse_duration

    with Command(json_output):
        result = gc.prune(
            settings.store_dir(),
            max_chunk_bytes=_chunk_limit(chunks_max),
            older_than=parse_duration(older_than, "--older-than"),
            dry_run=dry_run,
        )
        stale = _forget_stale_copies(dry_run)
        if json_output:
            print_json({**result.to_dict(), "staleFileReferences": stale})
        else:
            _print_prune(result)
            if stale:
                verb = "would forget" if dry_run else "forgot"
                out_console.print(
                    f"{verb} {stale} references to pulled files that changed or are gone",
                    markup=False,
                )
        for problem in result.problems:
            warn(problem)
    if result.blobs_skipped:
        if not json_output:
            warn("no blob was removed: the store needs repair first (see above)")
        raise typer.Exit(EXIT_DAMAGED)


def _forget_stale_copies(dry_run: bool) -> int:
    """References to pulled files (cache mode reference) whose file changed or is gone."""
    from modelreg import settings
    from modelreg.content.copies import Copies

    with Copies(settings.state_dir() / "copies.sqlite") as copies:
        return copies.prune(dry_run=dry_run)


def _print_verify(result: "gc.VerifyResult") -> None:
    out_console.print(
        f"checked {plural(result.checked_blobs, 'blob')} ({human_size(result.checked_bytes)}) in "
        f"{result.store}",
        markup=False,
    )
    for damage in result.damaged:
        where = f"; moved to {damage.quarantined}" if damage.quarantined else ""
        out_console.print(f"damaged {damage.digest}: {damage.problem}{where}", markup=False)
        if damage.repaired_from is not None:
            out_console.print(
                f"  the local copy of {damage.digest} was damaged and has been repaired "
                f"from {damage.repaired_from}",
                markup=False,
            )
        elif damage.repair_error is not None:
            out_console.print(f"  not repaired: {damage.repair_error}", markup=False)
    if result.clean:
        out_console.print("the store is sound", markup=False)


def _verify(cmd: Command, sources: list[str], repair: bool) -> "gc.VerifyResult":
    from modelreg import cache as gc
    from modelreg import settings
    from modelreg.errors import InvalidInputError

    if sources and not repair:
        raise InvalidInputError("--from is used with --repair", hint="add --repair")
    if repair and not sources:
        raise InvalidInputError(
            "--repair needs a source to fetch damaged blobs from",
            hint="add --from REGISTRY/REPO (a repository that holds the models), repeatable",
        )
    with cmd.client() as client:
        targets = [client.target(ref, create=False) for ref in sources]
        return gc.verify(settings.store_dir(), repair_from=targets)


@registry_flags()
def _verify_command(
    repair: Annotated[
        bool,
        typer.Option("--repair", help="Fetch damaged blobs again from the --from sources."),
    ] = False,
    sources: Annotated[
        list[str] | None,
        typer.Option(
            "--from",
            metavar="REF",
            help="Where --repair fetches from: a registry repository (registry/repo) or an "
            "oci:DIR layout holding the damaged blobs; repeatable, tried in order.",
        ),
    ] = None,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
) -> None:
    """Re-hash every blob of the local store; move damaged ones into quarantine/
    (kept for inspection, never served); with --repair, fetch them again.

    Exit 0 when the store is sound (or everything damaged was repaired), 5 when
    damaged blobs remain unrepaired.
    """
    result: gc.VerifyResult | None = None
    with Command(json_output, remote) as cmd:
        result = _verify(cmd, sources or [], repair)
        if json_output:
            print_json(result.to_dict())
        else:
            _print_verify(result)
    if result is not None and not result.clean:
        if not json_output:
            warn(
                f"{len(result.outstanding)} damaged blobs are not repaired: pull their models "
                "again from the registry, or run `modelreg cache verify --repair --from "
                "REGISTRY/REPO`"
            )
        raise typer.Exit(EXIT_CORRUPT)


cache_app.command("verify")(_verify_command)
cache_app.command("fsck", help="Alias of `modelreg cache verify`.")(_verify_command)


register = registrar(cache_app)
