"""``modelreg``: the command line.

Thin by design: parse flags, call :mod:`modelreg`, render the result, map errors
to exit codes. Exit codes (also in the README):

0 success · 1 unexpected error · 2 invalid input or usage · 3 not found ·
4 authentication or permission · 5 integrity (digest/size mismatch) ·
6 registry or network error · 7 verification failed · 8 unsafe or malformed
content · 9 policy could not be evaluated · 130 interrupted
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from modelreg_cli.render import ProgressRenderer, err_console, human_size, out_console, print_json

import modelreg
from modelreg.client import Client, RemoteOptions
from modelreg.errors import InvalidInputError, ModelRegError
from modelreg.model.pack import ModelMetadata

app = typer.Typer(
    name="modelreg",
    help="Machine-learning models as OCI artifacts: push, pull, inspect and copy models "
    "between directories, the embedded local store and any OCI registry.",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    add_completion=False,
)


class State:
    verbose = False


# ---------------------------------------------------------------- shared options
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
PlainHttpOpt = Annotated[
    bool,
    typer.Option(
        "--plain-http",
        help="Talk HTTP, not HTTPS, to the registry (loopback hosts need not say so).",
    ),
]
InsecureOpt = Annotated[
    bool,
    typer.Option("--insecure", help="Do not verify the registry's TLS certificate (warns)."),
]
CaFileOpt = Annotated[
    Path | None,
    typer.Option("--ca-file", help="PEM file of CA certificates to trust for the registry."),
]
ConcurrencyOpt = Annotated[
    int, typer.Option("--concurrency", min=1, max=64, help="Blobs transferred in parallel.")
]


def _warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {message}")


def _options(
    plain_http: bool = False,
    insecure: bool = False,
    ca_file: Path | None = None,
    concurrency: int = 4,
) -> RemoteOptions:
    if ca_file is not None and not ca_file.is_file():
        raise InvalidInputError(f"--ca-file {str(ca_file)!r} is not a file")
    return RemoteOptions(
        plain_http=plain_http,
        insecure=insecure,
        ca_file=str(ca_file) if ca_file else None,
        concurrency=concurrency,
        on_warning=_warn,
        fsync=os.environ.get("MODELREG_FSYNC", "1") != "0",
    )


@contextlib.contextmanager
def _errors(json_output: bool) -> Iterator[None]:
    """The one place that turns errors into messages and exit codes."""
    try:
        yield
    except ModelRegError as exc:
        if State.verbose:
            traceback.print_exc()
        if json_output:
            doc = {
                "error": {
                    "type": type(exc).__name__,
                    "message": exc.message,
                    "hint": exc.hint,
                    "exitCode": exc.exit_code,
                }
            }
            sys.stderr.write(json.dumps(doc) + "\n")
        else:
            err_console.print(f"[red]error:[/red] {exc.message}", markup=True, highlight=False)
            if exc.hint:
                err_console.print(f"  hint: {exc.hint}", markup=False)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:
        if State.verbose:
            traceback.print_exc()
        err_console.print(f"[red]error:[/red] unexpected {type(exc).__name__}: {exc}", markup=True)
        err_console.print("  hint: run again with --verbose for the traceback and report it")
        raise typer.Exit(1) from None


def _print_version(value: bool) -> None:
    if value:
        out_console.print(f"modelreg {modelreg.__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks for errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    State.verbose = verbose


# --------------------------------------------------------------------- commands
@app.command()
def push(
    path: Annotated[Path, typer.Argument(help="Model directory to push.")],
    ref: Annotated[
        str,
        typer.Argument(
            help="Where to: registry/repo:tag, repo:tag (local store) or oci:DIR[:tag]."
        ),
    ],
    name: Annotated[str | None, typer.Option(help="Model name (default: directory name).")] = None,
    model_version: Annotated[
        str | None, typer.Option("--model-version", help="Model version string.")
    ] = None,
    license_: Annotated[
        list[str] | None, typer.Option("--license", help="SPDX license id (repeatable).")
    ] = None,
    author: Annotated[list[str] | None, typer.Option(help="Author (repeatable).")] = None,
    description: Annotated[str | None, typer.Option(help="One-line description.")] = None,
    source_url: Annotated[str | None, typer.Option(help="Where the model comes from.")] = None,
    revision: Annotated[str | None, typer.Option(help="Source revision, e.g. a commit.")] = None,
    annotation: Annotated[
        list[str] | None, typer.Option("--annotation", "-a", help="Manifest annotation KEY=VALUE.")
    ] = None,
    allow_outside_links: Annotated[
        bool,
        typer.Option(help="Follow symlinks that point outside the model directory."),
    ] = False,
    json_output: JsonOpt = False,
    plain_http: PlainHttpOpt = False,
    insecure: InsecureOpt = False,
    ca_file: CaFileOpt = None,
    concurrency: ConcurrencyOpt = 4,
) -> None:
    """Pack a model directory as a ModelPack artifact and push it."""
    with _errors(json_output):
        annotations = {}
        for item in annotation or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise InvalidInputError(f"--annotation {item!r} is not KEY=VALUE")
            annotations[key] = value
        meta = ModelMetadata(
            name=name,
            version=model_version,
            licenses=tuple(license_ or ()),
            authors=tuple(author or ()),
            description=description,
            source_url=source_url,
            revision=revision,
        )
        opts = _options(plain_http, insecure, ca_file, concurrency)
        with Client(opts) as client, ProgressRenderer(not json_output) as progress:
            result = client.push(
                path,
                ref,
                metadata=meta,
                annotations=annotations,
                allow_outside_links=allow_outside_links,
                progress=progress,
            )
        if json_output:
            print_json(result.to_dict())
        else:
            t = result.transfer
            out_console.print(f"pushed {result.reference}")
            out_console.print(
                f"  sent {human_size(t.bytes_sent)} in {t.blobs_sent} blobs, "
                f"skipped {human_size(t.bytes_skipped)} already there, "
                f"mounted {human_size(t.bytes_mounted)}"
            )


@app.command()
def pull(
    ref: Annotated[str, typer.Argument(help="Model to pull.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write into.")],
    include: Annotated[
        list[str] | None,
        typer.Option("--include", help="Only files matching this glob (repeatable)."),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not keep fetched blobs in the local cache.")
    ] = False,
    link: Annotated[
        bool,
        typer.Option(
            "--link",
            help="Hard-link files from the cache (saves disk; do not edit the pulled files).",
        ),
    ] = False,
    json_output: JsonOpt = False,
    plain_http: PlainHttpOpt = False,
    insecure: InsecureOpt = False,
    ca_file: CaFileOpt = None,
    concurrency: ConcurrencyOpt = 4,
) -> None:
    """Pull a model's files into a directory; every byte is verified before it lands."""
    with _errors(json_output):
        opts = _options(plain_http, insecure, ca_file, concurrency)
        with Client(opts) as client, ProgressRenderer(not json_output) as progress:
            result = client.pull(
                ref,
                output,
                include=include or (),
                cache=not no_cache,
                link=link,
                progress=progress,
            )
        if json_output:
            print_json(result.to_dict())
        else:
            out_console.print(f"pulled {result.reference} into {result.output}")
            out_console.print(
                f"  {len(result.files)} files, fetched {human_size(result.bytes_fetched)}, "
                f"from cache {human_size(result.bytes_from_cache)}"
            )


@app.command()
def inspect(
    ref: Annotated[str, typer.Argument(help="Model to describe.")],
    json_output: JsonOpt = False,
    plain_http: PlainHttpOpt = False,
    insecure: InsecureOpt = False,
    ca_file: CaFileOpt = None,
) -> None:
    """Show a model's manifest, config, files, sizes and digests (no weights are read)."""
    with _errors(json_output):
        with Client(_options(plain_http, insecure, ca_file)) as client:
            info = client.inspect(ref)
        if json_output:
            print_json(info.to_dict())
            return
        doc = info.to_dict()
        out_console.print(f"reference     {info.reference}")
        out_console.print(f"digest        {info.digest}")
        out_console.print(f"artifactType  {doc['artifactType']}")
        out_console.print(f"total size    {human_size(info.total_size)}")
        cfg = info.config or {}
        descriptor = cfg.get("descriptor") if isinstance(cfg.get("descriptor"), dict) else {}
        model_cfg = cfg.get("config") if isinstance(cfg.get("config"), dict) else {}
        for key, value in {**(descriptor or {}), **(model_cfg or {})}.items():
            out_console.print(f"{key:<13} {value}", markup=False)
        if info.files:
            out_console.print("files:")
            width = max(len(str(f["path"])) for f in info.files)
            for f in info.files:
                role = str(f["mediaType"]).rsplit("/", 1)[-1]
                out_console.print(
                    f"  {f['path']!s:<{width}}  {human_size(int(f['size'])):>10}  "
                    f"{str(f['digest'])[:19]}  {role}",
                    markup=False,
                )


@app.command("cp")
def cp(
    src: Annotated[str, typer.Argument(help="Source reference.")],
    dst: Annotated[str, typer.Argument(help="Destination reference.")],
    recursive: Annotated[
        bool,
        typer.Option("--recursive", "-r", help="Also copy referrers (signatures, attestations)."),
    ] = False,
    json_output: JsonOpt = False,
    plain_http: PlainHttpOpt = False,
    insecure: InsecureOpt = False,
    ca_file: CaFileOpt = None,
    concurrency: ConcurrencyOpt = 4,
) -> None:
    """Copy a model between registries, the local store and OCI layout directories."""
    with _errors(json_output):
        opts = _options(plain_http, insecure, ca_file, concurrency)
        with Client(opts) as client, ProgressRenderer(not json_output) as progress:
            result = client.copy(src, dst, recursive=recursive, progress=progress)
        if json_output:
            print_json(result.to_dict())
        else:
            out_console.print(f"copied {src} -> {dst} ({result.root.digest})")
            out_console.print(
                f"  sent {human_size(result.bytes_sent)}, skipped "
                f"{human_size(result.bytes_skipped)}, mounted {human_size(result.bytes_mounted)}"
                + (f", {len(result.referrers)} referrers" if recursive else "")
            )


@app.command()
def tags(
    ref: Annotated[str, typer.Argument(help="Repository: registry/repo, repo or oci:DIR.")],
    json_output: JsonOpt = False,
    plain_http: PlainHttpOpt = False,
    insecure: InsecureOpt = False,
    ca_file: CaFileOpt = None,
) -> None:
    """List the tags of a repository."""
    with _errors(json_output):
        with Client(_options(plain_http, insecure, ca_file)) as client:
            names = client.tags(ref)
        if json_output:
            print_json({"repository": ref, "tags": names})
        else:
            for name in names:
                out_console.print(name, markup=False)


@app.command()
def login(
    registry: Annotated[str, typer.Argument(help="Registry host[:port].")],
    username: Annotated[str | None, typer.Option("--username", "-u")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    json_output: JsonOpt = False,
    plain_http: PlainHttpOpt = False,
    insecure: InsecureOpt = False,
    ca_file: CaFileOpt = None,
) -> None:
    """Check credentials against a registry and store them in the docker config file."""
    with _errors(json_output):
        user = username or os.environ.get("MODELREG_USERNAME")
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = os.environ.get("MODELREG_PASSWORD") or ""
            if not password and sys.stdin.isatty():
                password = typer.prompt("Password", hide_input=True)
        if not user:
            if not sys.stdin.isatty() or password_stdin:
                raise InvalidInputError(
                    "no username given", hint="pass --username or set MODELREG_USERNAME"
                )
            user = typer.prompt("Username")
        if not password:
            raise InvalidInputError(
                "no password given",
                hint="pass --password-stdin, set MODELREG_PASSWORD, or run in a terminal",
            )
        with Client(_options(plain_http, insecure, ca_file)) as client:
            where = client.login(registry, user, password)
        if json_output:
            print_json({"registry": registry, "username": user, "configFile": where})
        else:
            out_console.print(f"login succeeded for {user} at {registry} (saved in {where})")


@app.command()
def logout(
    registry: Annotated[str, typer.Argument(help="Registry host[:port].")],
    json_output: JsonOpt = False,
) -> None:
    """Remove stored credentials for a registry."""
    with _errors(json_output):
        with Client(_options()) as client:
            removed = client.logout(registry)
        if json_output:
            print_json({"registry": registry, "removed": removed})
        elif removed:
            out_console.print(f"removed credentials for {registry}")
        else:
            out_console.print(f"no credentials were stored for {registry}")


@app.command("list")
def list_(json_output: JsonOpt = False) -> None:
    """List what the embedded local store holds (repository:tag and digest)."""
    with _errors(json_output):
        with Client(_options()) as client:
            rows = client.list_store()
        if json_output:
            print_json(rows)
            return
        for row in rows:
            out_console.print(f"{row['name']:<40} {row['digest']}", markup=False)


def run() -> None:
    """Console-script entry point."""
    app()


def main_args(args: list[str]) -> Any:
    """Run the CLI in-process with ``args`` (for tests); returns the exit code."""
    try:
        app(args, standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    return 0


if __name__ == "__main__":
    run()
