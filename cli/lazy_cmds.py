"""``modelreg mount`` and ``modelreg umount``: a model's files as a read-only filesystem;
``modelreg index``: give a pushed model a chunk index.

Wired by ``main.py`` with ``lazy_cmds.register(app)``.
"""

# No ``from __future__ import annotations``: typer reads these annotations at runtime.
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from modelreg_cli.context import REGISTRY_FLAGS, Command, Remote, registry_flags, warn
from modelreg_cli.options import JsonOpt
from modelreg_cli.render import err_console, out_console
from modelreg_cli.wiring import registrar

commands = typer.Typer()


@commands.command("mount")
@registry_flags(concurrency=True)
def mount(
    ref: Annotated[str, typer.Argument(help="Model to mount (registry, store or oci:DIR).")],
    mountpoint: Annotated[Path, typer.Argument(help="Empty directory to mount it on.")],
    allow_other: Annotated[
        bool,
        typer.Option(
            "--allow-other",
            help="Let other users (and other containers sharing the mount) read it; "
            "needs root or user_allow_other in /etc/fuse.conf.",
        ),
    ] = False,
    readahead_mib: Annotated[
        int,
        typer.Option(
            "--readahead", min=0, max=4096, help="MiB fetched ahead of sequential readers."
        ),
    ] = 64,
    kernel_readahead_kb: Annotated[
        int | None,
        typer.Option(
            "--kernel-readahead",
            min=0,
            max=65536,
            help="KiB the kernel reads ahead on this mount (default 128); 0 makes mmap "
            "readers fetch only the pages they touch. Needs root.",
        ),
    ] = None,
    memory_mib: Annotated[
        int,
        typer.Option("--memory", min=0, max=65536, help="MiB of verified chunks in memory."),
    ] = 128,
    debug_fuse: Annotated[
        bool, typer.Option("--debug-fuse", help="Log every FUSE request (libfuse debug).")
    ] = False,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
) -> None:
    """Mount a model read-only: files are fetched on first read, every chunk verified.

    Runs in the foreground until unmounted (`modelreg umount MOUNTPOINT`, Ctrl-C or
    SIGTERM). Needs /dev/fuse and root or fusermount3.
    """
    from modelreg.lazy import open_model
    from modelreg.lazy.fuse import mount as fuse_mount

    with Command(json_output, remote) as cmd:
        with (
            cmd.client() as client,
            open_model(
                client,
                ref,
                concurrency=remote.concurrency,
                readahead=readahead_mib * 1024 * 1024,
                memory=memory_mib * 1024 * 1024,
                on_warning=warn,
            ) as handle,
        ):
            fuse_mount(
                handle,
                mountpoint,
                allow_other=allow_other,
                debug=debug_fuse,
                kernel_readahead_kb=kernel_readahead_kb,
                on_ready=lambda: _show_mounted(handle, mountpoint, json_output),
                on_warning=warn,
            )
            stats = handle.stats
        if json_output:
            sys.stdout.write(json.dumps({"event": "unmounted", "stats": stats}) + "\n")
        else:
            out_console.print(f"unmounted {mountpoint}", markup=False)


def _show_mounted(handle: Any, mountpoint: Path, json_output: bool) -> None:
    """Once the mount is up: say so (a JSON line for scripts) and pass on the notes."""
    if json_output:
        doc = {
            "event": "mounted",
            "reference": handle.reference,
            "digest": str(handle.digest),
            "mountpoint": str(mountpoint),
            "files": [f.to_dict() for f in handle.files],
        }
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()
    else:
        out_console.print(
            f"mounted {handle.reference} at {mountpoint} "
            f"({len(handle.files)} files); `modelreg umount {mountpoint}` "
            "or Ctrl-C to unmount",
            markup=False,
        )
    for note in handle.notes:
        if note.startswith(("no chunk index", "chunk index")):
            warn(note)  # how reads are verified: whole blobs, or an unanchored index
        else:
            err_console.print(f"note: {note}", markup=False)


@commands.command("umount")
def umount(
    mountpoint: Annotated[Path, typer.Argument(help="Where a model is mounted.")],
    lazy: Annotated[
        bool, typer.Option("--lazy", help="Detach now even if files are open (umount -l).")
    ] = False,
    json_output: JsonOpt = False,
) -> None:
    """Unmount a model mounted with `modelreg mount`."""
    from modelreg.lazy.fuse import umount as fuse_umount

    with Command(json_output):
        fuse_umount(mountpoint, lazy=lazy)
        if json_output:
            sys.stdout.write(json.dumps({"unmounted": str(mountpoint)}) + "\n")
        else:
            out_console.print(f"unmounted {mountpoint}", markup=False)


@commands.command("index")
@registry_flags(concurrency=True)
def index(
    ref: Annotated[str, typer.Argument(help="Model to index (registry or store reference).")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Build and push the index referrer even if one exists."),
    ] = False,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
) -> None:
    """Add a chunk index to a model pushed without one (another tool, an older modelreg,
    `push --no-chunk-index`), so lazy opens and mounts fetch and verify chunk by chunk.

    Streams each blob once, verified, and pushes the index as a referrer of the
    manifest (its digest is unchanged; sign the referrer to cover the index). An
    existing index is reported, not rebuilt, unless --force.
    """
    from modelreg.lazy.publish import add_chunk_index

    with Command(json_output, remote) as cmd:
        with cmd.client() as client, cmd.progress() as progress:
            result = add_chunk_index(client, ref, force=force, progress=progress)
        if json_output:
            sys.stdout.write(json.dumps(result.to_dict()) + "\n")
            return
        if result.source == "manifest":
            out_console.print(
                f"{result.reference} already has a chunk index, named by its manifest "
                f"({result.index.digest})",
                markup=False,
            )
        elif result.source == "referrer":
            out_console.print(
                f"{result.reference} already has a chunk index referrer "
                f"({result.referrer.digest if result.referrer else ''}); --force rebuilds it",
                markup=False,
            )
        else:
            out_console.print(
                f"indexed {result.reference}: read {result.bytes_read} bytes, pushed chunk "
                f"index {result.index.digest} as referrer "
                f"{result.referrer.digest if result.referrer else ''}",
                markup=False,
            )


register = registrar(commands)
