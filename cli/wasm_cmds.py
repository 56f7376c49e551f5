"""``modelreg wasm pack | run``: WebAssembly inference modules bound to a model.

Exit codes as everywhere (0 ok · 2 bad input · 3 not found · 4 auth · 5 integrity ·
6 registry or network · 7 verification refused · 8 malformed content), plus
**10**: the module did not run to a normal end (trap, memory/time/fuel/output
limit, host ABI misuse) or exited with a non-zero status.
"""

# No ``from __future__ import annotations``: typer reads these annotations at runtime.
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from modelreg_cli.context import REGISTRY_FLAGS, Command, Remote, print_error, registry_flags
from modelreg_cli.options import JsonOpt, parse_annotations
from modelreg_cli.render import err_console, human_size, out_console, plural, print_json
from modelreg_cli.wiring import command_group, registrar

from modelreg.errors import InvalidInputError

EXIT_MODULE_FAILED = 10

wasm_app = command_group(
    "wasm",
    "WebAssembly inference modules that read a model's weights lazily from a "
    "registry: pack a module with its model (pinned by digest), run it sandboxed.",
)


@contextlib.contextmanager
def _stdin_file() -> Iterator[str]:
    """Standard input copied to a temporary file (WASI reads stdin from a file)."""
    fd, path = tempfile.mkstemp(prefix="modelreg-wasm-input-")
    try:
        with os.fdopen(fd, "wb") as fh:
            shutil.copyfileobj(sys.stdin.buffer, fh, 1024 * 1024)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


@contextlib.contextmanager
def _atomic_output(path: Path | None) -> Iterator[Any]:
    """A stream that becomes ``path`` only if the block succeeds (else nothing is left)."""
    if path is None:
        yield None
        return
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _check(client: Any, keys: list[Path] | None, policies: list[Path] | None) -> Any:
    """The ArtifactCheck for --verify-key / --policy, or None when neither is given."""
    from modelreg.wasm.checks import all_of, policy_check, signature_check

    checks = []
    if keys:
        from modelreg.verify import policy_from_options

        checks.append(signature_check(policy_from_options(keys=[str(k) for k in keys])))
    if policies:
        from modelreg.policy import load_policies

        checks.append(policy_check(client, load_policies(policies)))
    if not checks:
        return None
    return checks[0] if len(checks) == 1 else all_of(*checks)


def _is_local_module(ref: str) -> bool:
    return ref.endswith(".wasm") and Path(ref).is_file()


# ------------------------------------------------------------------------- pack
@wasm_app.command("pack")
@registry_flags()
def pack(
    module: Annotated[Path, typer.Argument(help="The compiled module (.wasm, wasip1).")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="The model it reads (pinned by digest).")
    ],
    tag: Annotated[
        str, typer.Option("--tag", "-t", help="Where to push the bundle: REGISTRY/REPO:TAG.")
    ],
    subject: Annotated[
        bool,
        typer.Option(
            "--subject",
            help="Also set the bundle's subject to the model (bundle and model in one "
            "repository): the bundle then lists among the model's referrers.",
        ),
    ] = False,
    annotation: Annotated[
        list[str] | None,
        typer.Option("--annotation", "-a", help="Manifest annotation KEY=VALUE."),
    ] = None,
    created: Annotated[
        str | None,
        typer.Option(
            "--created", help="Creation time, RFC 3339 (default: SOURCE_DATE_EPOCH, else now)."
        ),
    ] = None,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
) -> None:
    """Bundle MODULE as a Wasm OCI artifact pinned to --model and push it to --tag.

    The weights do not move: pulling the bundle never pulls them. Keep the model
    tagged in its repository (a pin is not a garbage-collection root).
    """
    with Command(json_output, remote) as cmd:
        from modelreg.wasm import pack as pack_bundle

        with cmd.client() as client:
            result = pack_bundle(
                client,
                module,
                model=model,
                ref=tag,
                created=created,
                annotations=parse_annotations(annotation),
                subject=subject,
            )
        if json_output:
            print_json(result.to_dict())
            return
        out_console.print(f"pushed {result.reference}", markup=False)
        out_console.print(f"  model   {result.model}", markup=False)
        out_console.print(f"  module  {result.module_digest}", markup=False)
        if result.imports:
            out_console.print(f"  imports modelreg.{', modelreg.'.join(result.imports)}")


# -------------------------------------------------------------------------- run
@wasm_app.command("run")
@registry_flags()
def run(
    ref: Annotated[
        str,
        typer.Argument(help="The bundle (REGISTRY/REPO:TAG, or a local .wasm with --model)."),
    ],
    input_: Annotated[
        str | None,
        typer.Option("--input", "-i", help="File given to the module as stdin ('-': ours)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write the module's stdout here (only if it succeeds)."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Read the pinned model from this repository instead (its digest must "
            "match); for a local module: a model reference or a .safetensors file.",
        ),
    ] = None,
    max_memory: Annotated[
        str, typer.Option("--max-memory", help="Cap on the module's memory, e.g. 256MiB.")
    ] = "256MiB",
    timeout: Annotated[
        float,
        typer.Option("--timeout", help="Wall-clock limit in seconds (0: none)."),
    ] = 60.0,
    fuel: Annotated[
        int | None,
        typer.Option("--fuel", min=1, help="Instruction budget (deterministic limit)."),
    ] = None,
    max_output: Annotated[
        str, typer.Option("--max-output", help="Cap on the module's output.")
    ] = "64MiB",
    verify_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--verify-key",
            help="Refuse to run unless the bundle and the model are signed by this key "
            "(repeatable: any one of them).",
        ),
    ] = None,
    policy: Annotated[
        list[Path] | None,
        typer.Option(
            "--policy",
            help="Refuse to run unless these policies allow the bundle and the model.",
        ),
    ] = None,
    arg: Annotated[
        list[str] | None, typer.Option("--arg", help="An argument for the module (argv).")
    ] = None,
    json_output: Annotated[
        bool,
        typer.Option("--json", help="Print a JSON summary on stdout (needs --output)."),
    ] = False,
    remote: Remote = REGISTRY_FLAGS,
) -> None:
    """Run a WebAssembly bundle on its model: weights read lazily and verified.

    The module gets --input as stdin and its stdout goes to --output (or our
    stdout); its stderr is passed on. Exit 10 when it traps, hits a limit,
    misuses the host ABI or exits non-zero; 5 when a weight chunk does not
    match its digest; 7 when --verify-key or --policy refuses.
    """
    with Command(json_output, remote) as cmd:
        from modelreg.wasm import Limits, parse_size

        if json_output and output is None:
            raise InvalidInputError(
                "--json needs --output", hint="stdout carries the module's output"
            )
        limits = Limits(
            max_memory=parse_size(max_memory),
            timeout=timeout if timeout > 0 else None,
            fuel=fuel,
            max_output=parse_size(max_output),
        )
        try:
            with contextlib.ExitStack() as stack:
                stdin = _module_stdin(stack, input_)
                client = stack.enter_context(cmd.client())
                local = _is_local_module(ref)
                _check_local_module(ref, local, model, bool(verify_key or policy))
                check = _check(client, verify_key, policy)
                sink = stack.enter_context(_atomic_output(output))
                if local:
                    assert model is not None
                    source = _model_source(stack, client, model)
                    result, summary = _run_local(ref, model, source, stdin, sink, limits, arg)
                else:
                    result, summary = _run_bundle(
                        client, ref, model, check, stdin, sink, limits, arg
                    )
                _finish_module(result, max_memory)
        except _Failed:
            raise typer.Exit(EXIT_MODULE_FAILED) from None
        if sink is None and result.stdout:
            sys.stdout.buffer.write(result.stdout)
            sys.stdout.flush()
        if json_output:
            print_json(summary)
        else:
            _show_run(ref, result, output)


def _show_run(ref: str, result: Any, output: Path | None) -> None:
    """One line saying the run succeeded: on stdout when the module's output went to
    --output, else on stderr, after the module's own output."""
    where = (
        f"output {human_size(result.output_bytes)} to {output}"
        if output
        else (f"output {human_size(result.output_bytes)}")
    )
    line = (
        f"ran {ref}: exit 0 in {result.elapsed:.2f} s, {where}, "
        f"{plural(len(result.tensors_read), 'tensor')} read, "
        f"memory {human_size(result.memory_bytes)}"
    )
    (out_console if output else err_console).print(line, markup=False)


def _module_stdin(stack: contextlib.ExitStack, input_: str | None) -> str | None:
    """--input: a file for the module's stdin; '-' copies ours to a temporary file."""
    if input_ == "-":
        return stack.enter_context(_stdin_file())
    return input_


def _check_local_module(ref: str, local: bool, model: str | None, verifying: bool) -> None:
    """A local .wasm runs only on a model named with --model, and cannot be verified."""
    if local and model is None:
        raise InvalidInputError(f"{ref} is a local module: say which model it reads with --model")
    if local and verifying:
        raise InvalidInputError(
            "a local module cannot be verified",
            hint="push it with `modelreg wasm pack`, sign it, and run the bundle",
        )


def _model_source(stack: contextlib.ExitStack, client: Any, model: str) -> Any:
    """The weights of a local module: a .safetensors file, or a model reference."""
    from modelreg.wasm import SafetensorsFileSource
    from modelreg.wasm.host import open_model_source

    if Path(model).is_file():
        return stack.enter_context(SafetensorsFileSource(model))
    return stack.enter_context(open_model_source(client, model))


def _run_local(
    ref: str, model: str, source: Any, stdin: Any, sink: Any, limits: Any, args: Any
) -> tuple[Any, dict[str, Any]]:
    from modelreg.wasm import run_local

    result = run_local(ref, source, stdin=stdin, stdout=sink, limits=limits, args=args or ())
    return result, {"module": ref, "model": model, **result.to_dict()}


def _run_bundle(
    client: Any,
    ref: str,
    model: str | None,
    check: Any,
    stdin: Any,
    sink: Any,
    limits: Any,
    args: Any,
) -> tuple[Any, dict[str, Any]]:
    from modelreg.wasm import run as run_bundle

    ran = run_bundle(
        client,
        ref,
        stdin=stdin,
        stdout=sink,
        limits=limits,
        check=check,
        model=model,
        args=args or (),
    )
    return ran.result, ran.to_dict()


def _finish_module(result: Any, max_memory: str) -> None:
    """Pass the module's stderr on; a non-zero exit unwinds --output (raises _Failed)."""
    if result.stderr:
        sys.stderr.buffer.write(result.stderr)
        sys.stderr.flush()
    if result.exit_code == 0:
        return
    note = ""
    if result.memory_at_limit:
        note = f" after its memory reached the {max_memory} limit (raise --max-memory)"
    print_error(f"the module exited with status {result.exit_code}{note}")
    raise _Failed()  # unwinds --output: nothing is left of a failed run


class _Failed(Exception):
    """A module that exited non-zero: unwinds the output file, then exits 10."""


register = registrar(wasm_app)
