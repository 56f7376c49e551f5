"""``modelreg webhook certs`` and ``modelreg webhook serve`` as a real process."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from tests.unit.webhook.reviews import pod_spec, review, workload

ROOT = Path(__file__).parents[2]
# The lead wires register() into modelreg_cli.main; until then build the CLI here.
LAUNCH = (
    "import sys\n"
    "from modelreg_cli.main import app\n"
    "from modelreg_cli import webhook_cmds\n"
    "if not any(g.name == 'webhook' for g in app.registered_groups):\n"
    "    webhook_cmds.register(app)\n"
    "app(sys.argv[1:])\n"
)


def modelreg(*args: str, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", LAUNCH, *args], cwd=ROOT, **kw)  # type: ignore[call-overload]


def test_certs_then_serve(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    proc = modelreg(
        "webhook",
        "certs",
        "--service",
        "modelreg-webhook",
        "--namespace",
        "ml-system",
        "--out",
        str(out),
        "--extra-name",
        "127.0.0.1",
        "--json",
        stdout=subprocess.PIPE,
    )
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    doc = json.loads(stdout)
    assert "modelreg-webhook.ml-system.svc" in doc["dnsNames"]
    assert oct(os.stat(out / "tls.key").st_mode & 0o777) == "0o600"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "apiVersion: modelreg.dev/v1alpha1\nkind: ModelPolicy\nmetadata: {name: p}\n"
        "spec:\n  match: {references: ['127.0.0.1:1/**']}\n"
        "  require: {artifact: {noPickle: true}}\n"
    )
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    server = modelreg(
        "webhook",
        "serve",
        "--policy",
        str(policy),
        "--tls-cert",
        str(out / "tls.crt"),
        "--tls-key",
        str(out / "tls.key"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--budget",
        "2",
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ctx = ssl.create_default_context(cafile=str(out / "ca.crt"))
        with httpx.Client(verify=ctx, timeout=10) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if http.get(f"https://127.0.0.1:{port}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, "webhook did not become ready"
                time.sleep(0.1)
            doc = review(workload("Pod", pod_spec(["127.0.0.1:1/m/x:v1", "nginx"])))
            resp = http.post(f"https://127.0.0.1:{port}/validate", json=doc).json()["response"]
            assert resp["allowed"] is False
            assert "127.0.0.1:1/m/x:v1" in resp["status"]["message"]
            assert "nginx" not in resp["status"]["message"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)
        log.close()
    assert server.returncode in (0, -signal.SIGTERM)


def test_serve_refuses_missing_certificate(tmp_path: Path) -> None:
    from modelreg_cli import webhook_cmds
    from modelreg_cli.main import app

    if not any(g.name == "webhook" for g in app.registered_groups):
        webhook_cmds.register(app)
    result = CliRunner().invoke(
        app,
        [
            "webhook",
            "serve",
            "--policy",
            str(ROOT / "policies"),
            "--tls-cert",
            str(tmp_path / "none.crt"),
            "--tls-key",
            str(tmp_path / "none.key"),
        ],
    )
    assert result.exit_code == 2
    assert "modelreg webhook certs" in result.output
