"""The command context (:mod:`modelreg_cli.context`): the one place that maps errors to
messages and exit codes, builds RemoteOptions from the registry flags, and decides on
progress bars; and the one definition of the registry flags every command shares."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from modelreg_cli import context
from modelreg_cli.context import Command, Remote, exit_code_for, report
from modelreg_cli.main import app

# every module that defines a ModelRegError subclass, so that the tree below is whole
import modelreg.ci
import modelreg.content.registry.target
import modelreg.content.registry.uploads
import modelreg.errors
import modelreg.policy
import modelreg.verify
import modelreg.wasm
from modelreg.settings import Settings

MESSAGE = "the thing failed"
HINT = "do the other thing"

# The exit code of every error class: the README's table, written out again so that a
# class that changes its code, or a new class, is a decision someone makes here.
EXPECTED = {
    "ModelRegError": 1,
    "InvalidInputError": 2,
    "InvalidReferenceError": 2,
    "InvalidDigestError": 2,
    "NotFoundError": 3,
    "AuthenticationError": 4,
    "PermissionDeniedError": 4,
    "IntegrityError": 5,
    "CorruptCacheError": 5,
    "MirrorIntegrityError": 5,
    "RegistryError": 6,
    "RateLimitedError": 6,
    "UnsupportedError": 6,
    "_PreconditionFailed": 6,
    "NetworkError": 6,
    "TransferTooSlowError": 6,
    "VerificationError": 7,
    "ArtifactVerificationError": 7,
    "FormatError": 8,
    "UnsafeContentError": 8,
    "SizeLimitError": 8,
    "PolicyError": 9,
    "PolicyLoadError": 9,
    "WasmError": 10,
    "WasmTrapError": 10,
    "WasmLimitError": 10,
    "WasmAbiError": 10,
    "LocalStorageError": 14,
    "MissingExtraError": 15,
    "SourceReadError": 1,
    # its code is the failed stage's (10 push, 11 sign, 12 attest, 13 policy): sign here
    "PublishError": 11,
}

# classes whose constructor wants more than a message and a hint
MAKERS: dict[str, Callable[[type[Any]], modelreg.errors.ModelRegError]] = {
    "TransferTooSlowError": lambda cls: cls(MESSAGE, hint=HINT, bound="throughput-floor"),
    "LocalStorageError": lambda cls: cls(MESSAGE, hint=HINT, path="/models/store"),
    "MissingExtraError": lambda cls: cls(MESSAGE, hint=HINT, extra="rego", module="regopy"),
    "WasmLimitError": lambda cls: cls(MESSAGE, hint=HINT, limit="fuel"),
    "PublishError": lambda cls: cls("sign", MESSAGE, None, hint=HINT),
    "ArtifactVerificationError": lambda cls: cls(MESSAGE, None, hint=HINT),
    "CorruptCacheError": lambda cls: cls(MESSAGE, hint=HINT, digest="sha256:" + "0" * 64),
    "MirrorIntegrityError": lambda cls: cls(
        MESSAGE, hint=HINT, digest="sha256:" + "0" * 64, mirror="mirror.example:5000"
    ),
}


def _tree(root: type[Any]) -> list[type[Any]]:
    found = [root]
    for sub in root.__subclasses__():
        found.extend(c for c in _tree(sub) if c not in found)
    return found


ERROR_CLASSES = _tree(modelreg.errors.ModelRegError)


def _make(cls: type[Any]) -> modelreg.errors.ModelRegError:
    if cls.__name__ == "PolicyLoadError":
        return cls("team.yaml", 3, MESSAGE, hint=HINT)
    maker = MAKERS.get(cls.__name__)
    return maker(cls) if maker else cls(MESSAGE, hint=HINT)


@pytest.fixture(autouse=True)
def quiet() -> Any:
    yield
    context.State.verbose = False


def test_the_error_tree_is_found_whole() -> None:
    names = {cls.__name__ for cls in ERROR_CLASSES}
    assert {"InvalidInputError", "PolicyLoadError", "WasmTrapError", "PublishError"} <= names


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_class_exits_with_its_documented_code(
    cls: type[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cls.__name__ in EXPECTED, f"{cls.__name__}: add its exit code (and to the README)"
    exc = _make(cls)
    assert exit_code_for(exc) == EXPECTED[cls.__name__]
    with pytest.raises(typer.Exit) as exited, Command():
        raise exc
    assert exited.value.exit_code == EXPECTED[cls.__name__]
    err = capsys.readouterr().err
    assert f"error: {exc.message}" in err and f"hint: {HINT}" in err


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_class_as_json_on_stderr(
    cls: type[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    exc = _make(cls)
    with pytest.raises(typer.Exit) as exited, Command(json_output=True):
        raise exc
    out, err = capsys.readouterr()
    assert out == ""
    assert json.loads(err) == {
        "error": {
            "type": cls.__name__,
            "message": exc.message,
            "hint": HINT,
            "exitCode": EXPECTED[cls.__name__],
        }
    }
    assert exited.value.exit_code == EXPECTED[cls.__name__]


def test_an_error_without_a_hint_prints_no_hint_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert report(modelreg.errors.NotFoundError("no such tag")) == 3
    assert capsys.readouterr().err == "error: no such tag\n"


def test_ctrl_c_exits_130(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as exited, Command(json_output=True):
        raise KeyboardInterrupt
    assert exited.value.exit_code == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_anything_else_is_a_bug_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as exited, Command():
        raise RuntimeError("boom")
    assert exited.value.exit_code == 1
    err = capsys.readouterr().err
    assert "error: unexpected RuntimeError: boom" in err
    assert "--verbose" in err and "Traceback" not in err


def test_verbose_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    context.State.verbose = True
    with pytest.raises(typer.Exit), Command():
        raise modelreg.errors.IntegrityError("digest mismatch")
    err = capsys.readouterr().err
    assert "Traceback" in err and "IntegrityError: digest mismatch" in err


def test_a_chosen_exit_code_and_system_exit_pass_through(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit) as exited, Command():
        raise typer.Exit(13)
    assert exited.value.exit_code == 13
    with pytest.raises(SystemExit), Command():
        raise SystemExit(4)
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------ remote options
def test_remote_options_are_built_once_and_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Remote] = []
    real = context.remote_options

    def counting(remote: Remote, settings: Settings | None = None) -> Any:
        built.append(remote)
        return real(remote, settings)

    monkeypatch.setattr(context, "remote_options", counting)
    cmd = Command(remote=Remote(plain_http=True, concurrency=8))
    assert built == []  # nothing until a command needs it
    with cmd, cmd.client() as first, cmd.client() as second:
        assert first.options is cmd.options is second.options
        assert first.settings is cmd.settings is second.settings
    assert built == [Remote(plain_http=True, concurrency=8)]


def test_remote_options_from_the_flags_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("MODELREG_TIMEOUT", "7.5")
    monkeypatch.setenv("MODELREG_FSYNC", "0")
    options = Command(remote=Remote(True, True, ca, 9)).options
    assert (options.plain_http, options.insecure, options.ca_file) == (True, True, str(ca))
    assert (options.concurrency, options.timeout, options.fsync) == (9, 7.5, False)
    assert options.on_warning is context.warn
    defaults = Command().options
    assert (defaults.plain_http, defaults.insecure, defaults.ca_file) == (False, False, None)
    assert defaults.concurrency == 4


@pytest.mark.parametrize(
    ("remote", "env", "message"),
    [
        (Remote(ca_file=Path("/no/such/ca.pem")), {}, "--ca-file '/no/such/ca.pem' is not a file"),
        (Remote(), {"MODELREG_TIMEOUT": "soon"}, "MODELREG_TIMEOUT='soon' is not a positive"),
        (Remote(), {"MODELREG_TIMEOUT": "-1"}, "MODELREG_TIMEOUT='-1' is not a positive"),
    ],
)
def test_bad_remote_settings_exit_2_inside_the_command(
    remote: Remote,
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(typer.Exit) as exited, Command(remote=remote) as cmd:
        cmd.client()
    assert exited.value.exit_code == 2
    assert message in capsys.readouterr().err


def test_progress_bars_never_with_json() -> None:
    assert Command(json_output=True).progress().enabled is False


# ------------------------------------------------------- one definition of the flags
def _commands(command: Any, path: str = "modelreg") -> list[tuple[str, Any]]:
    found = [(path, command)]
    if isinstance(command, typer.core.TyperGroup):
        for name, sub in command.commands.items():
            found.extend(_commands(sub, f"{path} {name}"))
    return found


REMOTE_FLAGS = ("--plain-http", "--insecure", "--ca-file")


def test_every_command_spells_the_registry_flags_the_same() -> None:
    helps: dict[str, set[str]] = {flag: set() for flag in REMOTE_FLAGS}
    with_flags = []
    for path, command in _commands(typer.main.get_command(app)):
        flags = {opt: p for p in command.params for opt in p.opts if opt in REMOTE_FLAGS}
        if not flags:
            continue
        with_flags.append(path)
        assert set(flags) == set(REMOTE_FLAGS), f"{path} lacks some registry flags"
        for opt, param in flags.items():
            assert isinstance(param, typer.core.TyperOption)
            helps[opt].add(param.help or "")
    assert all(len(texts) == 1 for texts in helps.values()), helps
    assert {
        "modelreg push",
        "modelreg sign",
        "modelreg webhook serve",
        "modelreg ci verify",
    } <= set(with_flags)
