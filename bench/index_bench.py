#!/usr/bin/env python3
"""Chunk index by default (issue 17 item 1): what it costs a push, what it saves a read.

    .venv/bin/python bench/index_bench.py --size-gib 1 --rounds 3 [--record bench/RESULTS.md]

A fresh loopback Distribution registry for every timed run, the synthetic ``v1`` model of
``bench/make_models.py`` (64 F16 tensors; written under ``bench/_work/index/``).
Each round runs, in rotating order (paired runs: the machine is shared), each a
separate process, cold (fresh ``MODELREG_HOME``, so no cached digest):

* ``curl PUT``: the weights file in one monolithic PUT (upload URL and digest
  prepared untimed), the registry's single-stream ceiling;
* ``modelreg push`` with no flags at all (chunk index on, built in the digest pass);
* ``modelreg push --no-chunk-index``, for the cost of the index alone.

``--src DIR`` runs modelreg from a snapshot of the sources (e.g. ``git archive
HEAD | tar -x -C DIR`` plus a ``DIR/modelreg_cli -> cli`` link) instead of the
working tree, so that a colleague's half-finished edit cannot break a long run.

Then, on the model pushed with no flags, a fresh process opens it through a
counting proxy (``tests/integration/lazy_proxy.py``) with an empty cache and
reads one tensor in the middle (``tensor(name, raw=True)``): every body byte the
registry sent for the open and the read is counted (manifest, index, header,
chunks), against the tensor's size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(ROOT))

import make_models  # noqa: E402
from _common import compile_sources, fresh_registry, publish, upload_url  # noqa: E402
from lazy_bench import write_v1  # noqa: E402

WORK = BENCH_DIR / "_work" / "index"
MODELREG = ROOT / ".venv" / "bin" / "modelreg"
MIB = 1024 * 1024
TOOLS = ("curl PUT", "modelreg push", "modelreg push --no-chunk-index")

_READ_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[4] + "/tests/integration")
sys.path.insert(0, sys.argv[4])
from lazy_proxy import LazyProxy
import modelreg
from modelreg.client import RemoteOptions
port, repo, scratch = int(sys.argv[1]), sys.argv[2], sys.argv[3]
opts = RemoteOptions(plain_http=True, store=scratch + "/store", fsync=False)
with LazyProxy(port, "pass") as proxy:
    t0 = time.perf_counter()
    with modelreg.open(f"{proxy.host}/{repo}", options=opts, chunk_cache=False) as h:
        opened = proxy.blob_bytes()
        names = [t.name for t in h.tensors()]
        name = names[len(names) // 2]
        ref = h.tensor_ref(name)
        listed = proxy.blob_bytes()
        arr = h.tensor(name, raw=True)
        assert arr.nbytes == ref.nbytes
        notes = list(h.notes)
        indexed = h.index is not None
    wall = time.perf_counter() - t0
    total = sum(e.body_bytes for e in proxy.log if e.method == "GET")
    ranged = all(e.range for e in proxy.blob_requests() if e.body_bytes > 1024 * 1024)
print(json.dumps({"tensor": name, "nbytes": ref.nbytes, "all_get_bytes": total,
                  "blob_bytes": proxy.blob_bytes(), "open_blob_bytes": opened,
                  "listed_blob_bytes": listed, "wall": wall, "indexed": indexed,
                  "ranged": ranged, "notes": notes}))
"""


SRC: Path = ROOT


def modelreg_cmd() -> list[str]:
    if SRC == ROOT:
        return [str(MODELREG)]
    runner = (
        f"import sys; sys.path.insert(0, {str(SRC)!r}); from modelreg_cli.main import run; run()"
    )
    return [sys.executable, "-c", runner]


def run_tool(
    tool: str, model: Path, host: str, base: str, rnd: int, digest: str
) -> tuple[float, float]:
    """(wall, CPU seconds of the client process: user + system)."""
    if tool == "curl PUT":
        url = upload_url(base, f"bench/idx-curl-{rnd}", digest)
        cmd = ["curl", "-sS", "-f", "-T", str(model / make_models.WEIGHTS), "-o", "/dev/null"]
        cmd += ["-H", "Content-Type: application/octet-stream", url]
        env = dict(os.environ)
        home = None
    else:
        home = Path(tempfile.mkdtemp(dir=WORK, prefix="home-"))
        env = {**os.environ, "MODELREG_HOME": str(home)}
        tag = "noidx" if "--no-chunk-index" in tool else "idx"
        cmd = [*modelreg_cmd(), "push", str(model), f"{host}/bench/{tag}-{rnd}:v1", "--json"]
        cmd += ["--quiet"] if "--no-chunk-index" not in tool else ["--quiet", "--no-chunk-index"]
    subprocess.run(["sync"], check=False)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"{tool} failed: {proc.stderr[-2000:]}")
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--record", type=Path, default=None, help="append the table to this file")
    ap.add_argument("--src", type=Path, default=ROOT, help="run modelreg from this source tree")
    args = ap.parse_args(argv)
    global SRC
    SRC = args.src.resolve()
    compile_sources(SRC)
    WORK.mkdir(parents=True, exist_ok=True)
    model = write_v1(WORK / "models", args.size_gib)
    weights = model / make_models.WEIGHTS
    size = weights.stat().st_size
    digest = "sha256:" + make_models.sha256_file(weights)
    reg_dir = WORK / "registry"
    walls: dict[str, list[float]] = {t: [] for t in TOOLS}
    cpus: dict[str, list[float]] = {t: [] for t in TOOLS}
    for rnd in range(args.rounds):
        order = TOOLS[rnd % 3 :] + TOOLS[: rnd % 3]
        for tool in order:
            # a registry of its own per run: the same blob sent again is slower to accept
            with fresh_registry(reg_dir) as server:
                wall, cpu = run_tool(tool, model, server.host, server.url, rnd, digest)
            walls[tool].append(wall)
            cpus[tool].append(cpu)
            load = os.getloadavg()[0]
            print(
                f"round {rnd + 1} {tool}: {wall:.2f} s, client CPU {cpu:.2f} s, load {load:.1f}",
                file=sys.stderr,
            )
    with fresh_registry(reg_dir) as server:
        run_tool("modelreg push", model, server.host, server.url, 0, digest)  # untimed
        with tempfile.TemporaryDirectory(dir=WORK, prefix="read-") as scratch:
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _READ_CHILD,
                    str(server.port),
                    "bench/idx-0:v1",
                    scratch,
                    str(SRC),
                ],
                check=True,
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
        read: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    med = {t: statistics.median(walls[t]) for t in TOOLS}
    curl = med["curl PUT"]
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} vCPU (shared with other engineers' "
        f"tests), Python {platform.python_version()}; model {size / 2**30:.2f} GiB safetensors "
        f"(64 F16 tensors of {size / 64 / MIB:.0f} MiB); a fresh loopback Distribution "
        "registry per run; "
        f"{args.rounds} rounds, each round every command once in rotating order (paired runs), "
        "each a fresh process, modelreg with an empty MODELREG_HOME (cold digests); medians.",
        "",
        "| command | wall (s) | each round (s) | vs curl PUT | client CPU (s) |",
        "|---|---:|---|---:|---:|",
    ]
    for t in TOOLS:
        rounds = ", ".join(f"{w:.2f}" for w in walls[t])
        cpu_med = statistics.median(cpus[t])
        lines.append(f"| {t} | {med[t]:.2f} | {rounds} | {med[t] / curl:.2f}x | {cpu_med:.2f} |")
    paired = [a / b for a, b in zip(walls[TOOLS[1]], walls[TOOLS[2]], strict=True)]
    lines.append("")
    lines.append(
        "Paired ratio, push with the index / push without it, per round: "
        + ", ".join(f"{p:.2f}" for p in paired)
        + f" (median {statistics.median(paired):.2f})."
    )
    n = read["nbytes"]
    bound = 1.1 * n + MIB
    lines += [
        "",
        f"Read of tensor `{read['tensor']}` ({n / MIB:.0f} MiB) through `modelreg.open` on the "
        "model pushed with no flags, empty cache, through the counting proxy: "
        f"{read['all_get_bytes']:,} bytes of GET bodies in all (manifest, index, header, chunks; "
        f"blobs {read['blob_bytes']:,}: {read['open_blob_bytes']:,} at open, "
        f"{read['listed_blob_bytes'] - read['open_blob_bytes']:,} listing the tensors), "
        f"{read['all_get_bytes'] / n:.3f}x the tensor, in {read['wall']:.2f} s; "
        f"indexed: {read['indexed']}, big GETs all ranged: {read['ranged']}.",
        "",
        f"- {'PASS' if med['modelreg push'] <= 1.1 * curl else 'FAIL'}: cold push with the "
        f"index ≤ 1.1x curl PUT: {med['modelreg push'] / curl:.2f}x "
        f"(without the index {med['modelreg push --no-chunk-index'] / curl:.2f}x)",
        f"- {'PASS' if read['all_get_bytes'] <= bound else 'FAIL'}: one tensor ≤ 1.1x its size "
        f"+ 1 MiB: {read['all_get_bytes']:,} ≤ {bound:,.0f}",
    ]
    publish("\n".join(lines) + "\n", args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
