"""Start-up (issue 19 item 6): ``--version`` imports nothing heavy; Ctrl-C while the
application loads exits 130 without a traceback."""

from __future__ import annotations

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
