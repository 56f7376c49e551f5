"""Issue 19 items 3 and 5: verifying a pulled directory, the whole flow a user follows,
against a real registry: push, sign --key, pull --save-signature, then
``modelreg verify DIR --key --signature`` and ``model_signing verify key`` on the
same files; and ``verify DIR`` without ``--signature`` saying what to pass."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from tests.interop.peers import NO_PASSWORD, key_pair, model_signing, ok, run, write_tree

MODEL = {
    "config.json": b'{"model_type": "llama"}',
    "tokenizer/tokenizer.json": b'{"version": "1.0"}',
    "model.safetensors": save({"w": np.arange(16, dtype=np.float32)}),
}


@pytest.fixture
def signed(registry_plain, tmp_path: Path) -> tuple[str, Path]:
    """A model pushed and signed with a key; (reference, public key)."""
    model = write_tree(tmp_path / "model", MODEL)
    priv, pub = key_pair(tmp_path)
    ref = f"{registry_plain.host}/verify-dir/{tmp_path.name.lower()}:v1"
    ok("push", "-q", str(model), ref)
    ok("sign", ref, "--key", str(priv), env=NO_PASSWORD)
    return ref, pub


def _model_signing_verifies(directory: Path, sig: Path, pub: Path) -> bool:
    done = model_signing(
        "verify", "key", str(directory), "--signature", str(sig), "--public_key", str(pub)
    )
    return done.returncode == 0


def test_pull_save_signature_then_verify_dir_with_both_verifiers(signed, tmp_path) -> None:
    ref, pub = signed
    out = tmp_path / "out"
    sig = out / "model.sig"
    pulled = ok("pull", ref, "-o", str(out), "--save-signature", str(sig))
    assert pulled["signature"] == str(sig)
    assert sig.is_file()
    verified = run("verify", str(out), "--key", str(pub), "--signature", str(sig))
    assert verified.exit_code == 0, verified.output
    assert _model_signing_verifies(out, sig, pub)
    # the same bundle as referrers --save-model-signature writes
    saved = tmp_path / "saved.sig"
    ok("referrers", ref, "--save-model-signature", str(saved))
    assert saved.read_bytes() == sig.read_bytes()
    # a changed file fails both
    weights = out / "model.safetensors"
    weights.chmod(0o644)
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    assert run("verify", str(out), "--key", str(pub), "--signature", str(sig)).exit_code == 7
    assert not _model_signing_verifies(out, sig, pub)


def test_signature_outside_the_directory_and_relative_spellings(
    signed, tmp_path, monkeypatch
) -> None:
    ref, pub = signed
    monkeypatch.chdir(tmp_path)
    ok("pull", ref, "-o", "pulled", "--save-signature", "pulled.sig")
    sub = tmp_path / "sub"
    sub.mkdir()
    for spelling, cwd in (
        ("pulled", tmp_path),
        ("./pulled", tmp_path),
        (str(tmp_path / "pulled"), tmp_path),
        ("../pulled", sub),
    ):
        monkeypatch.chdir(cwd)
        sig = os.path.relpath(tmp_path / "pulled.sig")
        done = run("verify", spelling, "--key", str(pub), "--signature", sig)
        assert done.exit_code == 0, (spelling, done.output)
    monkeypatch.chdir(tmp_path)
    assert _model_signing_verifies(Path("pulled"), Path("pulled.sig"), pub)


def test_save_signature_inside_the_directory_is_only_model_sig(signed, tmp_path) -> None:
    ref, _ = signed
    out = tmp_path / "out"
    refused = run("pull", ref, "-o", str(out), "--save-signature", str(out / "sig.bundle"))
    assert refused.exit_code == 2, refused.output
    assert "model.sig" in refused.output
    assert not out.exists()  # refused before anything was written


def test_save_signature_of_an_unsigned_model_is_not_found_and_writes_nothing(
    registry_plain, tmp_path
) -> None:
    model = write_tree(tmp_path / "model", {"config.json": b"{}"})
    ref = f"{registry_plain.host}/verify-dir/unsigned:v1"
    ok("push", "-q", str(model), ref)
    out = tmp_path / "out"
    done = run("pull", ref, "-o", str(out), "--save-signature", str(tmp_path / "m.sig"))
    assert done.exit_code == 3, done.output
    assert "modelreg sign" in done.output
    assert not out.exists()


def test_verify_dir_without_signature_says_what_to_pass(signed, tmp_path, monkeypatch) -> None:
    ref, pub = signed
    monkeypatch.chdir(tmp_path)
    ok("pull", ref, "-o", "llm")
    for spelling in ("llm", "./llm", str(tmp_path / "llm")):
        done = run("verify", spelling, "--key", str(pub))
        assert done.exit_code == 2, done.output
        flat = " ".join(done.output.split())
        assert "is a directory" in flat
        assert "--signature" in flat and "--save-signature" in flat
        assert "invalid reference" not in flat
    # once model.sig is beside the files, the hint names it
    ok("pull", ref, "-o", "llm", "--save-signature", "llm/model.sig")
    flat = " ".join(run("verify", "llm", "--key", str(pub)).output.split())
    assert f"--signature {Path('llm') / 'model.sig'}" in flat
    assert run("verify", "llm", "--key", str(pub), "--signature", "llm/model.sig").exit_code == 0


def test_save_signature_with_verify_key_saves_the_signature_that_key_made(signed, tmp_path) -> None:
    """A model signed by two keys, the other one newest: pulling with --verify-key A
    saves A's model signature (the one a later `verify DIR --key A` accepts), not the
    newest; a key that signed nothing gets no signature and no files."""
    ref, pub_a = signed
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    priv_b, _pub_b = key_pair(tmp_path / "b")
    ok("sign", ref, "--key", str(priv_b), env=NO_PASSWORD)
    out = tmp_path / "out"
    sig = tmp_path / "model.sig"
    ok("pull", ref, "-o", str(out), "--verify-key", str(pub_a), "--save-signature", str(sig))
    verified = run("verify", str(out), "--key", str(pub_a), "--signature", str(sig))
    assert verified.exit_code == 0, verified.output
    _priv_c, pub_c = key_pair(tmp_path / "c")
    refused = run(
        "pull",
        ref,
        "-o",
        str(tmp_path / "c-out"),
        "--verify-key",
        str(pub_c),
        "--save-signature",
        str(tmp_path / "c.sig"),
    )
    assert refused.exit_code != 0
    assert not (tmp_path / "c-out").exists() and not (tmp_path / "c.sig").exists()
