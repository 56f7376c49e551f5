"""``modelreg cache``: what the local store and cache cost on disk, and pruning them.

Wired by ``main.py`` with ``cache_cmds.register(app)``.

Exit codes: 0 done (problems found on the way are printed as warnings) · 2 invalid
input (a size, ``$MODELREG_CHUNK_CACHE_MAX``) · 3 the store is not an OCI layout ·
8 ``cache prune`` removed no blob because the store is damaged (``index.json``
unreadable, a tagged manifest missing or corrupt); temp files and chunks were still
pruned.
"""

# No ``from __future__ import annotations``: typer reads these annotations at runtime.
from typing import Annotated, Any

import typer
from modelreg_cli.context import Command, warn
from modelreg_cli.options import JsonOpt
from modelreg_cli.render import human_size, out_console, print_json
from modelreg_cli.wiring import add_group

from modelreg import cache as gc  # the store's gc plus the chunk store of lazy reads

EXIT_DAMAGED = 8

cache_app = typer.Typer(
    name="cache",
    help="Disk use of the local store and cache under $MODELREG_HOME: see it, prune it.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``cache`` command group to the modelreg CLI."""
    add_group(app, cache_app, "cache")


def _chunk_limit(text: str | None) -> int | None:
    """``--chunks-max``, else ``$MODELREG_CHUNK_CACHE_MAX``, else None (no limit)."""
    if text is not None:
        return gc.parse_size_limit(text, "--chunks-max")
    return gc.chunk_cache_max()


def _row(label: str, size: int, count: str, note: str) -> str:
    return f"{label:<13} {human_size(size):>10}  {count:<14} {note}"


def _print_usage(info: gc.Usage, limit: int | None) -> None:
    cap = f"limit {human_size(limit)}" if limit is not None else "no limit"
    lines = [
        f"store         {info.store}",
        f"tags          {info.tags}",
        _row(
            "referenced",
            info.referenced_bytes,
            f"{info.referenced_blobs} blobs",
            "tagged models and their referrers",
        ),
        _row(
            "unreferenced",
            info.unreferenced_bytes,
            f"{info.unreferenced_blobs} blobs",
            "cache: `modelreg cache prune` removes them",
        ),
        _row(
            "chunks",
            info.chunk_bytes,
            f"{info.chunks} chunks",
            f"lazy reads; {cap} ({gc.CHUNK_CACHE_MAX_ENV})",
        ),
        _row("temp", info.temp_bytes, f"{info.temp_files} files", "leftovers older than a day"),
    ]
    if info.other_files:
        lines.append(
            _row("other", info.other_bytes, f"{info.other_files} files", "not blobs; left alone")
        )
    if info.state_bytes is not None:
        lines.append(_row("state", info.state_bytes, "", "digest caches, blob locations"))
    lines.append(_row("total", info.total_bytes, "", ""))
    for line in lines:
        out_console.print(line.rstrip(), markup=False)


def _print_prune(result: gc.PruneResult) -> None:
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
            warn(f"{result.missing_blobs} blobs that tagged models need are missing")


@cache_app.command("prune")
def prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would be removed; remove nothing.")
    ] = False,
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
        int,
        typer.Option(
            "--older-than",
            metavar="SECONDS",
            min=0,
            help="Only remove blobs written at least this long ago (a running pull may "
            "not have tagged what it just wrote).",
        ),
    ] = gc.DEFAULT_OLDER_THAN,
    json_output: JsonOpt = False,
) -> None:
    """Remove cached blobs no tagged model needs, stale temp files and, with a limit,
    the least recently used chunks. Tagged models and their referrers are kept.

    Exit 8 when the store is damaged so that no blob could be judged unreferenced.
    """
    from modelreg import settings

    with Command(json_output):
        result = gc.prune(
            settings.store_dir(),
            max_chunk_bytes=_chunk_limit(chunks_max),
            older_than=older_than,
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
