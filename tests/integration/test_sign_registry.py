"""Issue 4 end to end against real Distribution registries (2.8: no referrers API,
so every referrer goes through the tag-schema fallback), keys and keyless (the
tests' private Sigstore on loopback), with the network blocked except loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from modelreg_cli.main import app
from modelreg_cli.sign_cmds import register
from typer.testing import CliRunner

from modelreg.client import Client, RemoteOptions
from modelreg.content.layout import LayoutStore
from modelreg.sign import (
    COSIGN_SIGN_PREDICATE,
    MODEL_SIGNING_PREDICATE,
    SLSA_PROVENANCE_V1,
    KeylessOptions,
    KeylessSigner,
    KeySigner,
    attest,
    generate_private_key,
    iter_bundles,
    public_key_pem,
    sign,
    slsa_provenance,
)
from modelreg.verify import (
    ArtifactVerificationError,
    KeyAuthority,
    KeylessAuthority,
    VerificationPolicy,
    verify_artifact,
    verify_before_pull,
    verify_reference,
)
from tests.integration.helpers import llm_dir
from tests.integration.sigstore_fixtures import block_network
from tests.interop.peers import model_signing
from tests.unit.signing_fixtures import keyless_trust_flags

register(app)
runner = CliRunner()
ISSUER = "https://oidc.modelreg.test"
ALICE = "alice@example.com"
PASSWORD = {"MODELREG_KEY_PASSWORD": "integration passphrase"}


@pytest.fixture
def model(tmp_path) -> Path:
    return llm_dir(tmp_path / "tiny-llm", 256 * 1024 + 3)


@pytest.fixture
def sigstore(fake, tmp_path):
    with fake.serving(tmp_path) as served:
        yield served


def key_policy(*keys, threshold=1, required=()):
    return VerificationPolicy(
        authorities=tuple(
            KeyAuthority(public_key_pem(k.public_key()), f"key{i}") for i, k in enumerate(keys)
        ),
        threshold=threshold,
        required_attestations=tuple(required),
    )


def run(*args, env=None):
    return runner.invoke(app, list(args), env=env)


def ok(*args, env=None) -> dict:
    done = run(*args, "--json", env=env)
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


# --------------------------------------------------------------------- keys
def test_key_sign_attest_verify_round_trip(registry_plain, model, monkeypatch):
    ref = f"{registry_plain.host}/sign/keys:v1"
    key, second, third = generate_private_key(), generate_private_key(), generate_private_key()
    with Client() as client:
        client.push(model, ref)
        _, target, desc = client.resolve(ref)
        for k in (key, second):
            sign(target, desc, KeySigner(k), name=f"{registry_plain.host}/sign/keys")
        attest(target, desc, KeySigner(key), SLSA_PROVENANCE_V1, slsa_provenance(environ={}))
        # registry 2.8 has no referrers API: the fallback index at tag sha256-<hex> lists them
        assert f"sha256-{desc.digest.hex}" in client.tags(f"{registry_plain.host}/sign/keys")
        stored = [b for b in iter_bundles(target, desc) if not isinstance(b, tuple)]
        assert len(stored) == 5

        attempts = block_network(monkeypatch)
        result = verify_artifact(
            target,
            desc,
            key_policy(key, second, third, threshold=2, required=(SLSA_PROVENANCE_V1,)),
        )
        assert result.ok, result.failures
        assert result.authorities_satisfied == 2
        assert {a.predicate_type for a in result.attestations} == {
            MODEL_SIGNING_PREDICATE,
            SLSA_PROVENANCE_V1,
        }
        three = verify_artifact(target, desc, key_policy(key, second, third, threshold=3))
        assert not three.ok and "2 of the required 3" in three.failures[0]
        assert attempts == []


def test_cli_round_trip_on_tls_registry_with_basic_auth(
    registry_tls_basic, model, tmp_path, monkeypatch
):
    monkeypatch.setenv("DOCKER_CONFIG", str(registry_tls_basic.docker_config(tmp_path).parent))
    ca = str(registry_tls_basic.ca_file)
    ref = f"{registry_tls_basic.host}/sign/tls:v1"
    ok("push", str(model), ref, "--ca-file", ca)
    key = tmp_path / "cosign.key"
    ok("keygen", "--output-key-file", str(key), env=PASSWORD)
    signed = ok("sign", ref, "--key", str(key), "--ca-file", ca, env=PASSWORD)
    ok("attest", ref, "--type", "scan", "--key", str(key), "--ca-file", ca, env=PASSWORD)
    verified = ok(
        "verify",
        ref,
        "--key",
        str(tmp_path / "cosign.pub"),
        "--require-attestation",
        "scan",
        "--ca-file",
        ca,
    )
    assert verified["ok"] and verified["digest"] == signed["digest"]
    scan = next(a for a in verified["attestations"] if a["predicateType"].endswith("model-scan/v1"))
    assert scan["predicate"]["result"] == "passed"
    tree = ok("referrers", ref, "--ca-file", ca)
    signed_rows = [r for r in tree["referrers"] if r["predicateType"] is not None]
    assert len(tree["referrers"]) == len(signed_rows) + 1  # and the chunk index
    assert sorted(r["predicateType"] for r in signed_rows) == sorted(
        [
            COSIGN_SIGN_PREDICATE,
            MODEL_SIGNING_PREDICATE,
            "https://modelreg.dev/attestations/model-scan/v1",
        ]
    )


def test_token_auth_registry(registry_token, model, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(registry_token.docker_config(tmp_path).parent))
    ref = f"{registry_token.host}/sign/token:v1"
    key = generate_private_key()
    with Client() as client:
        client.push(model, ref)
        _, target, desc = client.resolve(ref)
        sign(target, desc, KeySigner(key))
        assert verify_reference(client, ref, key_policy(key)).result.ok


# ------------------------------------------------------------------ keyless
def test_keyless_round_trip_offline_verification(
    registry_plain, model, fake, sigstore, monkeypatch
):
    _, trust_config, trusted_root = sigstore
    ref = f"{registry_plain.host}/sign/keyless:v1"
    token = fake.identity_token(ALICE, ISSUER, email=ALICE)
    with Client() as client:
        client.push(model, ref)
        _, target, desc = client.resolve(ref)
        with KeylessSigner(
            KeylessOptions(identity_token=token, trust_config=str(trust_config))
        ) as signer:
            sign(target, desc, signer)
            attest(target, desc, signer, SLSA_PROVENANCE_V1, slsa_provenance(environ={}))
    attempts = block_network(monkeypatch)
    policy = VerificationPolicy(
        authorities=(KeylessAuthority(issuer=ISSUER, identity_regexp=r"[a-z]+@example\.com"),),
        required_attestations=(SLSA_PROVENANCE_V1, MODEL_SIGNING_PREDICATE),
        trusted_root=str(trusted_root),
    )
    with Client() as client:
        verified = verify_reference(client, ref, policy)
    assert verified.result.ok, verified.result.failures
    assert verified.result.signatures[0].signer == ALICE
    assert attempts == []


def test_cli_keyless_sign_and_verify(registry_plain, model, fake, sigstore):
    _, trust_config, trusted_root = sigstore
    ref = f"{registry_plain.host}/sign/keyless-cli:v1"
    ok("push", str(model), ref)
    env = {"SIGSTORE_ID_TOKEN": fake.identity_token(ALICE, ISSUER, email=ALICE)}
    ok("sign", ref, "--keyless", "--trust-config", str(trust_config), env=env)
    verified = ok("verify", ref, *keyless_trust_flags(trusted_root, ALICE, ISSUER), "--offline")
    assert verified["ok"]
    wrong = run("verify", ref, *keyless_trust_flags(trusted_root, "mallory@example.com", ISSUER))
    assert wrong.exit_code == 7


# ---------------------------------------------------------- copy, pull, interop
def test_cp_recursive_carries_signatures(registry_plain, registry_factory, model, tmp_path):
    other = registry_factory()
    key = generate_private_key()
    src = f"{registry_plain.host}/sign/copy-src:v1"
    with Client() as client:
        client.push(model, src)
        _, target, desc = client.resolve(src)
        sign(target, desc, KeySigner(key))
        attest(target, desc, KeySigner(key), SLSA_PROVENANCE_V1, slsa_provenance(environ={}))
        policy = key_policy(key, required=(SLSA_PROVENANCE_V1,))
        for dst in (
            f"{registry_plain.host}/sign/copy-dst:v1",  # another repository, same registry
            f"{other.host}/sign/copied:v1",  # another registry
            f"oci:{tmp_path / 'layout'}:v1",  # an OCI layout
        ):
            result = client.copy(src, dst, recursive=True)
            assert len(result.referrers) == 3 + 1, dst  # and the chunk index
            verified = verify_reference(client, dst, policy)
            assert verified.result.ok, (dst, verified.result.failures)
            assert verified.descriptor.digest == desc.digest
        plain = client.copy(src, f"{other.host}/sign/unsigned-copy:v1")
        assert plain.referrers == []
        assert not verify_reference(client, f"{other.host}/sign/unsigned-copy:v1", policy).result.ok
    assert LayoutStore(tmp_path / "layout", create=False).entries()


def test_pull_with_verification(registry_plain, model, tmp_path):
    ref = f"{registry_plain.host}/sign/pull:v1"
    key, stranger = generate_private_key(), generate_private_key()
    with Client() as client:
        client.push(model, ref)
        _, target, desc = client.resolve(ref)
        sign(target, desc, KeySigner(key))
        out = tmp_path / "refused"
        with pytest.raises(ArtifactVerificationError):
            verify_before_pull(client, ref, out, key_policy(stranger))
        assert not out.exists()
        result, pulled = verify_before_pull(client, ref, tmp_path / "out", key_policy(key))
    assert result.ok and pulled.digest == str(desc.digest)
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (
        model / "model.safetensors"
    ).read_bytes()


def test_model_signing_verifies_what_modelreg_signed_in_the_registry(
    registry_plain, model, tmp_path
):
    import model_signing as _installed  # noqa: F401  (fail loudly if absent)

    ref = f"{registry_plain.host}/sign/interop:v1"
    key_file = tmp_path / "cosign.key"
    ok("push", str(model), ref)
    ok("keygen", "--output-key-file", str(key_file), env={"MODELREG_KEY_PASSWORD": ""})
    ok("sign", ref, "--key", str(key_file), env={"MODELREG_KEY_PASSWORD": ""})
    out = tmp_path / "pulled"
    ok("pull", ref, "-o", str(out))
    ok("referrers", ref, "--save-model-signature", str(out / "model.sig"))
    done = model_signing(
        "verify",
        "key",
        str(out),
        "--signature",
        str(out / "model.sig"),
        "--public_key",
        str(tmp_path / "cosign.pub"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # and modelreg verifies the directory signed by model_signing
    theirs = tmp_path / "theirs.sig"
    done = model_signing(
        "sign", "key", str(model), "--signature", str(theirs), "--private_key", str(key_file)
    )
    assert done.returncode == 0, done.stderr
    ok("verify", str(model), "--signature", str(theirs), "--key", str(tmp_path / "cosign.pub"))


def test_verification_that_cannot_run_fails_closed(registry_factory, model, tmp_path):
    server = registry_factory()
    ref = f"{server.host}/sign/gone:v1"
    key = generate_private_key()
    with Client(RemoteOptions()) as client:
        client.push(model, ref)
        _, target, desc = client.resolve(ref)
        sign(target, desc, KeySigner(key))
    assert server.process is not None
    server.process.terminate()
    server.process.wait(10)
    done = run("verify", ref, "--key", str(_write_pub(tmp_path, key)))
    assert done.exit_code == 6, done.output  # could not run: registry unreachable, not "verified"


def _write_pub(tmp_path: Path, key) -> Path:
    path = tmp_path / "k.pub"
    path.write_bytes(public_key_pem(key.public_key()))
    return path
