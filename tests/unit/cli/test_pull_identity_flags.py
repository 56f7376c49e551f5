"""``pull --verify-key ...`` names keyless signers with verify's flags
(``--certificate-identity[-regexp]``, ``--certificate-oidc-issuer``); the names it had
before (``--verify-identity[-regexp]``, ``--verify-oidc-issuer``) still work, hidden."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from modelreg_cli.main import app
from typer.testing import CliRunner

import modelreg.verify
from modelreg.errors import InvalidInputError
from tests.unit.signing_fixtures import (  # noqa: F401
    ALICE,
    ISSUER,
    fake,
    sign_keyless_with_cli,
    write_model,
)

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env=env)


def _pull_to(tmp_path: Path, *flags: str) -> Any:
    """``modelreg pull team/llm:v1 -o TMP/out FLAGS...``."""
    return run("pull", "team/llm:v1", "-o", str(tmp_path / "out"), *flags)


@pytest.fixture
def policy_args(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What pull asks of policy_from_options; the pull then stops (exit 2)."""
    calls: list[dict[str, Any]] = []

    def capture(**kwargs: Any) -> Any:
        calls.append(kwargs)
        raise InvalidInputError("stopped by the test")

    monkeypatch.setattr(modelreg.verify, "policy_from_options", capture)
    return calls


@pytest.mark.parametrize(
    "flags",
    [
        ["--certificate-identity", ALICE, "--certificate-oidc-issuer", ISSUER],
        ["--verify-identity", ALICE, "--verify-oidc-issuer", ISSUER],
        ["--certificate-identity", ALICE, "--verify-oidc-issuer", ISSUER],
    ],
    ids=["shown", "hidden", "mixed"],
)
def test_both_spellings_make_the_same_policy(
    flags: list[str], policy_args: list[dict[str, Any]], tmp_path: Path
) -> None:
    done = _pull_to(tmp_path, *flags)
    assert done.exit_code == 2 and "stopped by the test" in done.stderr
    [kwargs] = policy_args
    assert kwargs["identities"] == [ALICE] and kwargs["issuer"] == ISSUER
    assert kwargs["identity_regexps"] == []


@pytest.mark.parametrize(
    "flag", ["--certificate-identity-regexp", "--identity-regexp", "--verify-identity-regexp"]
)
def test_every_spelling_of_the_regexp(
    flag: str, policy_args: list[dict[str, Any]], tmp_path: Path
) -> None:
    done = _pull_to(tmp_path, flag, "^alice@")
    assert done.exit_code == 2
    assert policy_args[0]["identity_regexps"] == ["^alice@"]


def test_identities_from_both_spellings_add_up(
    policy_args: list[dict[str, Any]], tmp_path: Path
) -> None:
    _pull_to(tmp_path, "--certificate-identity", ALICE, "--verify-identity", "bob@example.com")
    assert policy_args[0]["identities"] == [ALICE, "bob@example.com"]


def test_two_different_issuers_are_refused(
    policy_args: list[dict[str, Any]], tmp_path: Path
) -> None:
    done = _pull_to(
        tmp_path,
        "--certificate-identity",
        ALICE,
        "--certificate-oidc-issuer",
        ISSUER,
        "--verify-oidc-issuer",
        "https://other.example",
    )
    assert done.exit_code == 2 and "disagree" in done.stderr
    assert policy_args == []


@pytest.mark.parametrize("flag", ["--certificate-identity", "--verify-identity"])
def test_identity_flags_do_not_go_with_into(flag: str, tmp_path: Path) -> None:
    done = run("pull", "team/llm:v1", "--into", str(tmp_path / "out"), flag, ALICE)
    assert done.exit_code == 2 and "go with -o/--output" in done.stderr


def test_help_shows_only_verifys_names() -> None:
    # wide enough that rich does not cut the option names
    text = runner.invoke(app, ["pull", "--help"], env={"COLUMNS": "200"}, terminal_width=200).stdout
    for shown in ("--certificate-identity", "--certificate-oidc-issuer", "--identity-regexp"):
        assert shown in text
    assert "--verify-identity" not in text and "--verify-oidc-issuer" not in text
    assert "--verify-key" in text


def test_keyless_pull_with_either_spelling(fake: Any, tmp_path: Path) -> None:  # noqa: F811
    model = write_model(tmp_path / "tiny-llm")
    assert run("push", str(model), "team/tiny-llm:v1").exit_code == 0
    signed, _, trusted_root = sign_keyless_with_cli(run, fake, tmp_path, "team/tiny-llm:v1")
    assert signed.exit_code == 0, signed.output
    root = ["--trusted-root", str(trusted_root), "--json"]
    for name, identity, issuer in [
        ("shown", "--certificate-identity", "--certificate-oidc-issuer"),
        ("hidden", "--verify-identity", "--verify-oidc-issuer"),
    ]:
        out = tmp_path / name
        args = ["pull", "team/tiny-llm:v1", "-o", str(out), identity, ALICE, issuer, ISSUER]
        done = run(*args, *root)
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout)["files"] and (out / "config.json").is_file()
        refused = run(
            *args[:3],
            str(tmp_path / f"{name}-no"),
            identity,
            "eve@example.com",
            issuer,
            ISSUER,
            *root,
        )
        assert refused.exit_code == 7, refused.output
        assert not (tmp_path / f"{name}-no").exists()


@pytest.mark.parametrize(
    "flags",
    [
        ["--certificate-oidc-issuer", ISSUER],
        ["--verify-oidc-issuer", ISSUER],
        ["--require-attestation", "https://slsa.dev/provenance/v1"],
        ["--trusted-root", "trusted_root.json"],
    ],
    ids=["issuer", "hidden-issuer", "attestation", "trusted-root"],
)
def test_verification_flags_without_a_signer_are_refused(
    flags: list[str], policy_args: list[dict[str, Any]], tmp_path: Path
) -> None:
    # without a key or identity these would verify nothing, and the pull would go ahead
    out = tmp_path / "out"
    done = run("pull", "team/llm:v1", "-o", str(out), *flags)
    assert done.exit_code == 2, done.output
    assert "verifies nothing" in done.stderr and "--verify-key" in done.stderr
    assert policy_args == [] and not out.exists()
