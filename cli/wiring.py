"""How the command modules join the ``modelreg`` application.

Each ``*_cmds`` module declares its commands at module level, on a typer app of its
own, and has a ``register(app)`` that adds them to the application with the two
functions below. Registering twice changes nothing: tests build the application from
modules that main.py may already have registered.
"""

import typer


def add_commands(app: typer.Typer, commands: typer.Typer) -> None:
    """Add the commands of ``commands`` to the top level of ``app``, in their order.

    Copying the command records (rather than ``add_typer`` without a name) keeps them
    among ``app``'s own commands, where ``modelreg --help`` lists them.
    """
    present = {info.name for info in app.registered_commands}
    for info in commands.registered_commands:
        if info.name is None:
            raise ValueError(f"{info.callback} is registered without a command name")
        if info.name not in present:
            app.registered_commands.append(info)


def add_group(app: typer.Typer, group: typer.Typer, name: str) -> None:
    """Add ``group`` to ``app`` as the command group ``name``."""
    if not any(info.name == name for info in app.registered_groups):
        app.add_typer(group, name=name)
