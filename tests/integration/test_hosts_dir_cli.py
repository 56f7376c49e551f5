"""Every command that talks to a registry reads its per-host configuration from
``--hosts-dir`` (and ``$MODELREG_HOSTS_DIR``), issue 21 item 1: "so no command needs
``--ca-file`` again".

The registry is the suite's TLS + basic-auth Distribution with its own CA; the only
place that CA is named is the ``hosts.toml`` of a hosts directory given to each
command, so a command that ignored the directory would fail certificate verification.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from modelreg_cli.main import app
from typer.testing import CliRunner

from tests.integration.registry_server import RegistryServer

KEY_PASSWORD = {"MODELREG_KEY_PASSWORD": "hosts-dir passphrase"}


def _hosts_dir(tmp_path: Path, registry: RegistryServer) -> Path:
    root = tmp_path / "certs.d"
    (root / registry.host).mkdir(parents=True)
    (root / registry.host / "hosts.toml").write_text(
        f'server = "https://{registry.host}"\nca = "{registry.ca_file}"\n'
    )
    return root


def _model(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    root.mkdir()
    (root / "config.json").write_text('{"model_type": "llama"}')
    (root / "weights.bin").write_bytes(bytes(range(256)) * 64)
    return root


def _run(*args: str, env: dict[str, str] | None = None) -> Any:
    """``modelreg ARGS --json``: the result document; the command must succeed."""
    result = CliRunner().invoke(app, [*args, "--json"], env=env)
    assert result.exit_code == 0, (args, result.output)
    return json.loads(result.stdout)


def test_registry_commands_take_the_ca_from_the_hosts_dir(
    registry_tls_basic: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = registry_tls_basic
    assert registry.ca_file is not None
    monkeypatch.setenv("DOCKER_CONFIG", str(registry.docker_config(tmp_path).parent))
    hosts = str(_hosts_dir(tmp_path, registry))
    repo = f"{registry.host}/hosts-dir/{uuid.uuid4().hex[:10]}"
    ref = f"{repo}:v1"

    # without the directory the registry's certificate is not trusted
    refused = CliRunner().invoke(app, ["push", str(_model(tmp_path)), ref])
    assert refused.exit_code == 6, refused.output

    pushed = _run("push", str(tmp_path / "model"), ref, "--hosts-dir", hosts)
    assert _run("tags", repo, "--hosts-dir", hosts)["tags"] == ["v1"]
    assert _run("inspect", ref, "--hosts-dir", hosts)["digest"] == pushed["digest"]
    _run("diff", ref, ref, "--hosts-dir", hosts)
    pulled = _run("pull", ref, "-o", str(tmp_path / "out"), "--hosts-dir", hosts)
    assert pulled["digest"] == pushed["digest"]
    assert (tmp_path / "out" / "weights.bin").read_bytes() == bytes(range(256)) * 64
    _run("index", ref, "--hosts-dir", hosts)

    key = tmp_path / "modelreg.key"
    _run("keygen", "--output-key-file", str(key), env=KEY_PASSWORD)
    _run("sign", ref, "--key", str(key), "--hosts-dir", hosts, env=KEY_PASSWORD)
    public = str(tmp_path / "modelreg.pub")
    assert _run("verify", ref, "--key", public, "--hosts-dir", hosts)["ok"]
    assert _run("referrers", ref, "--hosts-dir", hosts)["referrers"]

    # $MODELREG_HOSTS_DIR does the same for a command given no flag
    by_env = _run("inspect", ref, env={"MODELREG_HOSTS_DIR": hosts})
    assert by_env["digest"] == pushed["digest"]

    _run("rm", ref, "--hosts-dir", hosts)
    gone = CliRunner().invoke(app, ["inspect", ref, "--hosts-dir", hosts])
    assert gone.exit_code == 3, gone.output
