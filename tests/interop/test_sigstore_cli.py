"""sigstore-python's own CLI verifies a keyless bundle modelreg wrote, offline, against
the tests' private Sigstore (``tests/integration/sigstore_fixtures.py``): ``python -m
sigstore --trust-config FILE verify identity sha256:<manifest digest> --bundle B
--offline``. The cosign statement's subject is the manifest digest, which is what the
CLI checks the DSSE subject against."""

from __future__ import annotations

import os
import sys

import pytest

from modelreg.client import Client
from modelreg.sign import COSIGN_SIGN_PREDICATE, KeylessOptions, KeylessSigner, sign
from tests.integration.sigstore_fixtures import FakeSigstore
from tests.interop.peers import ok, peer, write_tree

ISSUER = "https://oidc.modelreg.test"
ALICE = "alice@example.com"


@pytest.fixture(scope="module")
def fake() -> FakeSigstore:
    return FakeSigstore()


def test_sigstore_python_cli_verifies_a_modelreg_keyless_bundle(registry_plain, fake, tmp_path):
    model = write_tree(tmp_path / "model", {"config.json": b"{}", "w.bin": os.urandom(512)})
    ref = f"{registry_plain.host}/interop/sigstore-cli:v1"
    ok("push", str(model), ref)
    with fake.serve() as server:
        trust_config = server.write_trust_config(tmp_path / "trust_config.json")
        token = fake.identity_token(ALICE, ISSUER, email=ALICE)
        with (
            Client() as client,
            KeylessSigner(
                KeylessOptions(identity_token=token, trust_config=str(trust_config))
            ) as signer,
        ):
            _, target, desc = client.resolve(ref)
            result = sign(target, desc, signer, name=ref)
    bundle = tmp_path / "cosign.sigstore.json"
    bundle.write_bytes(result.bundle_for(COSIGN_SIGN_PREDICATE))

    def verify(identity: str) -> int:
        done = peer(
            sys.executable,
            "-m",
            "sigstore",
            "--trust-config",
            str(trust_config),
            "verify",
            "identity",
            str(desc.digest),
            "--bundle",
            str(bundle),
            "--offline",
            "--cert-identity",
            identity,
            "--cert-oidc-issuer",
            ISSUER,
        )
        if identity == ALICE:
            assert done.returncode == 0, done.stdout + done.stderr
        return done.returncode

    assert verify(ALICE) == 0
    assert verify("mallory@example.com") != 0
