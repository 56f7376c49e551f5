"""``modelreg``'s entry point: start-up kept to what the command asks for.

``modelreg --version`` answers before anything else is imported (typer, rich and the
library cost ~0.6 s of CPU; the interpreter ~0.03 s); every other command loads the
application, :mod:`modelreg_cli.application` (its docstring has the exit codes and
the design). A Ctrl-C while that loads exits 130 without a traceback, as it does
inside a command.

``app`` and ``main_args`` are the application's, looked up on first use, so that tests
and scripts can keep importing them from here.
"""

from __future__ import annotations

import re
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

EXIT_INTERRUPTED = 130


def library_version() -> str:
    """modelreg's version, read from modelreg/_version.py without importing modelreg
    (whose package imports the client and everything it needs)."""
    spec = find_spec("modelreg")
    if spec is not None and spec.submodule_search_locations:
        source = Path(next(iter(spec.submodule_search_locations)), "_version.py")
        found = re.search(r'__version__ = "([^"]+)"', source.read_text(encoding="utf-8"))
        if found:
            return found.group(1)
    from modelreg import __version__  # an unusual install: ask the package

    return __version__


def run() -> None:
    """Console-script entry point."""
    if sys.argv[1:] == ["--version"]:
        sys.stdout.write(f"modelreg {library_version()}\n")
        return
    try:
        from modelreg_cli.application import app

        app()
    except KeyboardInterrupt:  # while starting up; inside a command, Command maps it
        sys.stderr.write("interrupted\n")
        sys.exit(EXIT_INTERRUPTED)


def __getattr__(name: str) -> Any:
    """``app`` and ``main_args``, from the application, imported when first asked for."""
    if name in ("app", "main_args"):
        from modelreg_cli import application

        return application.app if name == "app" else application.main_args
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    run()
