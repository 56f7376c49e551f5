"""Directory verification (model-transparency format) and interop with ``model_signing``,
both ways, key-based and keyless (keyless against the tests' private Sigstore)."""

from __future__ import annotations

import json
import subprocess
import sys

import model_signing as _model_signing_pkg  # noqa: F401  (fail loudly if absent)
import pytest

from modelreg.sign import (
    MODEL_SIGNING_PREDICATE,
    KeylessOptions,
    KeylessSigner,
    KeySigner,
    sign,
)
from modelreg.verify import verify_directory
from tests.unit.signing_fixtures import (
    ALICE,
    ISSUER,
    key_policy,
    keyless_policy,
    write_key_files,
    write_model,
)


def model_signing(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "model_signing", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def key_files(key, tmp_path):
    return write_key_files(key, tmp_path)


def _signed_by_model_signing(tmp_path, key_files):
    """A model written and signed with a key by ``model_signing``: (model, signature)."""
    model = write_model(tmp_path / "model")
    sig = tmp_path / "model.sig"
    done = model_signing(
        "sign", "key", str(model), "--signature", str(sig), "--private_key", str(key_files[0])
    )
    assert done.returncode == 0, done.stderr
    return model, sig


# ------------------------------------------------------ model_signing -> modelreg
def test_model_signing_key_signature_verifies_with_modelreg(tmp_path, key, key_files):
    model, sig = _signed_by_model_signing(tmp_path, key_files)
    result = verify_directory(model, sig, key_policy(key))
    assert result.ok, result.failures
    assert result.files == 4 and result.kind == "key" and result.model_name == "model"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda m: (m / "README.md").write_bytes(b"changed"), "README.md: content differs"),
        (lambda m: (m / "new.bin").write_bytes(b"added"), "new.bin: present but not signed"),
        (lambda m: (m / "config.json").unlink(), "config.json: signed but missing"),
        (
            lambda m: (m / "README.md").rename(m / "README.txt"),
            "README.txt: present but not signed",
        ),
    ],
    ids=["changed", "added", "removed", "renamed"],
)
def test_case10_directory_changed_after_signing(tmp_path, key, key_files, change, expected):
    model, sig = _signed_by_model_signing(tmp_path, key_files)
    change(model)
    result = verify_directory(model, sig, key_policy(key))
    assert not result.ok
    assert any(expected in f for f in result.failures), result.failures


def test_directory_signature_by_another_key_fails(tmp_path, other_key, key_files):
    model = write_model(tmp_path / "model")
    sig = model / "model.sig"  # inside the directory: ignored when hashing
    assert (
        model_signing(
            "sign", "key", str(model), "--signature", str(sig), "--private_key", str(key_files[0])
        ).returncode
        == 0
    )
    result = verify_directory(model, sig, key_policy(other_key))
    assert not result.ok and "not in the policy" in result.failures[0]


def test_shard_serialization_from_the_library(tmp_path, key, key_files):
    from model_signing import hashing, signing

    model = write_model(tmp_path / "model")
    sig = tmp_path / "model.sig"
    signing.Config().use_elliptic_key_signer(private_key=key_files[0]).set_hashing_config(
        hashing.Config().use_shard_serialization(shard_size=1000)
    ).sign(model, sig)
    assert verify_directory(model, sig, key_policy(key)).ok
    (model / "model.safetensors").write_bytes(b"x" * 2048)
    assert not verify_directory(model, sig, key_policy(key)).ok


# ------------------------------------------------------ modelreg -> model_signing
def test_modelreg_model_signature_verifies_with_model_signing(stored, key, key_files, tmp_path):
    result = sign(stored.target, stored.desc, KeySigner(key), name="team/tiny-llm")
    sig = tmp_path / "model.sig"
    sig.write_bytes(result.bundle_for(MODEL_SIGNING_PREDICATE))
    out = tmp_path / "pulled"
    stored.client.pull(stored.ref, out)
    done = model_signing(
        "verify", "key", str(out), "--signature", str(sig), "--public_key", str(key_files[1])
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # inside the pulled directory as model.sig (the name the statement ignores), library API
    from model_signing import verifying

    (out / "model.sig").write_bytes(sig.read_bytes())
    verifying.Config().use_elliptic_key_verifier(public_key=key_files[1]).verify(
        out, out / "model.sig"
    )
    # and modelreg's own directory verification agrees
    assert verify_directory(out, sig, key_policy(key)).ok
    (out / "README.md").write_bytes(b"tampered")
    assert (
        model_signing(
            "verify", "key", str(out), "--signature", str(sig), "--public_key", str(key_files[1])
        ).returncode
        != 0
    )


# -------------------------------------------------------------------- keyless
def test_keyless_interop_both_ways(stored, fake, tmp_path):
    with fake.serve() as server:
        trust_config = server.write_trust_config(tmp_path / "trust_config.json")
        trusted_root = server.write_trusted_root(tmp_path / "trusted_root.json")
        token = fake.identity_token(ALICE, ISSUER, email=ALICE)

        # modelreg signs keyless -> model_signing verifies the pulled directory
        with KeylessSigner(
            KeylessOptions(identity_token=token, trust_config=str(trust_config))
        ) as signer:
            result = sign(stored.target, stored.desc, signer, name="team/tiny-llm")
        sig = tmp_path / "modelreg.sig"
        sig.write_bytes(result.bundle_for(MODEL_SIGNING_PREDICATE))
        out = tmp_path / "pulled"
        stored.client.pull(stored.ref, out)
        done = model_signing(
            "verify",
            "sigstore",
            str(out),
            "--signature",
            str(sig),
            "--trust_config",
            str(trust_config),
            "--identity",
            ALICE,
            "--identity_provider",
            ISSUER,
        )
        assert done.returncode == 0, done.stdout + done.stderr

        # model_signing signs keyless -> modelreg verifies the directory
        model = write_model(tmp_path / "ms-model")
        theirs = tmp_path / "ms.sig"
        done = model_signing(
            "sign",
            "sigstore",
            str(model),
            "--signature",
            str(theirs),
            "--trust_config",
            str(trust_config),
            "--identity_token",
            token,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    outcome = verify_directory(model, theirs, keyless_policy(trusted_root))
    assert outcome.ok, outcome.failures
    assert (outcome.kind, outcome.signer, outcome.issuer) == ("keyless", ALICE, ISSUER)
    wrong = verify_directory(
        model, theirs, keyless_policy(trusted_root, identity="bob@example.com")
    )
    assert not wrong.ok


def test_directory_refuses_a_non_model_statement(stored, key, tmp_path):
    result = sign(stored.target, stored.desc, KeySigner(key), model_signature=False)
    sig = tmp_path / "cosign.sig"
    sig.write_bytes(result.bundles[0].bundle)
    outcome = verify_directory(stored.model_dir, sig, key_policy(key))
    assert not outcome.ok and "not a model signature" in outcome.failures[0]
    json.dumps(outcome.to_dict())


def test_symlinks_are_refused_unless_the_signature_allows_them(tmp_path, key, key_files):
    model, sig = _signed_by_model_signing(tmp_path, key_files)
    (model / "escape").symlink_to("/etc/hostname")
    result = verify_directory(model, sig, key_policy(key))
    assert not result.ok and "symbolic link" in result.failures[0]


def test_git_metadata_and_user_ignores(tmp_path, key, key_files):
    model, sig = _signed_by_model_signing(tmp_path, key_files)
    (model / ".git").mkdir()
    (model / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (model / "notes.txt").write_text("local notes")
    assert not verify_directory(model, sig, key_policy(key)).ok
    assert verify_directory(model, sig, key_policy(key), ignore_paths=["notes.txt"]).ok
