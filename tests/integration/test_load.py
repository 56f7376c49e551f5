"""modelreg.load over a real registry, and the transformers example end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import modelreg
from modelreg.client import RemoteOptions
from tests.unit.lazy.helpers import write_model

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "load-transformers"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELREG_HOME", str(tmp_path / "home"))


def test_load_over_the_registry_equals_the_file(registry_plain, tmp_path):
    root = write_model(tmp_path / "model")
    ref = f"{registry_plain.host}/load/basic:v1"
    options = RemoteOptions(plain_http=True, store=str(tmp_path / "store"))
    modelreg.push(root, ref, options=options)
    want = load_file(str(root / "model.safetensors"))
    got = modelreg.load(ref, options=options)
    assert got.keys() == want.keys()
    for name, arr in want.items():
        assert np.array_equal(got[name], arr)
    streamed = dict(modelreg.load_iter(ref, options=options, tensor_parallel=(1, 2)))
    assert np.array_equal(streamed["a.weight"], np.array_split(want["a.weight"], 2)[1])
    assert not (tmp_path / "store" / "modelreg-chunks").exists()  # nothing on disk


def test_transformers_example_loads_equal_outputs(registry_plain, tmp_path):
    model_dir = tmp_path / "tiny-llama"
    ref = f"{registry_plain.host}/load/tiny-llama:v1"
    env_python = [sys.executable]
    made = subprocess.run(
        [
            *env_python,
            str(EXAMPLE / "make_model.py"),
            str(model_dir),
            "--push",
            ref,
            "--plain-http",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert made.returncode == 0, made.stderr
    ran = subprocess.run(
        [*env_python, str(EXAMPLE / "load.py"), ref, "--plain-http", "--compare", str(model_dir)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "logits equal" in ran.stdout
