"""Signing and verification of a pushed 4 GiB model, beside model_signing (issue 4).

modelreg signs the manifest (and derives the model-level statement from it): no
weight is re-read. model_signing hashes every file. Run:

    .venv/bin/python bench/sign_bench.py [--size-gib 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization as ser  # noqa: E402

from modelreg.client import Client, RemoteOptions  # noqa: E402
from modelreg.sign import KeySigner, generate_private_key, public_key_pem, sign  # noqa: E402
from modelreg.verify import KeyAuthority, VerificationPolicy, verify_reference  # noqa: E402
from tests.integration.registry_server import start_registry  # noqa: E402


def make_model(path: Path, size_gib: float) -> None:
    if path.exists():
        return
    path.mkdir(parents=True)
    shards = 4
    per_shard = int(size_gib * 1024**3) // shards
    block = 16 * 1024 * 1024
    for i in range(shards):
        with open(path / f"model-{i:05d}-of-{shards:05d}.safetensors", "wb") as f:
            for _ in range(per_shard // block):
                f.write(os.urandom(block))
    (path / "config.json").write_text('{"model_type":"llama"}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gib", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = ROOT / "bench" / "_work" / "sign"
    work.mkdir(parents=True, exist_ok=True)
    os.environ["MODELREG_HOME"] = str(work / "home")
    os.environ["MODELREG_FSYNC"] = "0"
    model = work / f"model-{args.size_gib:g}g"
    make_model(model, args.size_gib)
    key = generate_private_key()
    key_file = work / "k.pem"
    key_file.write_bytes(
        key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    )
    with start_registry(work / "reg") as server, Client(RemoteOptions(fsync=False)) as client:
        ref = f"{server.host}/bench/signed:v1"
        client.push(model, ref)
        policy = VerificationPolicy(authorities=(KeyAuthority(public_key_pem(key.public_key())),))
        signs, verifies, peers = [], [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            _, target, desc = client.resolve(ref)
            sign(target, desc, KeySigner(key))
            signs.append(time.perf_counter() - t)
            t = time.perf_counter()
            assert verify_reference(client, ref, policy).result.ok
            verifies.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "model_signing",
                    "sign",
                    "key",
                    str(model),
                    "--signature",
                    str(work / "ms.sig"),
                    "--private_key",
                    str(key_file),
                ],
                check=True,
                capture_output=True,
            )
            peers.append(time.perf_counter() - t)
    s, v, m = (statistics.median(x) for x in (signs, verifies, peers))
    print(f"| modelreg sign (key; cosign + model-level bundles) | {s * 1000:.0f} ms |")
    print(f"| model_signing sign key, same files | {m:.2f} s |")
    print(f"| ratio | {s / m:.3f}x (target <= 0.1x) |")
    print(f"| modelreg verify of the manifest graph | {v * 1000:.0f} ms (target <= 1 s) |")


if __name__ == "__main__":
    main()
