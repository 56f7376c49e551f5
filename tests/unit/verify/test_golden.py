"""SECURITY.md case 20: signatures written by an earlier release keep verifying.

The files in ``testdata/golden/sign/`` are frozen (made by
``testdata/make_golden.py``); this test loads them as a registry would serve
them (manifest, referrer manifests, bundles, legacy tag) and verifies them with
today's code, key-based and keyless, with the network blocked.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from modelreg.content.base import bytes_source
from modelreg.content.memory import MemoryTarget
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import Manifest, empty_config
from modelreg.sign import MODEL_SIGNING_PREDICATE, SLSA_PROVENANCE_V1, TRAINING_LINEAGE_PREDICATE
from modelreg.verify import (
    KeyAuthority,
    KeylessAuthority,
    VerificationPolicy,
    verify_artifact,
    verify_directory,
)

GOLDEN = Path(__file__).resolve().parents[3] / "testdata" / "golden" / "sign"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())


def _push_manifest(target: MemoryTarget, raw: bytes, tag: str | None = None) -> Descriptor:
    desc = Descriptor(mt.OCI_MANIFEST, Digest.from_bytes(raw), len(raw))
    target.push_manifest(desc, raw, tag)
    return desc


@pytest.fixture(scope="module")
def served() -> tuple[MemoryTarget, Descriptor]:
    target = MemoryTarget()
    manifest_raw = (GOLDEN / "manifest.json").read_bytes()
    manifest = Manifest.parse(manifest_raw)
    target.push(manifest.config, bytes_source((GOLDEN / "config.json").read_bytes()))
    for layer in manifest.layers:
        data = (GOLDEN / "model" / layer.annotations[mt.ANN_FILEPATH]).read_bytes()
        target.push(layer, bytes_source(data))
    subject = _push_manifest(target, manifest_raw, "v1")
    target.push(empty_config(), bytes_source(b"{}"))
    for name in EXPECTED["bundles"]:
        referrer = Manifest.parse((GOLDEN / "referrers" / f"{name}.json").read_bytes())
        target.push(
            referrer.layers[0], bytes_source((GOLDEN / "bundles" / f"{name}.json").read_bytes())
        )
        _push_manifest(target, referrer.raw)
    legacy = Manifest.parse((GOLDEN / "legacy" / "manifest.json").read_bytes())
    target.push(legacy.layers[0], bytes_source((GOLDEN / "legacy" / "payload.json").read_bytes()))
    _push_manifest(target, legacy.raw, EXPECTED["legacySigTag"])
    return target, subject


def test_golden_files_are_intact():
    for line in (GOLDEN / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        assert hashlib.sha256((GOLDEN / name).read_bytes()).hexdigest() == digest, name


def key_authority() -> KeyAuthority:
    return KeyAuthority((GOLDEN / "cosign.pub").read_bytes(), name="golden")


def keyless_authority() -> KeylessAuthority:
    return KeylessAuthority(issuer=EXPECTED["keylessIssuer"], identity=EXPECTED["keylessIdentity"])


def test_golden_key_bundles_verify(served, no_network):
    target, subject = served
    assert str(subject.digest) == EXPECTED["digest"]
    result = verify_artifact(
        target,
        subject,
        VerificationPolicy(
            authorities=(key_authority(),),
            required_attestations=(MODEL_SIGNING_PREDICATE, SLSA_PROVENANCE_V1),
        ),
    )
    assert result.ok, result.failures
    # the bundle and the legacy cosign .sig both count (same key: one authority)
    assert len(result.signatures) == 2 and result.authorities_satisfied == 1
    assert no_network == []


def test_golden_keyless_bundles_verify_offline(served, no_network):
    target, subject = served
    result = verify_artifact(
        target,
        subject,
        VerificationPolicy(
            authorities=(keyless_authority(), key_authority()),
            threshold=2,
            required_attestations=(MODEL_SIGNING_PREDICATE, TRAINING_LINEAGE_PREDICATE),
            trusted_root=str(GOLDEN / "trusted_root.json"),
        ),
    )
    assert result.ok, result.failures
    keyless = [s for s in result.signatures if s.kind == "keyless"]
    assert [s.signer for s in keyless] == [EXPECTED["keylessIdentity"]]
    assert no_network == []


@pytest.mark.parametrize("bundle", ["key-model", "keyless-model"])
def test_golden_model_signature_verifies_the_directory(bundle):
    policy = VerificationPolicy(
        authorities=(key_authority(), keyless_authority()),
        trusted_root=str(GOLDEN / "trusted_root.json"),
    )
    result = verify_directory(GOLDEN / "model", GOLDEN / "bundles" / f"{bundle}.json", policy)
    assert result.ok, result.failures


def test_golden_key_model_signature_verifies_with_model_signing():
    from model_signing import verifying

    verifying.Config().use_elliptic_key_verifier(public_key=GOLDEN / "cosign.pub").verify(
        GOLDEN / "model", GOLDEN / "bundles" / "key-model.json"
    )


def test_make_golden_is_deterministic(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_golden", GOLDEN.parents[1] / "make_golden.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(tmp_path / "a")
    module.generate(tmp_path / "b")
    for path in sorted((tmp_path / "a").rglob("*")):
        if path.is_file():
            assert (
                path.read_bytes()
                == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()
            )
