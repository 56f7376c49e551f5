"""How the command modules join the ``modelreg`` application, and how their help reads.

Each ``*_cmds`` module declares its commands at module level, on a typer app of its
own (a :func:`command_group` for ``modelreg NAME ...``), and ends with
``register = registrar(...)``: the ``register(app)`` that adds them to the
application. Registering twice changes nothing: tests build the application from
modules that main.py may already have registered.

Every command joins as a :class:`HelpCommand`: help in click's plain layout (the
application sets ``rich_markup_mode=None``), so a flag is always printed whole and
its help wraps under it, at any width; values are named with words (``REF``, ``DIR``,
``N``), never Python types; the usage line reads ``modelreg push [OPTIONS] DIR REF``.
Options given a ``rich_help_panel`` are listed in a section of that name after the
others (``push``'s metadata flags).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import typer
from typer.core import TyperArgument, TyperCommand, TyperOption

# A value's word by its Python type, where the declaration gives no metavar.
_TYPE_WORDS: dict[Any, str] = {str: "TEXT", int: "N", float: "SECONDS"}


def _word_for(param: Any) -> str:
    """The metavar of a parameter declared without one: ``REF`` for an argument named
    ``ref``; for an option, PATH, TEXT, N or SECONDS by its type."""
    if isinstance(param, TyperArgument):
        return str(param.name).upper()
    annotation = param.type_descriptor.annotation
    inner = get_args(annotation)
    base = inner[0] if param.type_descriptor.is_list and inner else annotation
    if param.type_descriptor.is_path or base is Path:
        return "PATH"
    return _TYPE_WORDS.get(base, "VALUE")


class HelpCommand(TyperCommand):
    """A typer command whose help and usage fit 80 columns with every flag whole."""

    def __init__(self, name: str | None, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        for param in self.params:
            flag = isinstance(param, TyperOption) and param.is_flag
            if param.metavar is None and not flag:
                param.metavar = _word_for(param)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """``[OPTIONS] REF [DIR]...``: required arguments bare, optional in brackets."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if not isinstance(param, TyperArgument):
                continue
            word = str(param.metavar)
            word = word if param.required else f"[{word}]"
            pieces.append(word + ("..." if param.nargs != 1 else ""))
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        """Arguments, then options, then each help panel's options under its name."""
        sections: dict[str, list[tuple[str, str]]] = {"Arguments": [], "Options": []}
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                # the usage line says which are required; the word says what it is
                sections["Arguments"].append((str(param.metavar), param.help or ""))
                continue
            record = param.get_help_record(ctx)
            if record is not None and isinstance(param, TyperOption):
                sections.setdefault(param.rich_help_panel or "Options", []).append(record)
        for title, rows in sections.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _with_help_class(commands: typer.Typer) -> None:
    for info in commands.registered_commands:
        if info.cls is None or info.cls is TyperCommand:
            info.cls = HelpCommand


def add_commands(app: typer.Typer, commands: typer.Typer) -> None:
    """Add the commands of ``commands`` to the top level of ``app``, in their order.

    Copying the command records (rather than ``add_typer`` without a name) keeps them
    among ``app``'s own commands, where ``modelreg --help`` lists them.
    """
    _with_help_class(commands)
    present = {info.name for info in app.registered_commands}
    for info in commands.registered_commands:
        if info.name is None:
            raise ValueError(f"{info.callback} is registered without a command name")
        if info.name not in present:
            app.registered_commands.append(info)


def add_group(app: typer.Typer, group: typer.Typer, name: str) -> None:
    """Add ``group`` to ``app`` as the command group ``name``."""
    _with_help_class(group)
    if not any(info.name == name for info in app.registered_groups):
        app.add_typer(group, name=name)


def command_group(name: str, help: str) -> typer.Typer:
    """The command group ``modelreg NAME``: its help when called without a command."""
    return typer.Typer(name=name, help=help, no_args_is_help=True)


def registrar(*parts: typer.Typer) -> Callable[[typer.Typer], None]:
    """A command module's ``register(app)``: a part made by :func:`command_group`
    joins ``app`` as that group, any other joins its top level, in their order."""

    def register(app: typer.Typer) -> None:
        for part in parts:
            name = part.info.name
            if isinstance(name, str):
                add_group(app, part, name)
            else:  # typer's placeholder: a part without a name
                add_commands(app, part)

    return register
