"""The keygen / sign / attest / verify / referrers commands, end to end on the
embedded local store (no registry) and against the tests' private Sigstore."""

from __future__ import annotations

import json
import stat

import pytest
from modelreg_cli.main import app
from modelreg_cli.sign_cmds import register
from typer.testing import CliRunner

from tests.unit.signing_fixtures import (
    ALICE,
    ISSUER,
    keyless_trust_flags,
    sign_keyless_with_cli,
    write_model,
)

register(app)  # what main.py does (idempotent)
runner = CliRunner()
PASSWORD = {"MODELREG_KEY_PASSWORD": "correct horse battery"}


def run(*args, env=None):
    return runner.invoke(app, list(args), env=env)


@pytest.fixture
def keys(tmp_path):
    key = tmp_path / "cosign.key"
    done = run("keygen", "--output-key-file", str(key), "--json", env=PASSWORD)
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["encrypted"] is True and doc["publicKey"] == str(tmp_path / "cosign.pub")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    return key, tmp_path / "cosign.pub"


@pytest.fixture
def pushed(tmp_path):
    model = write_model(tmp_path / "tiny-llm")
    done = run("push", str(model), "team/tiny-llm:v1", "--json")
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)["digest"], model


def test_keygen_refuses_to_overwrite_and_needs_a_passphrase(keys, tmp_path):
    key, _ = keys
    again = run("keygen", "--output-key-file", str(key), env=PASSWORD)
    assert again.exit_code == 2 and "already exists" in again.output
    no_tty = run("keygen", "--output-key-file", str(tmp_path / "x.key"))
    assert no_tty.exit_code == 2 and "passphrase" in no_tty.output


def test_sign_attest_verify_referrers_with_keys(keys, pushed, tmp_path):
    key, pub = keys
    digest, _ = pushed
    signed = run(
        "sign",
        "team/tiny-llm:v1",
        "--key",
        str(key),
        "--json",
        "--output-signature",
        str(tmp_path / "model.sig"),
        env=PASSWORD,
    )
    assert signed.exit_code == 0, signed.output
    doc = json.loads(signed.stdout)
    assert doc["digest"] == digest and doc["reference"].endswith("@" + digest)
    assert len(doc["referrers"]) == 2
    attested = run("attest", "team/tiny-llm:v1", "--type", "slsa", "--key", str(key), env=PASSWORD)
    assert attested.exit_code == 0, attested.output
    lineage = tmp_path / "lineage.json"
    lineage.write_text(json.dumps({"baseModel": {"name": "base", "digest": {"sha256": "a" * 64}}}))
    attested = run(
        "attest",
        "team/tiny-llm:v1",
        "--type",
        "training-lineage",
        "--predicate",
        str(lineage),
        "--key",
        str(key),
        env=PASSWORD,
    )
    assert attested.exit_code == 0, attested.output

    verified = run(
        "verify",
        "team/tiny-llm:v1",
        "--key",
        str(pub),
        "--require-attestation",
        "slsa",
        "--require-attestation",
        "lineage",
        "--json",
    )
    assert verified.exit_code == 0, verified.output
    vdoc = json.loads(verified.stdout)
    assert vdoc["ok"] and vdoc["digest"] == digest
    assert {a["predicateType"] for a in vdoc["attestations"]} == {
        "https://model_signing/signature/v1.0",
        "https://slsa.dev/provenance/v1",
        "https://modelreg.dev/attestations/training-lineage/v1",
    }
    text = run("verify", "team/tiny-llm:v1", "--key", str(pub))
    assert text.exit_code == 0 and "verified" in text.stdout and digest in text.stdout

    tree = run(
        "referrers",
        "team/tiny-llm:v1",
        "--json",
        "--save-model-signature",
        str(tmp_path / "saved.sig"),
    )
    assert tree.exit_code == 0, tree.output
    rows = json.loads(tree.stdout)["referrers"]
    assert len(rows) == 4 + 1  # and the chunk index push writes by default
    assert "application/vnd.modelreg.chunk-index.v1" in json.dumps(rows)
    assert (tmp_path / "saved.sig").read_bytes() == (tmp_path / "model.sig").read_bytes()
    assert run("referrers", "team/tiny-llm:v1").exit_code == 0

    # the pulled directory verifies against the model-level signature
    out = tmp_path / "out"
    assert run("pull", "team/tiny-llm:v1", "-o", str(out)).exit_code == 0
    dir_ok = run(
        "verify", str(out), "--signature", str(tmp_path / "model.sig"), "--key", str(pub), "--json"
    )
    assert dir_ok.exit_code == 0, dir_ok.output
    assert json.loads(dir_ok.stdout)["files"] == 4
    (out / "README.md").write_text("changed")
    dir_bad = run("verify", str(out), "--signature", str(tmp_path / "model.sig"), "--key", str(pub))
    assert dir_bad.exit_code == 7 and "content differs" in dir_bad.stdout


def test_verify_fails_with_exit_7_and_says_why(keys, pushed, tmp_path):
    _, pub = keys
    other = tmp_path / "other.key"
    assert run("keygen", "--output-key-file", str(other), env=PASSWORD).exit_code == 0
    assert run("sign", "team/tiny-llm:v1", "--key", str(other), env=PASSWORD).exit_code == 0
    failed = run("verify", "team/tiny-llm:v1", "--key", str(pub), "--json")
    assert failed.exit_code == 7
    doc = json.loads(failed.stdout)
    assert doc["ok"] is False and "threshold not met" in doc["failures"][0]
    text = run("verify", "team/tiny-llm:v1", "--key", str(pub))
    assert text.exit_code == 7 and "NOT verified" in text.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["sign", "team/tiny-llm:v1"], 2, "--key FILE or --keyless"),
        (["verify", "team/tiny-llm:v1"], 2, "nothing to verify against"),
        (["verify", "team/tiny-llm:v1", "--certificate-identity", "a@b"], 2, "OIDC issuer"),
        (["attest", "team/tiny-llm:v1", "--type", "nonsense", "--key", "k"], 2, "alias"),
        (
            ["attest", "team/tiny-llm:v1", "--type", "https://x.dev/p", "--key", "KEY"],
            2,
            "--predicate",
        ),
        (["verify", "team/nothing:v1", "--key", "PUB"], 3, "not found"),
    ],
)
def test_usage_errors(keys, pushed, args, code, message):
    key, pub = keys
    args = [str(key) if a == "KEY" else str(pub) if a == "PUB" else a for a in args]
    done = run(*args, env=PASSWORD)
    assert done.exit_code == code, done.output
    assert message in done.output


def test_keyless_sign_and_verify_from_the_cli(pushed, fake, tmp_path):
    signed, token, trusted_root = sign_keyless_with_cli(
        run, fake, tmp_path, "team/tiny-llm:v1", "--json"
    )
    assert signed.exit_code == 0, signed.output
    assert token not in signed.output
    assert json.loads(signed.stdout)["signer"] == ALICE
    verified = run("verify", "team/tiny-llm:v1", *keyless_trust_flags(trusted_root), "--json")
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["signatures"][0]["signer"] == ALICE
    regexp = run(
        "verify",
        "team/tiny-llm:v1",
        "--identity-regexp",
        r"alice@example\.com",
        "--certificate-oidc-issuer",
        ISSUER,
        "--trusted-root",
        str(trusted_root),
    )
    assert regexp.exit_code == 0, regexp.output
    wrong = run(
        "verify",
        "team/tiny-llm:v1",
        "--identity-regexp",
        r"alice",
        "--certificate-oidc-issuer",
        ISSUER,
        "--trusted-root",
        str(trusted_root),
    )
    assert wrong.exit_code == 7
