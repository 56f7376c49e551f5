#!/usr/bin/env python3
"""Generate the golden signatures in ``testdata/golden/sign/``, deterministically.

    python testdata/make_golden.py [--out testdata/golden/sign]

Golden files freeze what a release of modelreg wrote, so that later releases
keep verifying them (SECURITY.md case 20). Regenerate them only when the format
deliberately changes, and keep the old directory next to the new one.

What is generated (no network, no randomness):

* ``model/``: three small files, and ``manifest.json``/``config.json``: their
  ModelPack manifest (one raw layer per file);
* ``cosign.pub``: the public half of a key derived from a fixed seed (the
  private key is not written); key-based bundles signed with RFC 6979
  deterministic ECDSA;
* ``trusted_root.json``: the trust root of the tests' private Sigstore
  (``tests/integration/sigstore_fixtures.py``, seeded): a Fulcio-like CA, a CT
  log key and a Rekor-like log key; keyless bundles with certificates,
  embedded SCTs, inclusion proofs, checkpoints and signed entry timestamps,
  all made at fixed times;
* ``bundles/*.json`` and ``referrers/*.json``: each bundle and the cosign v3
  referrer manifest that stores it (subject = the model manifest);
* ``legacy/``: a legacy cosign ``.sig`` manifest (simple-signing payload);
* ``expected.json``: what verification must report.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from modelreg.attest.keys import ecdsa_for  # noqa: E402
from modelreg.attest.storage import ANN_COSIGN_SIGNATURE, COSIGN_SIMPLESIGNING  # noqa: E402
from modelreg.oci import mediatypes as mt  # noqa: E402
from modelreg.oci.descriptor import Descriptor  # noqa: E402
from modelreg.oci.manifest import Manifest, canonical_json, empty_config  # noqa: E402
from modelreg.sign import (  # noqa: E402
    COSIGN_SIGN_PREDICATE,
    MODEL_SIGNING_PREDICATE,
    SLSA_PROVENANCE_V1,
    TRAINING_LINEAGE_PREDICATE,
    KeySigner,
    Statement,
    Subject,
    bundle_referrer,
    cosign_sign_statement,
    model_statement,
    public_key_pem,
)
from tests.integration.sigstore_fixtures import FakeSigstore  # noqa: E402

SEED = 20250101
CREATED = "2025-01-01T00:00:00Z"
SIGNED_AT = dt.datetime(2025, 1, 1, 0, 0, 0, tzinfo=dt.UTC)
ISSUER = "https://oidc.modelreg.test"
IDENTITY = "https://github.com/acme/models/.github/workflows/release.yml@refs/tags/v1"
REPOSITORY = "registry.modelreg.test/acme/tiny"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def model_files() -> dict[str, bytes]:
    header = json.dumps(
        {
            "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
            "__metadata__": {"format": "pt"},
        },
        separators=(",", ":"),
    ).encode()
    header += b" " * (-len(header) % 8)
    tensor = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)
    return {
        "config.json": b'{"architectures":["TinyForCausalLM"],"model_type":"tiny"}\n',
        "model.safetensors": struct.pack("<Q", len(header)) + header + tensor,
        "tokenizer/vocab.txt": b"<s>\n</s>\nhello\nworld\n",
    }


def build_manifest(files: dict[str, bytes]) -> tuple[Manifest, bytes]:
    roles = {
        "config.json": "weight.config",
        "model.safetensors": "weight",
        "tokenizer/vocab.txt": "weight.config",
    }
    layers = []
    for path in sorted(files, key=lambda p: (p != "model.safetensors", p)):
        meta = json.dumps(
            {
                "name": Path(path).name,
                "mode": 420,
                "uid": 0,
                "gid": 0,
                "size": len(files[path]),
                "mtime": "1970-01-01T00:00:00Z",
                "typeflag": 48,
            },
            separators=(",", ":"),
        )
        layers.append(
            Descriptor.for_bytes(
                mt.model_layer(roles[path]),
                files[path],
                annotations={mt.ANN_FILEPATH: path, mt.ANN_FILE_METADATA: meta, mt.ANN_TITLE: path},
            )
        )
    config = canonical_json(
        {
            "descriptor": {"name": "tiny", "version": "1.0"},
            "config": {"format": "safetensors"},
            "modelfs": {"type": "layers", "diffIds": [str(layer.digest) for layer in layers]},
        }
    )
    manifest = Manifest(
        config=Descriptor.for_bytes(mt.MODEL_CONFIG, config),
        layers=tuple(layers),
        artifact_type=mt.MODEL_ARTIFACT,
    )
    return manifest, config


def derived_key(label: str) -> ec.EllipticCurvePrivateKey:
    digest = hashlib.sha256(f"modelreg-golden/{SEED}/{label}".encode()).digest()
    return ec.derive_private_key(
        int.from_bytes(digest, "big") % (P256_ORDER - 1) + 1, ec.SECP256R1()
    )


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("model", "bundles", "referrers", "legacy"):
        (out / sub).mkdir(exist_ok=True)
    files = model_files()
    for rel, data in files.items():
        (out / "model" / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / "model" / rel).write_bytes(data)
    manifest, config = build_manifest(files)
    (out / "manifest.json").write_bytes(manifest.raw)
    (out / "config.json").write_bytes(config)
    subject = manifest.descriptor()
    digest = manifest.digest

    key = derived_key("release-key")
    (out / "cosign.pub").write_bytes(public_key_pem(key.public_key()))
    signer = KeySigner(key, deterministic=True)
    fake = FakeSigstore(seed=SEED)
    fake.write_trusted_root(out / "trusted_root.json", "https://rekor.modelreg.test")

    sign_stmt = cosign_sign_statement(digest, REPOSITORY)
    model_stmt = model_statement(manifest, REPOSITORY)
    slsa_stmt = Statement(
        (Subject(REPOSITORY, {"sha256": digest.hex}),),
        SLSA_PROVENANCE_V1,
        {
            "buildDefinition": {
                "buildType": "https://modelreg.dev/buildtypes/local/v1",
                "externalParameters": {"source": f"{REPOSITORY}@{digest}"},
                "internalParameters": {},
                "resolvedDependencies": [],
            },
            "runDetails": {
                "builder": {"id": "https://modelreg.dev/builders/local/golden"},
                "metadata": {
                    "invocationId": "urn:uuid:00000000-0000-4000-8000-000000000000",
                    "startedOn": CREATED,
                    "finishedOn": CREATED,
                },
            },
        },
    )
    lineage_stmt = Statement(
        (Subject(REPOSITORY, {"sha256": digest.hex}),),
        TRAINING_LINEAGE_PREDICATE,
        {
            "baseModel": {"name": "tiny-base", "digest": {"sha256": "ab" * 32}},
            "datasets": [
                {"name": "golden-corpus", "digest": {"sha256": "cd" * 32}, "split": "train"}
            ],
            "hyperparameters": {"learning_rate": 0.0001, "epochs": 1},
            "evaluations": [{"name": "perplexity", "metrics": {"ppl": 12.5}}],
        },
    )
    bundles: dict[str, tuple[str, bytes]] = {
        "key-sign": (COSIGN_SIGN_PREDICATE, signer.sign(sign_stmt)),
        "key-model": (MODEL_SIGNING_PREDICATE, signer.sign(model_stmt)),
        "key-slsa": (SLSA_PROVENANCE_V1, signer.sign(slsa_stmt)),
    }
    for i, (name, stmt) in enumerate(
        (
            ("keyless-sign", sign_stmt),
            ("keyless-model", model_stmt),
            ("keyless-lineage", lineage_stmt),
        )
    ):
        at = SIGNED_AT + dt.timedelta(minutes=i)
        bundles[name] = (
            stmt.predicate_type,
            fake.keyless_bundle(
                stmt.raw, IDENTITY, ISSUER, signed_at=at, signing_key=fake.key(f"ephemeral/{name}")
            ),
        )
    for name, (predicate_type, bundle) in bundles.items():
        (out / "bundles" / f"{name}.json").write_bytes(bundle)
        referrer, _ = bundle_referrer(
            subject, bundle, predicate_type=predicate_type, created=CREATED
        )
        (out / "referrers" / f"{name}.json").write_bytes(referrer.raw)

    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": REPOSITORY},
                "image": {"docker-manifest-digest": str(digest)},
                "type": "cosign container image signature",
            },
            "optional": None,
        },
        separators=(",", ":"),
    ).encode()
    signature = key.sign(payload, ecdsa_for(key.public_key(), deterministic=True))
    layer = Descriptor.for_bytes(
        COSIGN_SIMPLESIGNING,
        payload,
        annotations={ANN_COSIGN_SIGNATURE: base64.b64encode(signature).decode()},
    )
    legacy = Manifest(config=empty_config(), layers=(layer,))
    (out / "legacy" / "payload.json").write_bytes(payload)
    (out / "legacy" / "manifest.json").write_bytes(legacy.raw)

    expected = {
        "digest": str(digest),
        "repository": REPOSITORY,
        "keylessIdentity": IDENTITY,
        "keylessIssuer": ISSUER,
        "bundles": {name: predicate for name, (predicate, _) in bundles.items()},
        "legacySigTag": f"sha256-{digest.hex}.sig",
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
    (out / "README.md").write_text("# Golden signatures\n\n" + (__doc__ or "").strip() + "\n")
    sums = sorted(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(out).as_posix()}"
        for p in out.rglob("*")
        if p.is_file() and p.name != "SHA256SUMS"
    )
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "golden" / "sign"
    )
    args = parser.parse_args()
    generate(args.out)
    print(f"golden signatures written to {args.out}")


if __name__ == "__main__":
    main()
