"""``model_signing`` (sigstore model-transparency) and modelreg, both ways, key-based,
through a real registry: what ``modelreg sign`` stores verifies with ``model_signing
verify`` on the pulled directory and on the original, and what ``model_signing sign``
writes verifies with ``modelreg verify DIR --signature``.

Issue 15, failure 1: on 087654d the statement listed ``.gitattributes`` and also
ignored it, so both verifiers reported it missing (exit 7)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from tests.interop.peers import NO_PASSWORD, key_pair, model_signing, ok, run, tree, write_tree


def _sharded() -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    shards = {
        "model-00001-of-00002.safetensors": {"a.weight": rng.random((4, 8), dtype=np.float32)},
        "model-00002-of-00002.safetensors": {"b.weight": rng.random((8,), dtype=np.float32)},
    }
    index = {
        "metadata": {"total_size": 160},
        "weight_map": {name: f for f, ts in shards.items() for name in ts},
    }
    files = {f: save(ts) for f, ts in shards.items()}
    files["model.safetensors.index.json"] = json.dumps(index).encode()
    files["config.json"] = b'{"architectures": ["LlamaForCausalLM"]}'
    return files


MODELS = {
    "git-files": {
        "config.json": b'{"model_type": "llama"}',
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        ".gitignore": b"*.tmp\n",
        "sub/.gitignore": b"*.bak\n",  # nested: model_signing covers it
        "sub/weights.safetensors": save({"w": np.zeros((2, 2), dtype=np.float32)}),
    },
    "nested": {
        "config.json": b"{}",
        "tokenizer/tokenizer.json": b'{"version": "1.0"}',
        "text_encoder/deeper/model.safetensors": save({"x": np.ones((3,), dtype=np.float32)}),
        "README.md": b"# nested\n",
    },
    "sharded": _sharded(),
}


def _verify_with_both(directory: Path, sig: Path, pub: Path) -> None:
    done = model_signing(
        "verify", "key", str(directory), "--signature", str(sig), "--public_key", str(pub)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    verified = run("verify", str(directory), "--key", str(pub), "--signature", str(sig))
    assert verified.exit_code == 0, verified.output


def _push_and_sign(model: Path, ref: str, tmp_path: Path) -> tuple[Path, Path]:
    """Pushes ``model`` and signs it with a new key, the model-level bundle also written
    to a file: (that signature file, the public key file)."""
    priv, pub = key_pair(tmp_path)
    ok("push", str(model), ref)
    sig = tmp_path / "model.sig"
    ok("sign", ref, "--key", str(priv), "--output-signature", str(sig), env=NO_PASSWORD)
    return sig, pub


def test_issue15_repro_gitattributes(registry_plain, tmp_path):
    """The issue's repro, step by step with the CLI."""
    model = write_tree(
        tmp_path / "model",
        {"config.json": b'{"model_type": "llama"}', ".gitattributes": b"* text=auto\n"},
    )
    ref = f"{registry_plain.host}/interop/ms-repro:v1"
    out_sig, pub = _push_and_sign(model, ref, tmp_path)
    saved = tmp_path / "saved.sig"
    ok("referrers", ref, "--save-model-signature", str(saved))
    assert saved.read_bytes() == out_sig.read_bytes()
    out = tmp_path / "out"
    ok("pull", ref, "-o", str(out))
    assert (out / ".gitattributes").read_bytes() == b"* text=auto\n"
    _verify_with_both(out, out_sig, pub)
    _verify_with_both(model, out_sig, pub)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_modelreg_signs_model_signing_verifies(registry_plain, tmp_path, name):
    model = write_tree(tmp_path / name, MODELS[name])
    ref = f"{registry_plain.host}/interop/ms-{name}:v1"
    sig, pub = _push_and_sign(model, ref, tmp_path)
    out = tmp_path / "out"
    ok("pull", ref, "-o", str(out))
    assert tree(out) == tree(model)
    _verify_with_both(out, sig, pub)
    _verify_with_both(model, sig, pub)
    # inside the directory under the name the statement ignores
    (out / "model.sig").write_bytes(sig.read_bytes())
    _verify_with_both(out, out / "model.sig", pub)
    # and a change is caught by both
    victim = next(p for p in sorted(out.rglob("*.safetensors")))
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x01")
    assert (
        model_signing(
            "verify", "key", str(out), "--signature", str(sig), "--public_key", str(pub)
        ).returncode
        != 0
    )
    assert run("verify", str(out), "--key", str(pub), "--signature", str(sig)).exit_code == 7


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_signing_signs_modelreg_verifies(registry_plain, tmp_path, name):
    model = write_tree(tmp_path / name, MODELS[name])
    priv, pub = key_pair(tmp_path)
    sig = tmp_path / "theirs.sig"
    done = model_signing(
        "sign", "key", str(model), "--signature", str(sig), "--private_key", str(priv)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert run("verify", str(model), "--key", str(pub), "--signature", str(sig)).exit_code == 0
    ref = f"{registry_plain.host}/interop/ms-theirs-{name}:v1"
    ok("push", str(model), ref)
    out = tmp_path / "out"
    ok("pull", ref, "-o", str(out))
    _verify_with_both(out, sig, pub)
    (out / "added.bin").write_bytes(os.urandom(8))
    assert run("verify", str(out), "--key", str(pub), "--signature", str(sig)).exit_code == 7
