"""Issue 8 end to end: ``modelreg ci publish`` / ``ci verify`` in reproduced GitHub Actions
and GitLab CI environments, against a real Distribution registry and the tests' private
Sigstore on loopback (keyless with the CI's OIDC identity), and with a key secret."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from modelreg_cli.ci_cmds import register
from modelreg_cli.main import app
from typer.testing import CliRunner

from modelreg.attest.keys import private_key_pem
from modelreg.client import Client
from modelreg.errors import NotFoundError
from modelreg.sign import generate_private_key, public_key_pem
from tests.isolation import isolate

register(app)
runner = CliRunner()

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
GITHUB_IDENTITY = "https://github.com/acme/models/.github/workflows/train.yml@refs/heads/main"
GITLAB_ISSUER = "https://gitlab.example.com"
GITLAB_IDENTITY = "https://gitlab.example.com/acme/models//.gitlab-ci.yml@refs/heads/main"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CI_PREFIXES = ("GITHUB_", "GITLAB_", "CI_", "ACTIONS_", "RUNNER_", "MODELREG_CI_", "BUILDKITE")
SECRETS = (
    "SIGSTORE_ID_TOKEN",
    "MODELREG_SIGNING_KEY",
    "MODELREG_KEY_PASSWORD",
    "MODELREG_PASSWORD",
    "COSIGN_PASSWORD",
    "MODELREG_DOTENV",
    "MODELREG_SUMMARY_JSON",
    "CI",
    "GIT_URL",
    "GIT_COMMIT",
    "JOB_NAME",
    "BUILD_ID",
    "BUILD_URL",
    "NODE_NAME",
)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No CI of the machine running the tests leaks in; each test sets its own."""
    for name in list(os.environ):
        if name.startswith(CI_PREFIXES) or name.startswith("CIRCLE") or name in SECRETS:
            monkeypatch.delenv(name, raising=False)
    isolate(tmp_path, monkeypatch)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def model(tmp_path) -> Path:
    root = tmp_path / "tiny-llm"
    root.mkdir()
    (root / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (root / "model.safetensors").write_bytes(os.urandom(64 * 1024 + 7))
    return root


@pytest.fixture
def sigstore(fake, tmp_path):
    with fake.serving(tmp_path) as (_, trust_config, trusted_root):
        yield trust_config, trusted_root


@pytest.fixture
def github_oidc(fake) -> Iterator[tuple[str, str, list[dict[str, str]]]]:
    """The Actions token service: GET ?audience=sigstore with the request bearer."""
    bearer = "actions-request-token-0123"
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            query = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
            seen.append(query)
            if self.headers.get("Authorization") != f"bearer {bearer}":
                self.send_response(401)
                self.end_headers()
                return
            token = fake.identity_token(GITHUB_IDENTITY, GITHUB_ISSUER)
            data = json.dumps({"value": token}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/token?api-version=2.0"
        yield url, bearer, seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def github_env(monkeypatch, tmp_path: Path, *, oidc: tuple[str, str] | None) -> dict[str, Path]:
    files = {"output": tmp_path / "gh" / "output", "summary": tmp_path / "gh" / "summary.md"}
    files["output"].parent.mkdir()
    for f in files.values():
        f.write_text("")
    env = {
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "acme/models",
        "GITHUB_REPOSITORY_ID": "123",
        "GITHUB_REPOSITORY_OWNER_ID": "456",
        "GITHUB_WORKFLOW": "train",
        "GITHUB_WORKFLOW_REF": "acme/models/.github/workflows/train.yml@refs/heads/main",
        "GITHUB_REF": "refs/heads/main",
        "GITHUB_SHA": COMMIT,
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_RUN_ID": "9876",
        "GITHUB_RUN_ATTEMPT": "1",
        "RUNNER_ENVIRONMENT": "github-hosted",
        "RUNNER_NAME": "GitHub Actions 7",
        "GITHUB_OUTPUT": str(files["output"]),
        "GITHUB_STEP_SUMMARY": str(files["summary"]),
    }
    if oidc is not None:
        env["ACTIONS_ID_TOKEN_REQUEST_URL"], env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"] = oidc
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return files


def gitlab_env(monkeypatch, token: str | None) -> None:
    env = {
        "CI": "true",
        "GITLAB_CI": "true",
        "CI_SERVER_URL": "https://gitlab.example.com",
        "CI_PROJECT_PATH": "acme/models",
        "CI_PROJECT_URL": "https://gitlab.example.com/acme/models",
        "CI_PROJECT_ID": "77",
        "CI_COMMIT_SHA": COMMIT,
        "CI_COMMIT_REF_NAME": "main",
        "CI_JOB_NAME": "publish-model",
        "CI_JOB_ID": "5555",
        "CI_JOB_URL": "https://gitlab.example.com/acme/models/-/jobs/5555",
        "CI_PIPELINE_ID": "3333",
        "CI_PIPELINE_SOURCE": "push",
        "CI_RUNNER_ID": "12",
        "CI_RUNNER_DESCRIPTION": "shared-runner-1",
        "CI_JOB_STARTED_AT": "2025-01-01T00:00:00Z",
    }
    if token is not None:
        env["SIGSTORE_ID_TOKEN"] = token
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def write_policy(path: Path, host: str, authority: str, conditions: list[tuple[str, str]]) -> Path:
    rows = "\n".join(
        f"          - field: {field}\n            equals: {value}" for field, value in conditions
    )
    if rows:
        rows = "        conditions:\n" + rows
    path.write_text(
        f"""apiVersion: modelreg.dev/v1alpha1
kind: ModelPolicy
metadata:
  name: {path.stem}
spec:
  match:
    references: ["{host}/ci/**"]
  require:
    signatures:
{authority}
    attestations:
      - predicateType: https://slsa.dev/provenance/v1
{rows}
"""
    )
    return path


def keyless_authority(trusted_root: Path, issuer: str, identity: str) -> str:
    return f"""      trustedRoot: {trusted_root}
      authorities:
        - name: ci
          keyless:
            issuer: {issuer}
            identity: {identity}"""


def key_authority(pub: Path) -> str:
    return f"""      authorities:
        - name: release
          key:
            path: {pub}"""


def cli(*args: str):
    return runner.invoke(app, list(args))


def read_outputs(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep:
            out[name] = value
    return out


# ----------------------------------------------------------------- GitHub keyless
def test_github_actions_keyless_publish_then_gate(
    registry_plain, model, sigstore, github_oidc, monkeypatch, tmp_path
):
    trust_config, trusted_root = sigstore
    url, bearer, seen = github_oidc
    files = github_env(monkeypatch, tmp_path, oidc=(url, bearer))
    host = registry_plain.host
    ref = f"{host}/ci/github:v1"
    lineage = tmp_path / "lineage.json"
    lineage.write_text(
        json.dumps(
            {
                "baseModel": {"name": "llama", "uri": "hf://meta/llama"},
                "datasets": [{"name": "wiki", "digest": {"sha256": "ab" * 32}}],
            }
        )
    )
    good = write_policy(
        tmp_path / "from-acme.yaml",
        host,
        keyless_authority(trusted_root, GITHUB_ISSUER, GITHUB_IDENTITY),
        [
            (
                "predicate.buildDefinition.externalParameters.workflow.repository",
                "https://github.com/acme/models",
            ),
            (
                "predicate.buildDefinition.externalParameters.workflow.path",
                ".github/workflows/train.yml",
            ),
        ],
    )
    summary_json = tmp_path / "summary.json"
    done = cli(
        "ci", "publish", str(model), ref,
        "--keyless", "--trust-config", str(trust_config),
        "--lineage", str(lineage), "--policy", str(good),
        "--summary-json", str(summary_json),
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert seen and seen[0]["audience"] == "sigstore" and seen[0]["api-version"] == "2.0"

    summary = json.loads(summary_json.read_text())
    digest = summary["digest"]
    assert summary["ok"] and summary["signing"] == "keyless"
    assert summary["signer"] == GITHUB_IDENTITY
    assert summary["ci"]["provider"] == "github"
    assert summary["policy"]["status"] == "pass"
    types = {a["predicateType"] for a in summary["attestations"]}
    assert types == {
        "https://slsa.dev/provenance/v1",
        "https://modelreg.dev/attestations/training-lineage/v1",
    }

    outputs = read_outputs(files["output"])
    assert outputs["digest"] == digest
    assert outputs["reference"] == f"{host}/ci/github@{digest}"
    assert outputs["tag-reference"] == ref
    assert outputs["signer"] == GITHUB_IDENTITY
    assert outputs["policy"] == "pass"
    assert outputs["status"] == "published"
    assert outputs["provenance-referrer"].startswith("sha256:")
    markdown = files["summary"].read_text()
    assert "### ✅ Model published" in markdown
    assert f"`{host}/ci/github@{digest}`" in markdown
    assert "https://github.com/acme/models" in markdown

    # deploy side: the gate passes under the same policy ...
    files["output"].write_text("")
    done = cli("ci", "verify", ref, "--policy", str(good))
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith(f"ALLOWED  {ref}")
    assert f"pinned     {host}/ci/github@{digest}" in done.stdout
    assert "repository=https://github.com/acme/models" in done.stdout
    assert f"commit={COMMIT}" in done.stdout
    gate_outputs = read_outputs(files["output"])
    assert gate_outputs["allowed"] == "true"
    assert gate_outputs["reference"] == f"{host}/ci/github@{digest}"

    # ... and refuses under one that names another repository
    other = write_policy(
        tmp_path / "from-other.yaml",
        host,
        keyless_authority(trusted_root, GITHUB_ISSUER, GITHUB_IDENTITY),
        [
            (
                "predicate.buildDefinition.externalParameters.workflow.repository",
                "https://github.com/other/models",
            )
        ],
    )
    done = cli("ci", "verify", ref, "--policy", str(other), "--json")
    assert done.exit_code == 13, done.output
    doc = json.loads(done.stdout)
    assert doc["status"] == "fail" and not doc["allowed"]
    assert doc["pinned"] == f"{host}/ci/github@{digest}"
    reasons = [r["reason"] for p in doc["policies"] for r in p["rules"] if r["status"] == "failed"]
    assert reasons and any("other/models" in r for r in reasons)

    # the wrong workflow identity is refused too
    impostor = write_policy(
        tmp_path / "from-release.yaml",
        host,
        keyless_authority(
            trusted_root, GITHUB_ISSUER, GITHUB_IDENTITY.replace("train.yml", "release.yml")
        ),
        [],
    )
    done = cli("ci", "verify", ref, "--policy", str(impostor))
    assert done.exit_code == 13, done.output


# ----------------------------------------------------------------- GitLab keyless
def test_gitlab_ci_keyless_publish_dotenv_and_gate(
    registry_plain, model, fake, sigstore, monkeypatch, tmp_path
):
    trust_config, trusted_root = sigstore
    gitlab_env(monkeypatch, fake.identity_token(GITLAB_IDENTITY, GITLAB_ISSUER))
    host = registry_plain.host
    ref = f"{host}/ci/gitlab:v1"
    done = cli("ci", "publish", str(model), ref, "--keyless", "--trust-config", str(trust_config))
    assert done.exit_code == 0, done.output
    dotenv = (tmp_path / "modelreg.env").read_text().splitlines()
    values = dict(line.split("=", 1) for line in dotenv)
    digest = values["MODELREG_DIGEST"]
    assert digest.startswith("sha256:")
    assert values["MODELREG_REFERENCE"] == f"{host}/ci/gitlab@{digest}"
    assert values["MODELREG_TAG_REFERENCE"] == ref
    assert values["MODELREG_SIGNER"] == GITLAB_IDENTITY
    assert values["MODELREG_STATUS"] == "published"
    assert values["MODELREG_POLICY"] == "skipped"

    good = write_policy(
        tmp_path / "gitlab-acme.yaml",
        host,
        keyless_authority(trusted_root, GITLAB_ISSUER, GITLAB_IDENTITY),
        [
            (
                "predicate.buildDefinition.externalParameters.source",
                "https://gitlab.example.com/acme/models",
            ),
            ("predicate.buildDefinition.externalParameters.entryPoint", "publish-model"),
        ],
    )
    done = cli("ci", "verify", f"{host}/ci/gitlab@{digest}", "--policy", str(good))
    assert done.exit_code == 0, done.output
    other = write_policy(
        tmp_path / "gitlab-other.yaml",
        host,
        keyless_authority(trusted_root, GITLAB_ISSUER, GITLAB_IDENTITY),
        [
            (
                "predicate.buildDefinition.externalParameters.source",
                "https://gitlab.example.com/other/models",
            )
        ],
    )
    done = cli("ci", "verify", ref, "--policy", str(other))
    assert done.exit_code == 13, done.output
    assert done.stdout.startswith("REFUSED")


# ----------------------------------------------------------------- key from a secret
def test_generic_ci_key_secret_publish_and_gate(registry_plain, model, monkeypatch, tmp_path):
    key = generate_private_key()
    pub = tmp_path / "release.pub"
    pub.write_bytes(public_key_pem(key.public_key()))
    monkeypatch.setenv("MODELREG_SIGNING_KEY", private_key_pem(key, None).decode())
    monkeypatch.setenv("MODELREG_CI_REPOSITORY", "https://git.example.com/acme/models")
    monkeypatch.setenv("MODELREG_CI_COMMIT", COMMIT)
    monkeypatch.setenv("MODELREG_CI_WORKFLOW", "nightly-train")
    monkeypatch.setenv("MODELREG_CI_RUN_ID", "run-17")
    monkeypatch.setenv("MODELREG_CI_RUNNER", "gpu-box-3")
    host = registry_plain.host
    ref = f"{host}/ci/generic:v1"
    good = write_policy(
        tmp_path / "generic.yaml",
        host,
        key_authority(pub),
        [
            (
                "predicate.buildDefinition.externalParameters.repository",
                "https://git.example.com/acme/models",
            ),
            ("predicate.buildDefinition.externalParameters.workflow", "nightly-train"),
            ("predicate.buildDefinition.resolvedDependencies.0.digest.gitCommit", COMMIT),
        ],
    )
    done = cli("ci", "publish", str(model), ref, "--policy", str(good), "--json")
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["signing"] == "key" and doc["policy"]["status"] == "pass"
    assert doc["ci"]["provider"] == "generic"
    done = cli("ci", "verify", ref, "--policy", str(good))
    assert done.exit_code == 0, done.output


# ----------------------------------------------------------------- failures
def test_missing_token_fails_before_pushing(registry_plain, model, monkeypatch, tmp_path):
    files = github_env(monkeypatch, tmp_path, oidc=None)
    ref = f"{registry_plain.host}/ci/no-token:v1"
    summary_json = tmp_path / "summary.json"
    done = cli("ci", "publish", str(model), ref, "--keyless", "--summary-json", str(summary_json))
    assert done.exit_code == 11, done.output
    assert "sign failed: keyless signing needs an OIDC identity token" in done.stderr
    assert "id-token: write" in done.stderr
    summary = json.loads(summary_json.read_text())
    assert summary["failedStage"] == "sign" and summary["exitCode"] == 11
    assert summary["digest"] is None
    outputs = read_outputs(files["output"])
    assert outputs["status"] == "failed:sign" and outputs["exit-code"] == "11"
    assert "❌ Model publish failed (sign)" in files["summary"].read_text()
    with Client() as client, pytest.raises(NotFoundError):
        client.resolve(ref)  # nothing was pushed

    # GitLab without id_tokens
    for name in list(os.environ):
        if name.startswith(("GITHUB_", "ACTIONS_")):
            monkeypatch.delenv(name)
    gitlab_env(monkeypatch, None)
    done = cli("ci", "publish", str(model), ref, "--keyless")
    assert done.exit_code == 11, done.output
    assert "SIGSTORE_ID_TOKEN is not set" in done.stderr
    assert "id_tokens" in done.stderr


def test_unreachable_registry_is_a_push_failure(model, monkeypatch, tmp_path):
    key = generate_private_key()
    monkeypatch.setenv("MODELREG_SIGNING_KEY", private_key_pem(key, None).decode())
    summary_json = tmp_path / "s.json"
    done = cli(
        "ci", "publish", str(model), "127.0.0.1:1/ci/nowhere:v1",
        "--summary-json", str(summary_json),
    )  # fmt: skip
    assert done.exit_code == 10, done.output
    assert "push failed:" in done.stderr
    summary = json.loads(summary_json.read_text())
    assert summary["failedStage"] == "push"
    assert [s["status"] for s in summary["steps"]][-1] == "failed"


def test_policy_failure_after_publishing(registry_plain, model, monkeypatch, tmp_path):
    key = generate_private_key()
    pub = tmp_path / "release.pub"
    pub.write_bytes(public_key_pem(key.public_key()))
    key_file = tmp_path / "release.key"
    key_file.write_bytes(private_key_pem(key, None))
    files = github_env(monkeypatch, tmp_path, oidc=None)
    host = registry_plain.host
    ref = f"{host}/ci/refused:v1"
    other = write_policy(
        tmp_path / "other.yaml",
        host,
        key_authority(pub),
        [
            (
                "predicate.buildDefinition.externalParameters.workflow.repository",
                "https://github.com/other/models",
            )
        ],
    )
    done = cli("ci", "publish", str(model), ref, "--key", str(key_file), "--policy", str(other))
    assert done.exit_code == 13, done.output
    assert "policy failed:" in done.stderr
    assert "the policy gate refused it" in done.stderr
    outputs = read_outputs(files["output"])
    assert outputs["status"] == "failed:policy" and outputs["policy"] == "fail"
    assert outputs["digest"].startswith("sha256:")
    assert "❌" in files["summary"].read_text()
    # unreachable registry at the gate: could not evaluate, fail closed
    gone = write_policy(tmp_path / "gone.yaml", "127.0.0.1:1", key_authority(pub), [])
    done = cli("ci", "verify", "127.0.0.1:1/ci/refused:v1", "--policy", str(gone))
    assert done.exit_code == 9, done.output
    assert "could not evaluate" in done.stdout
