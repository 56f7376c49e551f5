"""Issue 19 item 5: small wrong answers, each held by a test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from modelreg_cli.main import app
from typer.testing import CliRunner

from modelreg.client import Client

runner = CliRunner()
FALLBACK = "sha256-" + "ab" * 32


def run(*args: str, **kwargs) -> object:
    return runner.invoke(app, list(args), **kwargs)


@pytest.fixture
def pushed(tmp_path: Path, home: Path) -> str:
    root = tmp_path / "m"
    root.mkdir()
    (root / "config.json").write_text("{}")
    assert run("push", "-q", str(root), "llm:v1").exit_code == 0
    return "llm:v1"


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELREG_KEY_PASSWORD", "pw")
    result = run("keygen")
    assert result.exit_code == 0, result.output
    return tmp_path


def test_keygen_names_its_files_modelreg_and_says_how_cosign_imports_them(keys: Path) -> None:
    assert (keys / "modelreg.key").is_file() and (keys / "modelreg.pub").is_file()
    assert not (keys / "cosign.key").exists()
    assert "cosign import-key-pair --key modelreg.key" in run("keygen", "--force").output


def test_a_private_key_to_verify_key_is_bad_input_naming_it(keys: Path, pushed: str) -> None:
    result = run("pull", pushed, "-o", "out", "--verify-key", "modelreg.key")
    assert result.exit_code == 2, result.output
    assert "'modelreg.key' is a private key" in result.output
    assert "modelreg.pub" in result.output
    assert run("verify", pushed, "--key", "modelreg.key").exit_code == 2


def test_tags_of_a_repository_the_store_lacks_is_not_found(home: Path) -> None:
    result = run("tags", "no/such-repo")
    assert result.exit_code == 3, result.output
    assert "not in the local store" in result.output


def test_tags_hides_referrer_fallback_tags_unless_all(pushed: str) -> None:
    with Client() as client:
        client.copy(pushed, f"llm:{FALLBACK}")
    assert run("tags", "llm").output.split() == ["v1"]
    assert json.loads(run("tags", "llm", "--json").stdout)["tags"] == ["v1"]
    assert sorted(run("tags", "llm", "--all").output.split()) == sorted([FALLBACK, "v1"])


def test_login_without_a_terminal_or_password_stdin_says_how(home: Path) -> None:
    result = run("login", "localhost:5000", "-u", "me", input="")
    assert result.exit_code == 2
    assert "--password-stdin" in result.output and "no terminal" in result.output


def test_pull_says_1_file_not_1_files(pushed: str, tmp_path: Path) -> None:
    result = run("pull", "-q", pushed, "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "  1 file, " in result.output
