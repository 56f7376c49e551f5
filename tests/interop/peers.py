"""Running the peers (third-party tools) and modelreg's CLI the way a user does.

Every peer is a real program or library installed by the project's own files
(``pyproject.toml`` dev extra, ``.ci/install-deps``). A missing peer fails the
test loudly (:func:`tool`): an interop test that skips proves nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from modelreg_cli.main import app
from modelreg_cli.sign_cmds import register
from typer.testing import CliRunner, Result

from modelreg.sign import generate_private_key
from tests.unit.signing_fixtures import write_key_files

if TYPE_CHECKING:
    import oras.client

register(app)
_runner = CliRunner()
NO_PASSWORD = {"MODELREG_KEY_PASSWORD": ""}


def tool(name: str) -> str:
    """The path of a peer program; fails (never skips) when it is not installed."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run .ci/install-deps", pytrace=False)
    return found


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return _runner.invoke(app, list(args), env=env)


def ok(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = run(*args, "--json", env=env)
    assert done.exit_code == 0, done.output
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def peer(*argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run a peer program; the caller asserts on the return code."""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)


def model_signing(*args: str) -> subprocess.CompletedProcess[str]:
    return peer(sys.executable, "-m", "model_signing", *args)


def key_pair(tmp_path: Path) -> tuple[Path, Path]:
    """(unencrypted PKCS#8 private key, public key) files both modelreg and model_signing read."""
    return write_key_files(generate_private_key(), tmp_path)


def oras_client(host: str) -> oras.client.OrasClient:
    """An oras-py client for the plain-HTTP loopback registry ``host``."""
    import oras.client  # here, not at the top: only the oras-py tests need the package

    return oras.client.OrasClient(hostname=host, insecure=True)


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every regular file under ``root``."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }
