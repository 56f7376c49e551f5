"""Issue 19 item 4: a feature whose optional extra is missing fails the same way everywhere:
MissingExtraError, exit 15, the feature named and ``pip install 'modelreg[EXTRA]'`` to run.

The environment has every extra installed, so each test makes one import fail on demand:
``sys.modules[name] = None`` is what Python itself does to block an import
(``ModuleNotFoundError: import of NAME halted``)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from modelreg_cli.main import app
from typer.testing import CliRunner

import modelreg
from modelreg._extras import require
from modelreg.errors import MissingExtraError

runner = CliRunner()
REPO = Path(__file__).resolve().parents[3]


def missing(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def assert_names_the_extra(output: str, extra: str, exit_code: int) -> None:
    flat = " ".join(output.split())
    assert exit_code == 15, output
    assert f"pip install 'modelreg[{extra}]'" in flat, output
    assert "Traceback" not in output


def test_require_names_the_feature_the_package_and_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing(monkeypatch, "regopy")
    with pytest.raises(MissingExtraError) as raised:
        require("regopy", "rego", "a Rego condition")
    err = raised.value
    assert err.exit_code == 15
    assert err.message == "a Rego condition needs the 'regopy' package, which is not installed"
    assert err.hint == "pip install 'modelreg[rego]'"
    assert (err.extra, err.module) == ("rego", "regopy")


def test_require_returns_the_module_when_it_is_there() -> None:
    assert require("json", "none", "anything") is sys.modules["json"]


def test_webhook_serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing(monkeypatch, "httptools")
    policy = REPO / "policies" / "slsa-provenance.yaml"
    result = runner.invoke(
        app,
        ["webhook", "serve", "--policy", str(policy), "--tls-cert", "c", "--tls-key", "k"],
    )
    assert_names_the_extra(result.output, "webhook", result.exit_code)
    assert "webhook serve" in result.output


@pytest.mark.parametrize("command", ["lint", "check"])
def test_policy_with_a_rego_condition(monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    missing(monkeypatch, "regopy")
    policy = str(REPO / "policies" / "slsa-provenance.yaml")
    args = ["policy", "lint", policy]
    if command == "check":
        args = ["policy", "check", "llm:v1", "--policy", policy]
    result = runner.invoke(app, args)
    assert_names_the_extra(result.output, "rego", result.exit_code)
    assert "Rego" in result.output


@pytest.fixture
def pushed(tmp_path: Path, home: Path) -> str:
    root = tmp_path / "m"
    root.mkdir()
    (root / "config.json").write_text("{}")
    assert runner.invoke(app, ["push", "-q", str(root), "llm:v1"]).exit_code == 0
    return "llm:v1"


def test_mount(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pushed: str) -> None:
    missing(monkeypatch, "pyfuse3")
    (tmp_path / "mnt").mkdir()
    result = runner.invoke(app, ["mount", pushed, str(tmp_path / "mnt")])
    assert_names_the_extra(result.output, "mount", result.exit_code)
    assert "libfuse3" in result.output


@pytest.fixture
def no_wasmtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """wasmtime blocked, and modelreg.wasm imported afresh (restored after the test)."""
    monkeypatch.setattr(modelreg, "wasm", importlib.import_module("modelreg.wasm"), raising=False)
    for name in [n for n in sys.modules if n == "modelreg.wasm" or n.startswith("modelreg.wasm.")]:
        monkeypatch.delitem(sys.modules, name)
    missing(monkeypatch, "wasmtime")


@pytest.mark.parametrize(
    "args",
    [
        ["wasm", "run", "llm:v1"],
        ["wasm", "pack", "module.wasm", "--model", "llm:v1", "-t", "app:v1"],
    ],
    ids=["run", "pack"],
)
def test_wasm(no_wasmtime: None, home: Path, args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert_names_the_extra(result.output, "wasm", result.exit_code)


def test_load_with_torch(monkeypatch: pytest.MonkeyPatch, pushed: str) -> None:
    missing(monkeypatch, "torch")
    with pytest.raises(MissingExtraError) as raised:
        modelreg.load(pushed, framework="torch")
    assert raised.value.hint == "pip install 'modelreg[torch]'"


def test_lazy_numpy_and_ml_dtypes(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelreg.lazy._tensors import numpy_dtype, require_numpy

    with monkeypatch.context() as patch:
        missing(patch, "numpy")
        with pytest.raises(MissingExtraError) as raised:
            require_numpy()
        assert raised.value.hint == "pip install 'modelreg[lazy]'"
    missing(monkeypatch, "ml_dtypes")
    assert str(numpy_dtype("safetensors", "F32")) == "float32"  # NumPy's own: no extra
    with pytest.raises(MissingExtraError) as raised:
        numpy_dtype("safetensors", "BF16")
    assert "BF16" in raised.value.message
    assert raised.value.hint == "pip install 'modelreg[lazy]'"
