"""Start-up (issue 19 item 6): ``--version`` imports nothing heavy; Ctrl-C while the
application loads exits 130 without a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
from modelreg_cli import main

import modelreg


def test_version_is_the_library_version_without_importing_it() -> None:
    code = (
        "import sys; from modelreg_cli.main import run; sys.argv = ['modelreg', '--version']; "
        "run(); heavy = [m for m in ('modelreg', 'typer', 'rich', 'httpx') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [f"modelreg {modelreg.__version__}", "[]"]


def test_ctrl_c_while_starting_exits_130_quietly(monkeypatch, capsys) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    fake = types.ModuleType("modelreg_cli.application")
    fake.app = interrupted  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modelreg_cli.application", fake)
    monkeypatch.setattr(sys, "argv", ["modelreg", "list"])
    with pytest.raises(SystemExit) as exited:
        main.run()
    assert exited.value.code == 130
    assert capsys.readouterr().err == "interrupted\n"


# What a command needs only once it runs: the HTTP client and TLS, crypto, signing,
# arrays, YAML policies, the library's client and lazy reads, progress bars.
HEAVY = (
    "httpx",
    "httpcore",
    "ssl",
    "cryptography",
    "sigstore",
    "numpy",
    "yaml",
    "modelreg.client",
    "modelreg.lazy",
    "modelreg.cache",
    "rich.progress",
)

_IMPORTED = (
    "import contextlib, io, json, sys\n"
    "{setup}\n"
    "heavy = {heavy!r}\n"
    "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n"
)


def _imported_heavy(setup: str) -> list[str]:
    code = _IMPORTED.format(setup=setup, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    found: list[str] = json.loads(out.stdout.splitlines()[-1])
    return found


def test_importing_the_library_imports_nothing_heavy() -> None:
    assert _imported_heavy("import modelreg") == []
    # the public names are still there, imported on first use
    setup = "import modelreg\nassert modelreg.Client.__module__ == 'modelreg.client'"
    assert "modelreg.client" in _imported_heavy(setup)


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["push", "--help"],
        ["pull", "--help"],
        ["verify", "--help"],
        ["cp", "--help"],
        ["cache", "prune", "--help"],
        ["webhook", "serve", "--help"],
        ["ci", "publish", "--help"],
    ],
    ids=" ".join,
)
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    setup = (
        f"sys.argv = ['modelreg', *{args!r}]\n"
        "from modelreg_cli.main import run\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        run()\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), exc.code"
    )
    assert _imported_heavy(setup) == []
