#!/usr/bin/env python3
"""Many-file models (issue 18): push and pull of thousands of 1-64 KiB files.

    .venv/bin/python bench/many_files_bench.py --files 1000,5000,20000 --rounds 3 \\
        [--thresholds 1MiB] [--store] [--record bench/RESULTS.md]

One fresh loopback Distribution registry; models are directories of ``N`` files of
1-64 KiB of random bytes over 7 top directories (deterministic, written under
``bench/_work/many/``). Each round runs, in rotating order (paired runs: the
machine is shared), each in a separate process, cold (fresh ``MODELREG_HOME``):

* ``tar + curl PUT``: ``tar -cf`` of the directory, then one monolithic curl PUT of
  the tar (upload URL prepared untimed): the floor any packer can reach;
* ``modelreg push --pack-small T`` for each threshold ``T`` (``0`` = one layer per
  file, only for N ≤ 5,000: above, that is refused);
* ``curl GET + untar``: the tar blob fetched and extracted (``curl | tar -x``);
* ``modelreg pull`` of the model pushed with the first threshold;
* with ``--store``: ``modelreg push`` into the embedded store (no registry).

With ``--mixed``: a model of 4 GiB of weights (one file) and 5,000 small files;
``modelreg push`` of it (cold: the weights are hashed while they are sent) against
one curl PUT of the weights file alone (digest and upload URL prepared untimed), in
alternating order. The model is deleted afterwards (``--files ''`` runs only this).

Then, once per N on the first threshold: ``modelreg inspect`` against one curl GET
of the manifest + one of the config, and a push after changing one file (bytes
sent, blobs and manifest / model bytes). Wall and client CPU (user + system, from
``wait4``) are medians; peak RSS is the maximum of the client process (Linux counts the forking
bench process's own peak, about 60-90 MB, as a floor: it is never below that).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH_DIR))

from _common import compile_sources, fresh_registry, upload_url  # noqa: E402
from registry_server import start_registry  # type: ignore[import-not-found]  # noqa: E402

from modelreg.units import parse_size  # noqa: E402

WORK = BENCH_DIR / "_work" / "many"
MODELREG = str(ROOT / ".venv" / "bin" / "modelreg")
KIB = 1024
_INSPECT_CHILD = r"""
import json, statistics, sys, time, urllib.request
from modelreg.client import Client, RemoteOptions
ref, base = sys.argv[1], sys.argv[2]
repo, tag = ref.split("/", 1)[1].rsplit(":", 1)
accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
def gets():
    with urllib.request.urlopen(urllib.request.Request(
            f"{base}/v2/{repo}/manifests/{tag}", headers=accept)) as r:
        config = json.loads(r.read())["config"]["digest"]
    with urllib.request.urlopen(f"{base}/v2/{repo}/blobs/{config}") as r:
        r.read()
with Client(RemoteOptions(plain_http=True)) as c:
    c.inspect(ref)
    gets()
    a, b = [], []
    for _ in range(21):  # milliseconds each: enough samples for a steady median
        t0 = time.perf_counter(); c.inspect(ref); a.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); gets(); b.append(time.perf_counter() - t0)
print(json.dumps([statistics.median(a), statistics.median(b)]))
"""


def make_dir(count: int, high: int = 64 * KIB) -> Path:
    """``count`` files of 1-64 KiB (uniform), or 1 KiB-``high`` (log-uniform) when
    ``high`` is larger: the mix a threshold choice is about."""
    root = WORK / f"files-{count}" if high == 64 * KIB else WORK / f"files-{count}-{high}"
    marker = root / ".complete"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(count)
    for i in range(count):
        path = root / f"part{i % 7}" / f"sub{i % 11}" / f"f{i:06d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        if high == 64 * KIB:
            size = rng.randint(KIB, 64 * KIB)
        else:
            size = int(KIB * (high / KIB) ** rng.random())
        path.write_bytes(rng.randbytes(size))
    marker.write_text("")
    return root


def run(cmd: list[str], env: dict[str, str] | None = None, shell: bool = False) -> dict[str, Any]:
    """Wall, CPU (user + system) and peak RSS (MiB) of one process; its stdout.

    The page cache is written back first (``sync``, as ``index_bench.py`` does): a run
    that follows 20,000 files written by the one before would otherwise pay for that
    writeback, in wall time and in system time."""
    subprocess.run(["sync"], check=False)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, shell=shell)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{cmd if not shell else cmd[0]} failed: {err.read()[-2000:]!r}")
        out.seek(0)
        stdout = out.read().decode()
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss": usage.ru_maxrss / 1024,
        "stdout": stdout,
    }


def home_env() -> tuple[dict[str, str], Path]:
    home = Path(tempfile.mkdtemp(dir=WORK, prefix="home-"))
    return {**os.environ, "MODELREG_HOME": str(home)}, home


def tar_put(model: Path, base: str, tag: str) -> dict[str, Any]:
    tar = WORK / f"{tag}.tar"
    packed = run(["tar", "-cf", str(tar), "-C", str(model), "."])
    with open(tar, "rb") as f:  # streamed: children inherit this process's peak RSS
        digest = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
    url = upload_url(base, f"bench/tar-{tag}", digest)
    put = run(["curl", "-sS", "-f", "-T", str(tar), "-o", "/dev/null", url])
    tar.unlink()
    return {
        "wall": packed["wall"] + put["wall"],
        "cpu": packed["cpu"] + put["cpu"],
        "rss": max(packed["rss"], put["rss"]),
        "digest": digest,
    }


def get_untar(base: str, tag: str, digest: str) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(dir=WORK, prefix="untar-"))
    url = f"{base}/v2/bench/tar-{tag}/blobs/{digest}"
    res = run([f"curl -sS -f {url} | tar -x -C {out}"], shell=True)
    shutil.rmtree(out, ignore_errors=True)
    return res


def modelreg_push(model: Path, ref: str, threshold: str) -> dict[str, Any]:
    env, home = home_env()
    res = run([MODELREG, "push", str(model), ref, "--json", "--pack-small", threshold], env=env)
    shutil.rmtree(home, ignore_errors=True)
    res["result"] = json.loads(res["stdout"])
    return res


def modelreg_pull(ref: str) -> dict[str, Any]:
    env, home = home_env()
    out = Path(tempfile.mkdtemp(dir=WORK, prefix="pull-"))
    res = run([MODELREG, "pull", ref, "-o", str(out / "m"), "--json", "--quiet"], env=env)
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return res


def once_per_size(model: Path, host: str, base: str, threshold: str, count: int) -> dict[str, Any]:
    """inspect vs manifest + config GETs; bytes sent after changing one file."""
    ref = f"{host}/bench/many-{count}:once"
    first = modelreg_push(model, ref, threshold)["result"]
    env, home = home_env()
    # in one process, after a warm-up call: the CLI's start-up (about 1 s of imports)
    # is not what inspect costs
    timed = run([sys.executable, "-c", _INSPECT_CHILD, ref, base], env=env)
    inspect_s, gets_s = json.loads(timed["stdout"])
    shutil.rmtree(home, ignore_errors=True)
    victim = sorted(model.rglob("*.json"))[len(sorted(model.rglob("*.json"))) // 2]
    original = victim.read_bytes()
    try:
        victim.write_bytes(bytes([original[0] ^ 1]) + original[1:])
        changed = modelreg_push(model, f"{host}/bench/many-{count}:changed", threshold)
        # blobs (bytesSent) and the manifest, which is sent again whole (it holds the
        # member tables of the groups)
        sent = changed["result"]["bytesSent"] + changed["result"]["size"]
    finally:
        victim.write_bytes(original)
        pass
    total = sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
    return {
        "layers": first["layers"],
        "inspect": inspect_s,
        "gets": gets_s,
        "changed_sent": sent,
        "total": total,
    }


def bench_size(args: argparse.Namespace, count: int, host: str, base: str) -> list[str]:
    model = make_dir(count, args.max_size)
    (model / ".complete").unlink()  # not part of the model
    thresholds = [t for t in args.thresholds if t != "0" or count <= 5000]
    tools = ["tar + curl PUT", *(f"push {t}" for t in thresholds), "curl GET + untar", "pull"]
    if args.store:
        tools.append("push (store)")
    stats: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
    for rnd in range(args.rounds):
        order = tools[rnd % len(tools) :] + tools[: rnd % len(tools)]
        tag = f"{count}-{rnd}"
        digest = None
        pushed = False  # the first threshold's push of this round (pull reads it)
        for tool in order:
            if tool == "tar + curl PUT":
                res = tar_put(model, base, tag)
                digest = res["digest"]
            elif tool.startswith("push ") and tool != "push (store)":
                t = tool.split()[1]
                res = modelreg_push(model, f"{host}/bench/many-{count}-{t.lower()}:r{rnd}", t)
                pushed = pushed or t == thresholds[0]
            elif tool == "push (store)":
                res = modelreg_push(model, f"bench/many-{count}:r{rnd}", thresholds[0])
            elif tool == "curl GET + untar":
                if digest is None:  # its tar is pushed first in this round
                    digest = tar_put(model, base, tag)["digest"]
                res = get_untar(base, tag, digest)
            else:
                ref = f"{host}/bench/many-{count}-{thresholds[0].lower()}:r{rnd}"
                if not pushed:  # untimed: pull comes first in this round's order
                    modelreg_push(model, ref, thresholds[0])
                    pushed = True
                res = modelreg_pull(ref)
            stats[tool].append(res)
    once = once_per_size(model, host, base, thresholds[0], count)
    (model / ".complete").write_text("")
    rows = []
    floor_push = statistics.median(r["wall"] for r in stats["tar + curl PUT"])
    floor_pull = statistics.median(r["wall"] for r in stats["curl GET + untar"])
    for tool in tools:
        runs = stats[tool]
        wall = statistics.median(r["wall"] for r in runs)
        floor = floor_pull if tool in ("curl GET + untar", "pull") else floor_push
        layers = runs[0]["result"]["layers"] if "result" in runs[0] else ""
        rows.append(
            f"| {count:,} | {tool} | {wall:.2f} s | {wall / floor:.2f}x | "
            f"{statistics.median(r['cpu'] for r in runs):.2f} s | "
            f"{max(r['rss'] for r in runs):.0f} MB | {layers} |"
        )
    rows.append(
        f"| {count:,} | inspect ({once['layers']} layers) | {once['inspect']:.3f} s | "
        f"{once['inspect'] / once['gets']:.1f}x manifest+config GET ({once['gets']:.3f} s) | | | |"
    )
    rows.append(
        f"| {count:,} | push after changing one file | "
        f"{once['changed_sent']:,} B sent (blobs + manifest) | "
        f"{100 * once['changed_sent'] / once['total']:.2f}% of {once['total']:,} B | | | |"
    )
    return rows


MIXED_WEIGHTS = 4 * 1024**3


def make_mixed() -> Path:
    """4 GiB of weights and the 5,000-file set (hard links), under ``WORK/mixed``."""
    root = WORK / "mixed"
    shutil.rmtree(root, ignore_errors=True)
    small = make_dir(5000)
    for src in small.rglob("*.json"):
        dst = root / src.relative_to(small)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(src, dst)
    block = os.urandom(64 * 1024 * 1024)
    with open(root / "model.bin", "wb") as f:
        for i in range(MIXED_WEIGHTS // len(block)):
            f.write(i.to_bytes(8, "big") + block[8:])
    return root


def bench_mixed(rounds: int) -> list[str]:
    root = make_mixed()
    weights = root / "model.bin"
    try:
        with open(weights, "rb") as f:
            digest = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
        curl: list[dict[str, Any]] = []
        push: list[dict[str, Any]] = []
        sent = 0
        for rnd in range(rounds):
            order = ["curl", "push"] if rnd % 2 == 0 else ["push", "curl"]
            for tool in order:
                # a registry of its own per run: the same blob sent again is slower to accept
                with fresh_registry(WORK / "registry-mixed") as server:
                    if tool == "curl":
                        url = upload_url(server.url, f"bench/weights-{rnd}", digest)
                        curl.append(
                            run(["curl", "-sS", "-f", "-T", str(weights), "-o", "/dev/null", url])
                        )
                    else:
                        res = modelreg_push(root, f"{server.host}/bench/mixed-{rnd}:v1", "1MiB")
                        sent = res["result"]["bytesSent"]
                        push.append(res)
                last = (curl if tool == "curl" else push)[-1]
                print(
                    f"mixed round {rnd + 1} {tool}: {last['wall']:.2f} s, CPU {last['cpu']:.2f} s, "
                    f"load {os.getloadavg()[0]:.1f}",
                    file=sys.stderr,
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    floor = statistics.median(r["wall"] for r in curl)
    wall = statistics.median(r["wall"] for r in push)
    layers = push[0]["result"]["layers"]
    return [
        f"| mixed | curl PUT of the 4 GiB weights alone | {floor:.2f} s | 1.00x | "
        f"{statistics.median(r['cpu'] for r in curl):.2f} s | "
        f"{max(r['rss'] for r in curl):.0f} MB | |",
        f"| mixed | push 4 GiB weights + 5,000 files ({sent:,} B sent) | {wall:.2f} s | "
        f"{wall / floor:.2f}x | {statistics.median(r['cpu'] for r in push):.2f} s | "
        f"{max(r['rss'] for r in push):.0f} MB | {layers} |",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", default="1000,5000,20000")
    ap.add_argument("--thresholds", default="1MiB", help="comma-separated; 0 = no grouping")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--max-size", default="64KiB", help="files of 1 KiB to this (log-uniform above 64KiB)"
    )
    ap.add_argument("--store", action="store_true", help="also push into the embedded store")
    ap.add_argument("--record", type=Path, default=None, help="append the table to this file")
    ap.add_argument(
        "--mixed", action="store_true", help="also 4 GiB of weights + 5,000 small files"
    )
    args = ap.parse_args(argv)
    compile_sources(ROOT)
    args.thresholds = args.thresholds.split(",")
    args.max_size = parse_size(args.max_size)
    WORK.mkdir(parents=True, exist_ok=True)
    reg_dir = WORK / "registry"
    shutil.rmtree(reg_dir, ignore_errors=True)
    lines = [
        f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{args.rounds} rounds, medians; files of 1 KiB-{args.max_size // KIB:,} KiB over 7 "
        "top directories",
        "",
        "| files | what | wall | vs floor | client CPU | peak RSS | layers |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    with start_registry(reg_dir) as server:
        host = server.host
        base = f"http://{host}"
        for count in (int(c) for c in args.files.split(",") if c):
            lines += bench_size(args, count, host, base)
            print("\n".join(lines), flush=True)
    if args.mixed:
        lines += bench_mixed(args.rounds)
    table = "\n".join(lines)
    print(table)
    if args.record is not None:
        with open(args.record, "a") as f:
            f.write(table + "\n")
    for stray in WORK.glob("home-*"):
        shutil.rmtree(stray, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
