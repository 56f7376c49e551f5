"""Help that a person can read in an 80-column terminal (issue 19 item 1): every flag
printed whole, no line wider than the terminal, values named with words, and a usage
line that reads ``modelreg push [OPTIONS] DIR REF``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from modelreg_cli.main import app
from typer.core import TyperGroup, TyperOption
from typer.testing import CliRunner


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


ALL = list(_commands(typer.main.get_command(app)))


def _help(path: tuple[str, ...], columns: int = 80) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(("path", "command"), ALL, ids=[" ".join(p) or "modelreg" for p, _ in ALL])
def test_help_fits_80_columns_with_every_flag_whole(path: tuple[str, ...], command: Any) -> None:
    text = _help(path)
    wide = [line for line in text.splitlines() if len(line) > 80]
    assert not wide, wide
    assert "…" not in text
    for param in command.params:
        if isinstance(param, TyperOption) and param.hidden:
            continue
        for flag in [*param.opts, *param.secondary_opts]:
            if flag.startswith("-"):
                # whole: not followed by more of a name
                assert re.search(re.escape(flag) + r"(?![\w-])", text), (flag, text)


@pytest.mark.parametrize(("path", "command"), ALL, ids=[" ".join(p) or "modelreg" for p, _ in ALL])
def test_values_are_named_with_words(path: tuple[str, ...], command: Any) -> None:
    text = _help(path)
    # no Python types (<list[Path]>, <bool>) and no {path} usage
    assert not re.search(r"<[a-z][\w\[\], ]*>|\{\w+\}", text), text
    usage = text.splitlines()[0]
    assert usage == usage.rstrip()
    for param in command.params:
        if param.param_type_name == "argument":
            assert param.metavar and param.metavar == param.metavar.upper(), param.name


def test_usage_names_the_arguments() -> None:
    assert _help(("push",)).splitlines()[0] == "Usage: modelreg push [OPTIONS] DIR REF"
    assert _help(("pull",)).splitlines()[0] == "Usage: modelreg pull [OPTIONS] REF"
    assert _help(("verify",)).splitlines()[0] == "Usage: modelreg verify [OPTIONS] REF|DIR"


def test_verify_help_shows_the_long_identity_flag_whole_at_80_columns() -> None:
    text = _help(("verify",))
    assert "--certificate-identity-regexp" in text
    assert "--certificate-oidc-issuer URL" in text
    assert "--key KEY" in text


def test_push_lists_metadata_flags_apart_and_stays_short() -> None:
    text = _help(("push",))
    assert len(text.splitlines()) <= 45
    options, _, metadata = text.partition("Model metadata")
    assert "--license" in metadata and "--license" not in options
    assert "--part-size SIZE" in options


def test_help_is_readable_at_60_columns_too() -> None:
    text = _help(("verify",), columns=60)
    assert "--certificate-identity-regexp" in text
