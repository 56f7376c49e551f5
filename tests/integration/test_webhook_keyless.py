"""The shipped keyless policy, for real: sigstore keyless signatures (a private Fulcio +
Rekor from tests/integration/sigstore_fixtures.py), verified offline against its trusted
root by the webhook over HTTPS."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import modelreg.sign as sign_api
import tests.integration.sigstore_fixtures as fixtures
from modelreg.client import Client, RemoteOptions
from tests.integration.helpers import module_home
from tests.integration.test_webhook import Hook, make_model, start_hook
from tests.unit.webhook.reviews import pod_spec, review, workload

ROOT = Path(__file__).parents[2]
GHA = "https://token.actions.githubusercontent.com"
WORKFLOW = "https://github.com/acme/models/.github/workflows/release.yml"


@pytest.fixture(scope="module")
def keyless(
    registry_plain: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    with module_home(tmp_path_factory, "keyless") as tmp:
        fake = fixtures.FakeSigstore()
        host = registry_plain.host
        repo = f"kl{os.getpid()}"
        refs: dict[str, str] = {}
        with fake.serve() as server:
            trust_config = server.write_trust_config(tmp / "trust_config.json")
            trusted_root = server.write_trusted_root(tmp / "trusted_root.json")
            with Client(RemoteOptions(store=str(tmp / "store"), fsync=False)) as client:
                for name, identity in (
                    ("main", f"{WORKFLOW}@refs/heads/main"),
                    ("tag", f"{WORKFLOW}@refs/tags/v1.2.3"),
                    (
                        "fork",
                        "https://github.com/evil/models/.github/workflows/release.yml@refs/heads/main",
                    ),
                    ("branch", f"{WORKFLOW}@refs/heads/feature"),
                    ("prefix", f"{WORKFLOW}@refs/tags/v1.2.3-evil"),
                ):
                    ref = f"{host}/{repo}/{name}:v1"
                    client.push(
                        make_model(tmp / "src" / name, {"model.safetensors": os.urandom(700)}), ref
                    )
                    _, target, desc = client.resolve(ref)
                    token = fake.identity_token(identity, GHA)
                    options = sign_api.KeylessOptions(
                        identity_token=token, trust_config=str(trust_config)
                    )
                    with sign_api.KeylessSigner(options) as signer:
                        sign_api.sign(target, desc, signer)
                    refs[name] = ref
                # SLSA provenance, attested by the CI identity (the shipped slsa policy)
                main_identity = f"{WORKFLOW}@refs/heads/main"
                for name, git_ref, repository in (
                    ("attested/good", "refs/heads/main", "acme/models"),
                    ("attested/dev", "refs/heads/dev", "acme/models"),
                    ("attested/other-repo", "refs/heads/main", "evil/models"),
                ):
                    ref = f"{host}/{repo}/{name}:v1"
                    src = tmp / "src" / name.replace("/", "-")
                    client.push(make_model(src, {"model.safetensors": os.urandom(600)}), ref)
                    _, target, desc = client.resolve(ref)
                    predicate = sign_api.slsa_provenance(
                        environ={
                            "GITHUB_ACTIONS": "true",
                            "GITHUB_REPOSITORY": repository,
                            "GITHUB_REF": git_ref,
                            "GITHUB_SHA": "1" * 40,
                            "GITHUB_RUN_ID": "7",
                        }
                    )
                    token = fake.identity_token(main_identity, GHA)
                    options = sign_api.KeylessOptions(
                        identity_token=token, trust_config=str(trust_config)
                    )
                    with sign_api.KeylessSigner(options) as signer:
                        sign_api.sign(target, desc, signer)
                        sign_api.attest(
                            target, desc, signer, "https://slsa.dev/provenance/v1", predicate
                        )
                    refs[name] = ref
        # the shipped policies, with only the registry glob and the trusted root changed
        text = (ROOT / "policies" / "keyless-ci-identity.yaml").read_text()
        text = text.replace('"ghcr.io/acme/models/**"', f'"{host}/{repo}/**"')
        text = text.replace(
            "      threshold: 1", f"      trustedRoot: {trusted_root}\n      threshold: 1"
        )
        policy_dir = tmp / "policies"
        policy_dir.mkdir()
        (policy_dir / "keyless.yaml").write_text(text)
        slsa = (ROOT / "policies" / "slsa-provenance.yaml").read_text()
        slsa = slsa.replace('"ghcr.io/acme/**"', f'"{host}/{repo}/attested/**"')
        slsa = slsa.replace(
            "    signatures:\n      authorities:",
            f"    signatures:\n      trustedRoot: {trusted_root}\n      authorities:",
        )
        (policy_dir / "slsa.yaml").write_text(slsa)
        yield {"refs": refs, "policy_dir": policy_dir, "tmp": tmp}


@pytest.fixture(scope="module")
def hook(keyless: dict[str, Any]) -> Iterator[Hook]:
    h = start_hook(keyless["tmp"] / "hook", keyless["policy_dir"])
    yield h
    h.http.close()
    h.server.stop()


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("main", True),
        ("tag", True),
        ("fork", False),
        ("branch", False),
        ("prefix", False),
    ],
)
def test_keyless_identity_policy(
    hook: Hook, keyless: dict[str, Any], name: str, allowed: bool
) -> None:
    ref = keyless["refs"][name]
    resp = hook.validate(review(workload("Deployment", pod_spec([ref]))))
    assert resp["allowed"] is allowed, resp
    if not allowed:
        assert "policy keyless-from-ci: signatures" in resp["status"]["message"]


@pytest.mark.parametrize(
    ("name", "allowed", "why"),
    [
        ("attested/good", True, ""),
        ("attested/dev", False, "rego: built from refs/heads/dev, not main or a release tag"),
        ("attested/other-repo", False, "https://github.com/evil/models"),
    ],
)
def test_shipped_slsa_provenance_policy(
    hook: Hook, keyless: dict[str, Any], name: str, allowed: bool, why: str
) -> None:
    ref = keyless["refs"][name]
    resp = hook.validate(review(workload("Job", pod_spec([ref]))))
    assert resp["allowed"] is allowed, resp
    if why:
        assert "policy slsa-provenance-from-acme: attestations" in resp["status"]["message"]
        assert why in resp["status"]["message"]
