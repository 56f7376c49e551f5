"""``modelreg policy check`` against the real registry: explanations, --json, exit codes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from modelreg_cli.policy_cmds import register
from typer.testing import CliRunner

import modelreg.sign as sign_api
from modelreg.client import Client, RemoteOptions
from tests.integration.helpers import module_home


def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        pass

    register(app)
    return app


APP = cli()
runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(APP, list(args))


@pytest.fixture(scope="module")
def setup(
    registry_plain: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    with module_home(tmp_path_factory, "policy-cli") as tmp:
        host = registry_plain.host
        repo = f"pc{os.getpid()}"
        key = sign_api.generate_private_key()
        (tmp / "release.pub").write_bytes(sign_api.public_key_pem(key.public_key()))
        client = Client(RemoteOptions(store=str(tmp / "store"), fsync=False))
        refs = {}
        for name, files, signed in (
            ("good", {"model.safetensors": os.urandom(1000)}, True),
            ("unsigned", {"model.safetensors": os.urandom(1000)}, False),
            ("pickled", {"model.pt": os.urandom(1000)}, True),
        ):
            src = tmp / "src" / name
            src.mkdir(parents=True)
            for f, data in files.items():
                (src / f).write_bytes(data)
            ref = f"{host}/{repo}/{name}:v1"
            client.push(src, ref)
            if signed:
                _, target, desc = client.resolve(ref)
                sign_api.sign(target, desc, sign_api.KeySigner(key))
            refs[name] = ref
        client.close()
        policy = tmp / "policy.yaml"
        policy.write_text(
            f"""\
# test policy
apiVersion: modelreg.dev/v1alpha1
kind: ModelPolicy
metadata: {{name: release}}
spec:
  match: {{references: ["{host}/{repo}/**"]}}
  require:
    signatures:
      authorities:
        - name: release
          key: {{path: release.pub}}
    artifact:
      noPickle: true
"""
        )
        yield {"refs": refs, "policy": policy, "host": host, "repo": repo, "tmp": tmp}


def test_pass_explains_every_rule(setup: dict[str, Any]) -> None:
    r = run("policy", "check", setup["refs"]["good"], "--policy", str(setup["policy"]))
    assert r.exit_code == 0, r.output
    assert "✓ signatures" in r.output and "signed by release" in r.output
    assert "✓ artifact.noPickle" in r.output
    assert "result: allowed" in r.output


@pytest.mark.parametrize(
    ("name", "rule", "why"),
    [
        ("unsigned", "signatures", "0 of the 1 required"),
        ("pickled", "artifact.noPickle", "model.pt"),
    ],
)
def test_fail_exit_1_with_reasons(setup: dict[str, Any], name: str, rule: str, why: str) -> None:
    r = run("policy", "check", setup["refs"][name], "-p", str(setup["policy"]), "--json")
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    assert doc["allowed"] is False and doc["status"] == "fail" and doc["exitCode"] == 1
    rules = {x["rule"]: x for x in doc["policies"][0]["rules"]}
    assert rules[rule]["status"] == "failed" and why in rules[rule]["reason"]
    assert rules[rule]["line"] is not None
    assert doc["digest"].startswith("sha256:")


def test_could_not_evaluate_is_exit_9(setup: dict[str, Any]) -> None:
    missing = f"{setup['host']}/{setup['repo']}/nothing:v1"
    r = run("policy", "check", missing, "-p", str(setup["policy"]), "--json")
    assert r.exit_code == 9, r.output
    doc = json.loads(r.stdout)
    assert doc["status"] == "error"
    assert doc["errors"] and "resolve could not run" in doc["errors"][0]


def test_invalid_policy_is_exit_9_with_line(setup: dict[str, Any]) -> None:
    bad = setup["tmp"] / "bad.yaml"
    bad.write_text(setup["policy"].read_text().replace("noPickle", "noPickel"))
    r = run("policy", "check", setup["refs"]["good"], "-p", str(bad))
    assert r.exit_code == 9
    assert f"invalid policy {bad}:13: spec.require.artifact.noPickel: unknown field" in r.output


def test_unmatched_reference_is_refused(setup: dict[str, Any]) -> None:
    r = run("policy", "check", f"{setup['host']}/elsewhere/x:v1", "-p", str(setup["policy"]))
    assert r.exit_code == 1
    assert "no policy applies" in r.output


def test_lint(setup: dict[str, Any]) -> None:
    r = run("policy", "lint", str(setup["policy"]), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["policies"][0]["rules"] == ["signatures", "artifact.noPickle"]
    shipped = Path(__file__).parents[2] / "policies"
    r = run("policy", "lint", str(shipped))
    assert r.exit_code == 0, r.output
    assert "no-pickle" in r.output


def test_local_store_references_match_store_globs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``store:`` globs reach the embedded local store (references with no host);
    registry globs never match it, and a store glob never matches a registry."""
    monkeypatch.setenv("MODELREG_HOME", str(tmp_path / "home"))
    with Client(RemoteOptions(fsync=False)) as client:
        for name, filename in (("clean", "model.safetensors"), ("pickled", "model.pt")):
            src = tmp_path / "src" / name
            src.mkdir(parents=True)
            (src / filename).write_bytes(os.urandom(500))
            client.push(src, f"team/{name}:v1")
    policy = tmp_path / "store.yaml"
    policy.write_text(
        "apiVersion: modelreg.dev/v1alpha1\nkind: ModelPolicy\nmetadata: {name: local}\n"
        "spec:\n  match: {references: ['store:team/**']}\n"
        "  require:\n    artifact:\n      noPickle: true\n"
    )
    r = run("policy", "check", "team/clean:v1", "-p", str(policy))
    assert r.exit_code == 0, r.output
    assert "✓ artifact.noPickle" in r.output
    r = run("policy", "check", "team/pickled:v1", "-p", str(policy), "--json")
    assert r.exit_code == 1, r.output
    assert json.loads(r.stdout)["allowed"] is False
    # the same repository name on a registry is not the local store
    r = run("policy", "check", "localhost:1/team/clean:v1", "-p", str(policy))
    assert r.exit_code == 1 and "no policy applies" in r.output
    # and a registry glob never reaches the store
    registry_only = tmp_path / "registry.yaml"
    registry_only.write_text(policy.read_text().replace("store:team/**", "localhost/team/**"))
    r = run("policy", "check", "team/clean:v1", "-p", str(registry_only))
    assert r.exit_code == 1 and "no policy applies" in r.output
