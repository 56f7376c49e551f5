"""`modelreg verify --key` with 1 vs 200 signature referrers on one digest (issue 13).

The same small model is pushed to two repositories of one local Distribution registry
(2.8: no referrers API, so the tag-schema fallback index) and signed once with a key by
`modelreg sign --key`; the second repository then gets 199 more signatures by 199 other
keys, all *newer* than the real one (so newest-first alone would not find it). Each
round times `modelreg verify REF --key PUB` as a whole process on both, alternating,
and prints medians and the pairwise ratio (target: <= 2x).

    .venv/bin/python bench/referrer_flood_bench.py [--runs 10] [--flood 199]
    .venv/bin/python bench/referrer_flood_bench.py --hold   # set up, print the two
        # commands and their environment, keep the registry up until stdin closes
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import compile_sources  # noqa: E402

from modelreg.client import Client, RemoteOptions  # noqa: E402
from modelreg.sign import KeySigner, generate_private_key, sign  # noqa: E402
from tests.integration.registry_server import start_registry  # noqa: E402

MODELREG = str(ROOT / ".venv" / "bin" / "modelreg")
PASSWORD = "bench passphrase"


def make_model(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text('{"model_type":"llama"}')
    (path / "model.safetensors").write_bytes(os.urandom(1024 * 1024))


def run(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--flood", type=int, default=199, help="extra signatures (default 199)")
    parser.add_argument("--hold", action="store_true", help="set up, print commands, wait")
    args = parser.parse_args()
    compile_sources(ROOT)
    work = ROOT / "bench" / "_work" / "referrer-flood"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ, MODELREG_HOME=str(work / "home"), MODELREG_KEY_PASSWORD=PASSWORD)
    os.environ.update(env)
    model = work / "model"
    make_model(model)
    key = work / "cosign.key"
    subprocess.run(
        [MODELREG, "keygen", "--output-key-file", str(key)],
        env=env,
        check=True,
        capture_output=True,
    )
    pub = key.with_suffix(".pub")
    with start_registry(work / "registry") as server, Client(RemoteOptions()) as client:
        one, many = (f"{server.host}/flood/{name}:v1" for name in ("one", "many"))
        for ref in (one, many):
            client.push(model, ref)
            subprocess.run(
                [MODELREG, "sign", ref, "--key", str(key), "--no-model-signature"],
                env={**env, "SOURCE_DATE_EPOCH": "1767225600"},  # 2026-01-01: older than the flood
                check=True,
                capture_output=True,
            )
        _, target, desc = client.resolve(many)
        t = time.perf_counter()
        for _ in range(args.flood):
            sign(target, desc, KeySigner(generate_private_key()), model_signature=False)
        setup = time.perf_counter() - t
        listed = len(target.referrers(desc))
        commands = {
            name: [MODELREG, "verify", ref, "--key", str(pub)]
            for name, ref in (("one", one), ("many", many))
        }
        print(
            f"registry {server.host}; {listed} referrers on {desc.digest} in flood/many "
            f"({args.flood} pushed in {setup:.1f} s)"
        )
        if args.hold:
            print(f"MODELREG_HOME={env['MODELREG_HOME']}")
            for name, cmd in commands.items():
                print(f"{name}: {shlex.join(cmd)}", flush=True)
            sys.stdin.read()
            return
        times: dict[str, list[float]] = {"one": [], "many": []}
        ratios = []
        run(commands["one"], env)  # warm-up: imports, page cache
        for i in range(args.runs):
            order = ("one", "many") if i % 2 == 0 else ("many", "one")
            pair = {name: run(commands[name], env) for name in order}
            for name, value in pair.items():
                times[name].append(value)
            ratios.append(pair["many"] / pair["one"])
    one_med, many_med = (statistics.median(times[k]) for k in ("one", "many"))
    print(f"| referrers on the digest | verify wall, median of {args.runs} |")
    print("|---|---|")
    print(f"| 1 | {one_med * 1000:.0f} ms |")
    print(f"| {args.flood + 1} | {many_med * 1000:.0f} ms |")
    print(
        f"| ratio ({args.flood + 1} / 1), median of pairs | {statistics.median(ratios):.2f}x "
        "(target <= 2x) |"
    )


if __name__ == "__main__":
    main()
