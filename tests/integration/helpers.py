"""Helpers the integration tests share: the CLI run in-process, a small safetensors
checkpoint, and a byte-for-byte tree comparison."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import Result
from modelreg_cli.main import app
from safetensors.numpy import save_file
from typer.testing import CliRunner

runner = CliRunner()


def run(*args: str) -> Result:
    return runner.invoke(app, list(args))


def ok(*args: str) -> dict[str, Any]:
    """The command's ``--json`` answer; fails the test when it did not exit 0."""
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def llm_dir(root: Path, weights: int, tokenizer_dir: str = "tokenizer") -> Path:
    """A Llama-like model directory at ``root``: config.json, a tokenizer.json under
    ``tokenizer_dir`` and ``weights`` random bytes of model.safetensors."""
    (root / tokenizer_dir).mkdir(parents=True)
    (root / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (root / tokenizer_dir / "tokenizer.json").write_text('{"version": "1.0"}')
    (root / "model.safetensors").write_bytes(os.urandom(weights))
    return root


def random_blob(size: int, seed: object = 0) -> bytes:
    """``size`` bytes that differ by ``seed`` and are the same on every run (so a
    failure can be reproduced), without a random generator's state to share."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}-{counter}".encode()).digest() * 128
        counter += 1
    return bytes(out[:size])


def flip_stored_byte(root_dir: str | Path, digest: str, offset: int) -> None:
    """Flips the byte at ``offset`` of blob ``digest`` where a Distribution registry
    rooted at ``root_dir`` stores it: the registry then serves wrong bytes."""
    hexd = digest.split(":")[1]
    blob = next(Path(root_dir).rglob(f"blobs/sha256/{hexd[:2]}/{hexd}/data"))
    raw = bytearray(blob.read_bytes())
    raw[offset] ^= 0xFF
    blob.write_bytes(bytes(raw))


def refused_pull(ref: str, out: Path) -> Result:
    """``modelreg pull`` that fails verification (exit 5) and leaves ``out`` empty."""
    result = run("pull", ref, "-o", str(out), "--no-cache")
    assert result.exit_code == 5, result.output
    assert not out.exists() or os.listdir(out) == []
    return result


def checkpoint(root: Path, changed: frozenset[int] = frozenset()) -> Path:
    """48 float32 tensors of 64 KiB (3 MiB), Llama-style names, a config and a tokenizer;
    the tensors whose index is in ``changed`` get other values (a fine-tune's v2)."""
    root.mkdir(parents=True)
    tensors = {}
    for i in range(48):
        rng = np.random.default_rng(i + (10_000 if i in changed else 0))
        tensors[f"model.layers.{i // 4}.self_attn.p{i % 4}.weight"] = rng.standard_normal(
            (16, 1024)
        ).astype("f4")
    save_file(tensors, str(root / "model.safetensors"), metadata={"format": "pt"})
    (root / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (root / "tokenizer.json").write_text('{"version": "1.0"}')
    return root


def same_tree(a: Path, b: Path) -> None:
    """The same files with the same bytes below ``a`` and ``b``."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@contextlib.contextmanager
def module_home(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """A new directory ``name`` whose ``home`` is ``MODELREG_HOME`` until the block ends:
    for module-scoped fixtures, which cannot use ``monkeypatch``."""
    tmp = tmp_path_factory.mktemp(name)
    old = os.environ.get("MODELREG_HOME")
    os.environ["MODELREG_HOME"] = str(tmp / "home")
    try:
        yield tmp
    finally:
        if old is None:
            os.environ.pop("MODELREG_HOME", None)
        else:
            os.environ["MODELREG_HOME"] = old


def oras_py(script: str) -> subprocess.CompletedProcess[str]:
    """Runs ``script`` (which uses oras-py) in a Python of its own; the caller checks."""
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, timeout=120
    )


def skopeo(*args: str, timeout: float = 120) -> bytes:
    """``skopeo ARGS``, which must succeed: its stdout."""
    return subprocess.run(
        ["skopeo", *args], capture_output=True, timeout=timeout, check=True
    ).stdout
