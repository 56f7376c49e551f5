"""``modelreg wasm pack | run`` against the embedded local store (no network)."""

from __future__ import annotations

import json

import pytest
from modelreg_cli import wasm_cmds
from modelreg_cli.main import app
from typer.testing import CliRunner

from tests.unit.wasm.example import Example
from tests.unit.wasm.guests import SPIN

wasm_cmds.register(app)
runner = CliRunner()


def invoke(*args: str, **kw):
    return runner.invoke(app, list(args), **kw)


@pytest.fixture
def bundle(example: Example) -> str:
    pushed = invoke("push", str(example.model_dir), "models/mlp:v1", "--json")
    assert pushed.exit_code == 0, pushed.output
    packed = invoke(
        "wasm", "pack", str(example.wasm), "--model", "models/mlp:v1", "-t", "apps/mlp:v1", "--json"
    )
    assert packed.exit_code == 0, packed.output
    doc = json.loads(packed.stdout)
    assert doc["model"] == "models/mlp@" + json.loads(pushed.stdout)["digest"]
    return "apps/mlp:v1"


def test_register_is_idempotent():
    wasm_cmds.register(app)
    assert [g.name for g in app.registered_groups].count("wasm") == 1


def test_run_writes_the_modules_output_to_stdout(bundle, example):
    result = invoke("wasm", "run", bundle, "--input", str(example.inputs))
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == example.expected()


def test_a_successful_run_says_so(bundle, example, tmp_path):
    """Issue 19 item 5: success was silent. The summary goes after the module's output:
    to stderr when the module's output is on stdout (which stays the module's alone),
    to stdout when the output went to --output."""
    result = invoke("wasm", "run", bundle, "--input", str(example.inputs))
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == example.expected()
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith(f"ran {bundle}: exit 0 in ")
    assert "4 tensors read" in summary and "memory " in summary
    out = tmp_path / "out.bin"
    to_file = invoke("wasm", "run", bundle, "-i", str(example.inputs), "-o", str(out))
    assert to_file.exit_code == 0, to_file.stderr
    assert to_file.stdout.startswith(f"ran {bundle}: exit 0 in ")
    assert f"to {out}" in " ".join(to_file.stdout.split())
    assert out.read_bytes() == example.expected()


def test_run_reads_our_stdin_with_dash(bundle, example):
    result = invoke("wasm", "run", bundle, "-i", "-", input=example.inputs.read_bytes())
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == example.expected()


def test_run_to_a_file_with_a_json_summary(bundle, example, tmp_path):
    out = tmp_path / "out.bin"
    result = invoke("wasm", "run", bundle, "-i", str(example.inputs), "-o", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() == example.expected()
    doc = json.loads(result.stdout)
    assert doc["exitCode"] == 0 and doc["bundle"].startswith("apps/mlp@sha256:")
    assert doc["tensorsRead"] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]


def test_a_failing_module_exits_10_and_leaves_no_output(bundle, tmp_path):
    bad = tmp_path / "bad.f32"
    bad.write_bytes(b"\x00" * 10)
    out = tmp_path / "out.bin"
    result = invoke("wasm", "run", bundle, "-i", str(bad), "-o", str(out))
    assert result.exit_code == 10
    assert "mlp: input is not a whole number of feature vectors" in result.stderr
    assert "the module exited with status 65" in result.stderr
    assert not out.exists() and list(tmp_path.glob(".out.bin.*")) == []


def test_memory_limit_is_reported(bundle, tmp_path):
    big = tmp_path / "big.f32"
    big.write_bytes(b"\x00" * (3 * 1024 * 1024))
    result = invoke("wasm", "run", bundle, "-i", str(big), "--max-memory", "1MiB")
    assert result.exit_code == 10
    assert "mlp: out of memory" in result.stderr
    assert "after its memory reached the 1MiB limit (raise --max-memory)" in result.stderr


def test_time_limit_is_reported(example, tmp_path):
    assert invoke("push", str(example.model_dir), "models/mlp:v1").exit_code == 0
    spin = tmp_path / "spin.wasm"
    spin.write_bytes(SPIN)
    packed = invoke("wasm", "pack", str(spin), "-m", "models/mlp:v1", "-t", "apps/spin:v1")
    assert packed.exit_code == 0, packed.output
    result = invoke("wasm", "run", "apps/spin:v1", "--timeout", "0.3")
    assert result.exit_code == 10
    assert "ran past its time limit of 0.3 s" in result.stderr
    result = invoke("wasm", "run", "apps/spin:v1", "--fuel", "50000", "--json", "-o", "x")
    assert result.exit_code == 10
    err = json.loads(result.stderr)["error"]
    assert err["type"] == "WasmLimitError" and "ran out of fuel" in err["message"]


def test_verify_key_refuses_an_unsigned_bundle(bundle, tmp_path):
    from modelreg.sign import generate_private_key, public_key_pem

    pub = tmp_path / "release.pub"
    pub.write_bytes(public_key_pem(generate_private_key().public_key()))
    result = invoke("wasm", "run", bundle, "--verify-key", str(pub))
    assert result.exit_code == 7
    assert "the module apps/mlp@sha256:" in result.stderr and "is not verified" in result.stderr
    assert result.stdout == ""


def test_usage_errors(bundle, example):
    assert invoke("wasm", "run", bundle, "--json").exit_code == 2
    local = invoke("wasm", "run", str(example.wasm))
    assert local.exit_code == 2 and "say which model it reads with --model" in local.stderr
    result = invoke("wasm", "run", str(example.wasm), "-m", "models/mlp:v1", "--verify-key", "k")
    assert result.exit_code == 2 and "a local module cannot be verified" in result.stderr


def test_a_local_module_on_a_local_file(example):
    result = invoke(
        "wasm", "run", str(example.wasm), "-m", str(example.weights), "-i", str(example.inputs)
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == example.expected()
