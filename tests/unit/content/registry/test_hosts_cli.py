"""``modelreg hosts REF``: the resolved per-host configuration, secrets never shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from modelreg_cli.main import app
from typer.testing import CliRunner


def _setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hosts = tmp_path / "certs.d" / "registry.example.com"
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(
        'server = "https://registry.example.com"\nca = "ca.pem"\n\n'
        '[host."http://cache.local:5000"]\n  capabilities = ["pull"]\n'
        '  [host."http://cache.local:5000".header]\n    x-token = "s3cr3t-header"\n\n'
        '[host."https://p2p.local"]\n  capabilities = ["pull", "resolve"]\n  skip_verify = true\n'
    )
    docker = tmp_path / "docker"
    docker.mkdir()
    # "dTpzM2NyM3QtcGFzcw==" is u:s3cr3t-pass
    (docker / "config.json").write_text(
        json.dumps({"auths": {"registry.example.com": {"auth": "dTpzM2NyM3QtcGFzcw=="}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    return tmp_path / "certs.d"


def test_hosts_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    certs = _setup(tmp_path, monkeypatch)
    result = CliRunner().invoke(
        app, ["hosts", "registry.example.com/team/llm:v1", "--hosts-dir", str(certs), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["files"] == [str(certs / "registry.example.com" / "hosts.toml")]
    assert [m["url"] for m in doc["mirrors"]] == [
        "http://cache.local:5000/v2",
        "https://p2p.local/v2",
    ]
    assert doc["mirrors"][0]["capabilities"] == ["pull"]
    assert doc["mirrors"][1]["skipVerify"] is True
    assert doc["server"]["credentials"] is True
    assert doc["mirrors"][0]["credentials"] is False
    assert "s3cr3t" not in result.stdout


def test_hosts_text_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    certs = _setup(tmp_path, monkeypatch)
    result = CliRunner().invoke(app, ["hosts", "registry.example.com", "--hosts-dir", str(certs)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].startswith("  configured by:")
    assert "mirror 1: http://cache.local:5000/v2" in result.stdout
    assert "TLS, certificate NOT verified" in result.stdout
    assert "server:   https://registry.example.com/v2" in result.stdout
    assert "s3cr3t" not in result.stdout
    unknown = CliRunner().invoke(app, ["hosts", "quay.io"])
    assert unknown.exit_code == 0 and "defaults" in unknown.stdout


def test_hosts_malformed_file_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "certs.d" / "x.example"
    bad.mkdir(parents=True)
    (bad / "hosts.toml").write_text('[host."https://m"]\ncapabilites = ["pull"]\n')
    result = CliRunner().invoke(app, ["hosts", "x.example", "--hosts-dir", str(bad.parent)])
    assert result.exit_code == 2
    assert "capabilites" in result.output and "hosts.toml" in result.output
