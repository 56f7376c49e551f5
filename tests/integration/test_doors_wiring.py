"""The feature commands reached through the one CLI and the top-level API."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from modelreg_cli.main import app, main_args
from typer.testing import CliRunner

import modelreg

runner = CliRunner()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELREG_KEY_PASSWORD", "test-passphrase")


TESTDATA = Path(__file__).resolve().parents[2] / "testdata" / "models" / "tiny-llm"


def ok(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_pull_verify_key_writes_nothing_unless_signed_by_that_key(registry_plain, tmp_path):
    ref = f"{registry_plain.host}/wiring/verified:v1"
    ok("push", str(TESTDATA), ref)
    ok("keygen", "--output-key-file", str(tmp_path / "good.key"))
    ok("keygen", "--output-key-file", str(tmp_path / "other.key"))
    unsigned = runner.invoke(
        app, ["pull", ref, "-o", str(tmp_path / "o1"), "--verify-key", str(tmp_path / "good.pub")]
    )
    assert unsigned.exit_code == 7, unsigned.output
    assert not (tmp_path / "o1").exists() or os.listdir(tmp_path / "o1") == []
    ok("sign", ref, "--key", str(tmp_path / "good.key"))
    wrong = runner.invoke(
        app, ["pull", ref, "-o", str(tmp_path / "o2"), "--verify-key", str(tmp_path / "other.pub")]
    )
    assert wrong.exit_code == 7
    assert not (tmp_path / "o2").exists() or os.listdir(tmp_path / "o2") == []
    ok("pull", ref, "-o", str(tmp_path / "o3"), "--verify-key", str(tmp_path / "good.pub"))
    assert (tmp_path / "o3" / "config.json").read_bytes() == (TESTDATA / "config.json").read_bytes()


def test_pull_into_and_output_are_exclusive(registry_plain, tmp_path):
    ref = f"{registry_plain.host}/wiring/into:v1"
    ok("push", str(TESTDATA), ref)
    both = runner.invoke(
        app, ["pull", ref, "-o", str(tmp_path / "a"), "--into", str(tmp_path / "b")]
    )
    assert both.exit_code == 2 and "exactly one" in both.stderr
    ok("pull", ref, "--into", str(tmp_path / "init"))
    for f in TESTDATA.rglob("*"):
        if f.is_file():
            assert (tmp_path / "init" / f.relative_to(TESTDATA)).read_bytes() == f.read_bytes()
    again = ok("pull", ref, "--into", str(tmp_path / "init"))  # resumable: nothing left to do
    assert again


def test_chunk_index_push_and_lazy_open(registry_plain):
    ref = f"{registry_plain.host}/wiring/lazy:v1"
    pushed = ok("push", str(TESTDATA), ref, "--chunk-index")
    info = ok("inspect", ref)
    assert "dev.modelreg.chunk-index" in info["manifest"]["annotations"]
    referrers = ok("referrers", ref)
    assert "application/vnd.modelreg.chunk-index.v1" in json.dumps(referrers)
    with modelreg.open(ref) as handle:
        names = [t.name for t in handle.tensors()]
        assert names
        shard = "model-00001-of-00002.safetensors"
        with handle.open(shard) as f:
            assert f.read() == (TESTDATA / shard).read_bytes()
    assert pushed["digest"] == info["digest"]


def test_main_args_returns_the_exit_code(tmp_path):
    assert main_args(["inspect", "nothing-here:v1"]) == 3
    assert main_args(["--version"]) == 0
