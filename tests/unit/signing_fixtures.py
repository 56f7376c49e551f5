"""Fixtures for the signing, verification and wire-format tests (``tests/unit/sign``,
``tests/unit/verify``, ``tests/unit/attest``): a local store holding a small model,
keys, a private Sigstore (no network), and a socket guard.

Each of those folders' ``conftest.py`` star-imports :data:`__all__` (the fixtures);
test modules import the helpers (``write_model``, ``key_policy``...) by name. The
isolation every test needs (home, XDG dirs, secrets cleared) is the root
``tests/conftest.py``'s, not repeated here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from modelreg.client import Client, RemoteOptions
from modelreg.content.base import Target
from modelreg.oci.descriptor import Descriptor
from modelreg.sign import generate_private_key, public_key_pem
from modelreg.verify import KeyAuthority, KeylessAuthority, VerificationPolicy
from tests.integration.sigstore_fixtures import FakeSigstore, block_network

ISSUER = "https://oidc.modelreg.test"
ALICE = "alice@example.com"


#: The fixtures, for ``from tests.unit.signing_fixtures import *`` in a conftest.
__all__ = ["client", "fake", "key", "no_network", "other_key", "stored", "trusted_root"]


def write_model(root: Path, files: dict[str, bytes] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    files = files or {
        "config.json": b'{"model_type": "llama"}',
        "model.safetensors": os.urandom(2048),
        "tokenizer/vocab.txt": b"a\nb\nc\n",
        "README.md": b"# tiny model\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@dataclass
class Stored:
    client: Client
    target: Target
    desc: Descriptor
    model_dir: Path
    ref: str

    def resolve(self, ref: str) -> tuple[Any, Target, Descriptor]:
        return self.client.resolve(ref)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    with Client(RemoteOptions(store=str(tmp_path / "store"), fsync=False)) as c:
        yield c


@pytest.fixture
def stored(client: Client, tmp_path: Path) -> Stored:
    model_dir = write_model(tmp_path / "tiny-llm")
    # no chunk index: these tests count signature referrers, and the index is one more
    client.push(model_dir, "team/tiny-llm:v1", chunk_index=False)
    _, target, desc = client.resolve("team/tiny-llm:v1")
    return Stored(client, target, desc, model_dir, "team/tiny-llm:v1")


@pytest.fixture
def key() -> Any:
    return generate_private_key()


@pytest.fixture
def other_key() -> Any:
    return generate_private_key()


def write_key_files(key: Any, directory: Path) -> tuple[Path, Path]:
    """``key`` as (unencrypted PKCS#8 private key, public key) files in ``directory``: the
    forms both modelreg and ``model_signing`` read."""
    priv, pub = directory / "signer.key", directory / "signer.pub"
    priv.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub.write_bytes(public_key_pem(key.public_key()))
    return priv, pub


def sign_keyless_with_cli(
    run: Callable[..., Any], fake: FakeSigstore, directory: Path, ref: str, *flags: str
) -> tuple[Any, str, Path]:
    """``sign REF --keyless`` through the CLI runner ``run``, as ALICE of ISSUER, with the
    private Sigstore serving: (the result, the OIDC token, the trusted root to verify
    against offline)."""
    with fake.serving(directory) as (_, trust_config, trusted_root):
        token = fake.identity_token(ALICE, ISSUER, email=ALICE)
        signed = run(
            "sign",
            ref,
            "--keyless",
            "--trust-config",
            str(trust_config),
            *flags,
            env={"SIGSTORE_ID_TOKEN": token},
        )
    return signed, token, trusted_root


def keyless_trust_flags(
    trusted_root: Path, identity: str = ALICE, issuer: str = ISSUER
) -> list[str]:
    """The CLI flags that trust ``identity`` from ``issuer``, offline against the
    ``trusted_root`` of the tests' private Sigstore."""
    return [
        "--certificate-identity",
        identity,
        "--certificate-oidc-issuer",
        issuer,
        "--trusted-root",
        str(trusted_root),
    ]


def key_policy(
    *keys: Any, threshold: int = 1, required: tuple[str, ...] = ()
) -> VerificationPolicy:
    return VerificationPolicy(
        authorities=tuple(
            KeyAuthority(public_key_pem(k.public_key()), name=f"key{i}") for i, k in enumerate(keys)
        ),
        threshold=threshold,
        required_attestations=required,
    )


@pytest.fixture(scope="session")
def fake() -> FakeSigstore:
    return FakeSigstore()


@pytest.fixture
def trusted_root(fake: FakeSigstore, tmp_path: Path) -> Path:
    return fake.write_trusted_root(tmp_path / "trusted_root.json")


def keyless_policy(
    trusted_root: Path,
    *,
    identity: str | None = ALICE,
    regexp: str | None = None,
    issuer: str = ISSUER,
    threshold: int = 1,
    required: tuple[str, ...] = (),
) -> VerificationPolicy:
    return VerificationPolicy(
        authorities=(KeylessAuthority(issuer=issuer, identity=identity, identity_regexp=regexp),),
        threshold=threshold,
        required_attestations=required,
        trusted_root=str(trusted_root),
        offline=True,
    )


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Refuse every non-loopback connection and DNS lookup; returns the attempts."""
    return block_network(monkeypatch)
