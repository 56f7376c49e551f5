"""The command context: what every ``modelreg`` command shares, written once.

A command parses its flags, then runs its body inside ``with Command(...) as cmd:``.
That one object owns the three things every command used to repeat:

- **errors → exit codes.** A :class:`~modelreg.errors.ModelRegError` leaving the body
  is printed on stderr as ``error: MESSAGE`` and ``hint: HINT`` (with ``--json``: one
  JSON document) and the command exits with the error's ``exit_code``, which each class
  of the tree in :mod:`modelreg.errors` declares (the README lists them). Ctrl-C exits
  130; anything else is a bug: exit 1, the traceback only with ``--verbose``.
  :func:`report` is that mapping, usable on its own (``ci publish`` renders its
  failures itself but prints them with :func:`print_error`).
- **the registry flags → RemoteOptions.** :class:`Remote` holds ``--plain-http``,
  ``--insecure``, ``--ca-file`` and ``--concurrency`` as given; ``cmd.options`` turns
  them and the environment (``cmd.settings``: :meth:`~modelreg.settings.Settings.from_env`,
  parsed once: ``MODELREG_TIMEOUT``, ``MODELREG_FSYNC``, ...) into one
  :class:`~modelreg.client.RemoteOptions`, built once, when first needed, inside the
  error mapping (a bad ``--ca-file`` is an error like any other, exit 2).
- **progress.** ``cmd.progress()`` draws bars on a terminal (none with ``--json``)
  and writes log lines to a stderr that is not one (a CI log); ``--quiet`` (the
  command's or ``modelreg --quiet``) turns both off. stdout is for the result alone.

Library code never prints; this module and :mod:`modelreg_cli.render` do.
"""

# No ``from __future__ import annotations``: typer reads the commands' annotations at
# runtime, and this module is imported by every command module.
import dataclasses
import functools
import inspect
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from modelreg_cli.options import CaFileOpt, ConcurrencyOpt, HostsDirOpt, InsecureOpt, PlainHttpOpt
from modelreg_cli.render import ProgressRenderer, err_console

from modelreg.errors import InvalidInputError, ModelRegError
from modelreg.settings import Settings

if TYPE_CHECKING:  # the client (httpx, TLS, crypto) is imported when a command needs it
    from modelreg.client import Client, RemoteOptions
    from modelreg.content.registry.hosts import HostOverride

EXIT_UNEXPECTED = 1
EXIT_INTERRUPTED = 130


class State:
    """Set by the top-level callback: ``modelreg --verbose`` shows tracebacks,
    ``modelreg --quiet`` turns progress off for every command."""

    verbose = False
    quiet = False


def warn(message: str) -> None:
    """A warning on stderr (the library hands them over through ``on_warning``)."""
    err_console.print(f"[yellow]warning:[/yellow] {message}")


def print_error(message: str, hint: str | None = None) -> None:
    """``error: MESSAGE`` and, if there is one, ``  hint: HINT`` on stderr."""
    err_console.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    if hint:
        err_console.print(f"  hint: {hint}", markup=False)


def exit_code_for(exc: BaseException) -> int:
    """The exit code of a command that failed with ``exc``."""
    if isinstance(exc, ModelRegError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_UNEXPECTED


def report(exc: BaseException, *, json_output: bool = False) -> int:
    """Tell the user about ``exc`` on stderr; return the exit code to leave with."""
    code = exit_code_for(exc)
    if isinstance(exc, KeyboardInterrupt):
        err_console.print("interrupted")
        return code
    if State.verbose:
        traceback.print_exception(exc)
    if not isinstance(exc, ModelRegError):
        err_console.print(f"[red]error:[/red] unexpected {type(exc).__name__}: {exc}", markup=True)
        err_console.print("  hint: run again with --verbose for the traceback and report it")
    elif json_output:
        doc = {
            "error": {
                "type": type(exc).__name__,
                "message": exc.message,
                "hint": exc.hint,
                "exitCode": code,
            }
        }
        sys.stderr.write(json.dumps(doc) + "\n")
    else:
        print_error(exc.message, exc.hint)
    return code


@dataclasses.dataclass(frozen=True)
class Remote:
    """The registry flags of a command, as given on the command line."""

    plain_http: bool = False
    insecure: bool = False
    ca_file: Path | None = None
    concurrency: int = 4
    hosts_dir: str | None = None
    """``--hosts-dir``: ``:``-separated certs.d directories (None: the search path)."""
    host_overrides: "tuple[tuple[str, HostOverride], ...]" = ()
    """Per-host flags (``cp --from-*``/``--to-*``), by registry host."""


def remote_options(remote: Remote, settings: Settings | None = None) -> "RemoteOptions":
    """RemoteOptions from the registry flags and the environment's :class:`Settings`
    (``$MODELREG_TIMEOUT``, ``$MODELREG_FSYNC``, ...; see :mod:`modelreg.settings`)."""
    from modelreg.client import RemoteOptions

    env = settings or Settings.from_env()
    if remote.ca_file is not None and not remote.ca_file.is_file():
        raise InvalidInputError(f"--ca-file {str(remote.ca_file)!r} is not a file")
    return RemoteOptions(
        hosts_dirs=tuple(remote.hosts_dir.split(os.pathsep)) if remote.hosts_dir else None,
        host_overrides=dict(remote.host_overrides),
        plain_http=remote.plain_http,
        insecure=remote.insecure,
        ca_file=str(remote.ca_file) if remote.ca_file else None,
        concurrency=remote.concurrency,
        on_warning=warn,
        fsync=env.fsync,
        timeout=env.timeout,
        document_deadline=env.document_deadline,
        min_throughput=env.min_throughput,
        throughput_window=env.throughput_window,
    )


class Command:
    """One run of one command: ``with Command(json_output, Remote(...)) as cmd: ...``.

    Errors leaving the block become a message and an exit code (:func:`report`);
    ``typer.Exit`` passes through, so a command may still choose its own exit code.
    """

    def __init__(
        self, json_output: bool = False, remote: Remote | None = None, *, quiet: bool = False
    ) -> None:
        self.json_output = json_output
        self.remote = remote or Remote()
        self.quiet = quiet

    def __enter__(self) -> "Command":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # SystemExit and the like are not failures of the command: let them through
        if exc is None or isinstance(exc, typer.Exit):
            return
        if isinstance(exc, Exception | KeyboardInterrupt):
            raise typer.Exit(report(exc, json_output=self.json_output)) from None

    @functools.cached_property
    def settings(self) -> Settings:
        """The environment, parsed once (a bad variable fails here, exit 2)."""
        return Settings.from_env()

    @functools.cached_property
    def options(self) -> "RemoteOptions":
        """The command's RemoteOptions (built on first use, then the same object)."""
        return remote_options(self.remote, self.settings)

    def client(self) -> "Client":
        """A Client on :attr:`options`; use it as a context manager."""
        # looked up when called, as the commands did before: tests put a fake Client
        # in modelreg.client
        from modelreg import client as client_module

        return client_module.Client(self.options, settings=self.settings)

    def progress(self) -> ProgressRenderer:
        """Progress bars on a terminal (none with ``--json``), log lines on stderr that
        is not a terminal; nothing with ``--quiet``."""
        return ProgressRenderer(not (self.quiet or State.quiet), bars=not self.json_output)


REGISTRY_FLAGS = Remote()
"""The default of a command's ``remote`` parameter, which :func:`registry_flags` turns
into the registry flags: ``remote: Remote = REGISTRY_FLAGS``."""

# The registry flags, in the order a command's help lists them: (parameter, option, default).
_REGISTRY_FLAGS: tuple[tuple[str, Any, Any], ...] = (
    ("plain_http", PlainHttpOpt, False),
    ("insecure", InsecureOpt, False),
    ("ca_file", CaFileOpt, None),
    ("hosts_dir", HostsDirOpt, None),
)
_CONCURRENCY_FLAG: tuple[str, Any, Any] = ("concurrency", ConcurrencyOpt, 4)


_Command = TypeVar("_Command", bound=Callable[..., Any])


def flag_group(
    name: str, flags: tuple[tuple[str, Any, Any], ...], group: Callable[..., Any]
) -> Callable[[_Command], _Command]:
    """Give a command the ``flags`` (parameter, option, default) through its one
    parameter ``name``, which receives them as ``group(**flags)``; the help lists them
    where that parameter stands. :func:`registry_flags` is one such group."""

    def decorate(func: _Command) -> _Command:
        signature = inspect.signature(func)
        if name not in signature.parameters:
            raise TypeError(f"{func.__name__} has no parameter `{name}` for its flags")
        params: list[inspect.Parameter] = []
        for param in signature.parameters.values():
            if param.name != name:
                params.append(param)
                continue
            params.extend(
                inspect.Parameter(flag, param.kind, default=default, annotation=option)
                for flag, option, default in flags
            )

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            given = {flag: kwargs.pop(flag) for flag, _, _ in flags}
            return func(**{name: group(**given)}, **kwargs)

        # typer reads the parameters from these two, not from the wrapped function
        command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {
            p.name: p.annotation for p in params if p.annotation is not inspect.Parameter.empty
        } | {"return": signature.return_annotation}
        return command  # type: ignore[return-value]

    return decorate


def registry_flags(*, concurrency: bool = False) -> Callable[[_Command], _Command]:
    """Give a command every registry flag through one parameter, ``remote``.

    Where the command declares ``remote``, its help lists ``--plain-http``,
    ``--insecure``, ``--ca-file``, ``--hosts-dir`` (and with ``concurrency=True``
    ``--concurrency``), declared once, in :mod:`modelreg_cli.options`; the command
    receives them as one :class:`Remote`. A flag every registry command needs is added
    here, once, and every such command has it.
    """
    flags = (*_REGISTRY_FLAGS, *((_CONCURRENCY_FLAG,) if concurrency else ()))
    return flag_group("remote", flags, Remote)
