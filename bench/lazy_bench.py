#!/usr/bin/env python3
"""Lazy reads against a full pull, on the synthetic model (issue 6, "Done when").

    .venv/bin/python bench/lazy_bench.py --size-gib 4 --rounds 3

Starts a fresh Distribution registry under ``bench/_work/lazy/``, writes the
synthetic ``v1`` model there (``bench/make_models.py``'s generator, v1 only, in a
directory of its own so that ``bench/run.py`` is not disturbed), pushes it with a
chunk index (4 MiB chunks), then runs, in rotating order each round, each with a
fresh client and an empty cache:

* ``pull``: ``Client.pull`` into a directory (every byte verified, blobs cached,
  no fsync, like ``MODELREG_FSYNC=0``);
* ``list``: ``open_model`` + ``tensors()``: blob bytes beyond the manifest;
* ``tensor``: ``open_model`` + ``tensor(one 64 MiB tensor in the middle)``;
* ``sequential``: ``open_model`` + every file read start to end through
  ``handle.open()`` in 8 MiB reads (read-ahead on).

Bytes are the registry client's counters (blob bytes received). Medians of the
rounds; the targets of PERFORMANCE.md are checked under the table. ``--record
FILE`` appends the Markdown section to FILE (e.g. ``bench/RESULTS.md``).

``--load`` (issue 17) runs instead, same registry and model, paired in rotating
order each round, each command in a fresh process so that its peak RSS is its own:

* ``curl``: ``curl -o /dev/null`` of the weights blob (one stream);
* ``ranges``: plain concurrent Range GETs of the same blob, 4 threads, 16 MiB
  requests, ``http.client`` into one reused buffer, nothing verified;
* ``ranges+sha256``: the same, each thread hashing its 16 MiB in 4 MiB pieces after
  each request (what verifying costs on top: the floor of a verified read);
* ``ranges+blake3``: the same with BLAKE3, what chunk indexes use since they left
  SHA-256 (the floor of a verified read of a model pushed since);
* ``ranges→memory``: the plain Range GETs, each into its place in one fresh private
  anonymous mapping the size of the blob, nothing verified: the floor of any load
  that hands out arrays in fresh memory (it pays the page faults curl does not);
* ``lazy``: ``modelreg.open`` + 4 threads each reading a quarter of the weights
  file sequentially through ``handle.open()`` in 8 MiB reads (chunks verified);
* ``load``: ``modelreg.load(REF)`` (NumPy, every tensor, chunks verified);
* ``pull+load``: ``modelreg pull`` (fsync off) + ``safetensors.numpy.load_file``.

Each row reports wall time, the command's own CPU (user+sys), the registry's CPU
during the command (read from ``/proc``; on a 2-vCPU machine client and registry
compete for the same cores) and peak RSS. ``read`` is the wall of the transfer
alone: from after the imports (ranges) or after ``modelreg.open`` returned (lazy)
to the last byte; the throughput targets compare those, the whole-process walls
are shown beside them.

``--drop-caches`` (root only) drops the page cache before each command and reads
the blob once so the registry serves it from memory: with the page cache full of
earlier runs' files, the kernel reclaims it to satisfy a load's 4 GiB of fresh
memory, which tripled load's system time in one measurement (13 s against 3-4 s).
"""

from __future__ import annotations

import argparse
import datetime as dt
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import make_models  # noqa: E402
from _common import publish  # noqa: E402
from registry_server import start_registry  # noqa: E402

from modelreg.client import Client, RemoteOptions  # noqa: E402
from modelreg.copy import copy_graph  # noqa: E402
from modelreg.lazy import (  # noqa: E402
    chunk_index_annotations,
    open_model,
    push_chunk_index,
)
from modelreg.model.pack import pack_directory, scan_directory  # noqa: E402

WORK = BENCH_DIR / "_work" / "lazy"
MIB = 1024 * 1024


def write_v1(out: Path, size_gib: float) -> Path:
    """The v1 model of make_models (same bytes), without v2; reused when present."""
    vdir = out / "v1"
    rows = make_models.tensor_rows(size_gib)
    stamp = vdir / ".params"
    want = f"{make_models.FORMAT_VERSION}:{rows}"
    if stamp.is_file() and stamp.read_text() == want and (vdir / make_models.WEIGHTS).is_file():
        return vdir
    vdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    make_models.write_weights(vdir / make_models.WEIGHTS, rows, "v1")
    make_models.write_small(vdir / "config.json", make_models.config_json(rows, "v1"))
    make_models.write_small(vdir / "tokenizer.json", make_models.tokenizer_json())
    stamp.write_text(want)
    print(f"wrote v1 ({size_gib} GiB) in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return vdir


def client(store: Path) -> Client:
    return Client(RemoteOptions(plain_http=True, store=str(store), fsync=False))


def received(c: Client, host: str) -> int:
    return int(c.registry(host).stats.bytes_received)


def run_pull(ref: str, host: str, scratch: Path) -> dict[str, Any]:
    with client(scratch / "store") as c:
        t0 = time.perf_counter()
        result = c.pull(ref, scratch / "out")
        wall = time.perf_counter() - t0
        return {"wall": wall, "bytes": received(c, host), "fetched": result.bytes_fetched}


def run_list(ref: str, host: str, scratch: Path) -> dict[str, Any]:
    with client(scratch / "store") as c:
        t0 = time.perf_counter()
        with open_model(c, ref) as h:
            tensors = h.tensors()
            wall = time.perf_counter() - t0
            beyond = received(c, host) - h.descriptor.size
            return {"wall": wall, "bytes": beyond, "tensors": len(tensors)}


def run_tensor(ref: str, host: str, scratch: Path, name: str) -> dict[str, Any]:
    with client(scratch / "store") as c:
        t0 = time.perf_counter()
        with open_model(c, ref) as h:
            after_open = received(c, host)
            ref_t = h.tensor_ref(name)
            before = received(c, host)
            arr = h.tensor(name)
            wall = time.perf_counter() - t0
            index = h.index_descriptor.size if h.index_descriptor else 0
            return {
                "wall": wall,
                "bytes": received(c, host) - h.descriptor.size,
                "tensor_bytes": received(c, host) - before,
                "header_bytes": before - after_open,
                "index": index,
                "nbytes": ref_t.nbytes,
                "ok": arr.nbytes == ref_t.nbytes,
            }


def run_sequential(ref: str, host: str, scratch: Path) -> dict[str, Any]:
    with client(scratch / "store") as c:
        t0 = time.perf_counter()
        total = 0
        with open_model(c, ref) as h:
            buf = bytearray(8 * MIB)
            for f in h.files:
                with h.open(f.path, buffering=0) as fh:
                    while n := fh.readinto(buf):
                        total += n
            wall = time.perf_counter() - t0
            return {"wall": wall, "bytes": received(c, host), "read": total}


_CHILD = r"""
import json, resource, sys, threading, time
mode, ref, host, blob, size, scratch = sys.argv[1:7]
size = int(size)
t0 = time.perf_counter()
read_t0 = None
if mode in ("ranges", "ranges+sha256", "ranges+blake3", "ranges→memory"):
    import hashlib, http.client, mmap
    import blake3
    step, nxt, lock = 16 << 20, [0], threading.Lock()
    whole = None
    if mode == "ranges→memory":
        whole = memoryview(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))
    read_t0 = time.perf_counter()
    def worker():
        conn = http.client.HTTPConnection(host)
        buf = memoryview(bytearray(step)) if whole is None else None
        while True:
            with lock:
                off = nxt[0]; nxt[0] += step
            if off >= size:
                return
            end = min(off + step, size) - 1
            conn.request("GET", blob, headers={"Range": f"bytes={off}-{end}"})
            r = conn.getresponse()
            got = 0
            into = buf if whole is None else whole[off:]
            while got < end - off + 1:
                got += r.readinto(into[got : end - off + 1])
            r.read()
            if mode == "ranges+sha256":  # the floor of a verified read: hash 4 MiB pieces
                for p in range(0, got, 4 << 20):
                    hashlib.sha256(buf[p : min(p + (4 << 20), got)]).digest()
            elif mode == "ranges+blake3":
                for p in range(0, got, 4 << 20):
                    blake3.blake3(buf[p : min(p + (4 << 20), got)]).digest()
    ts = [threading.Thread(target=worker) for _ in range(4)]
    [t.start() for t in ts]; [t.join() for t in ts]
elif mode == "lazy":
    import modelreg
    from modelreg.client import RemoteOptions
    opts = RemoteOptions(plain_http=True, store=scratch + "/store", fsync=False)
    with modelreg.open(ref, options=opts, chunk_cache=False) as h:
        read_t0 = time.perf_counter()
        f = [x for x in h.files if x.path.endswith(".safetensors")][0]
        q = -(-f.size // 4)
        def reader(k):
            with h.open(f.path, buffering=0) as fh:
                fh.seek(k * q)
                buf = bytearray(8 << 20)
                left = min(q, f.size - k * q)
                while left > 0:
                    n = fh.readinto(memoryview(buf)[: min(len(buf), left)])
                    if not n:
                        break
                    left -= n
        ts = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
        [t.start() for t in ts]; [t.join() for t in ts]
elif mode == "load":
    import modelreg
    from modelreg.client import RemoteOptions
    opts = RemoteOptions(plain_http=True, store=scratch + "/store", fsync=False)
    out = modelreg.load(ref, options=opts)
    assert sum(a.nbytes for a in out.values()) > 0
elif mode == "pull+load":
    import modelreg
    from modelreg.client import RemoteOptions
    from safetensors.numpy import load_file
    opts = RemoteOptions(plain_http=True, store=scratch + "/store", fsync=False)
    modelreg.pull(ref, scratch + "/out", options=opts)
    out = load_file(scratch + "/out/model.safetensors")
    assert sum(a.nbytes for a in out.values()) > 0
end = time.perf_counter()
wall = end - t0
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": wall, "rss": ru.ru_maxrss * 1024, "cpu": ru.ru_utime + ru.ru_stime,
                  "sys": ru.ru_stime, "read": end - read_t0 if read_t0 is not None else wall}))
"""


def run_child(
    mode: str, ref: str, host: str, blob: str, size: int, scratch: Path
) -> dict[str, Any]:
    if mode == "curl":
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(["curl", "-sf", "-o", "/dev/null", f"http://{host}{blob}"], check=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        sys_time = after.ru_stime - before.ru_stime
        return {
            "wall": wall,
            "rss": 0,
            "cpu": after.ru_utime - before.ru_utime + sys_time,
            "sys": sys_time,
            "read": wall,
        }
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, ref, host, blob, str(size), str(scratch)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (from ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle_caches(host: str, blob: str) -> None:
    """Drop the page cache (root), then read the blob once so the registry serves it
    from memory as before, and import what the children import (their module files
    back in the cache): each command starts with the same free memory."""
    subprocess.run(["sync"], check=False)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    subprocess.run(["curl", "-sf", "-o", "/dev/null", f"http://{host}{blob}"], check=True)
    warm = "import modelreg, modelreg.client, modelreg.lazy, blake3, numpy, safetensors.numpy"
    subprocess.run([sys.executable, "-c", warm], check=True, cwd=ROOT)


LOAD_MODES = [
    "curl",
    "ranges",
    "ranges+sha256",
    "ranges+blake3",
    "ranges→memory",
    "lazy",
    "load",
    "pull+load",
]


def load_bench(args: argparse.Namespace, model: Path) -> int:
    reg_dir = WORK / "registry-load"
    shutil.rmtree(reg_dir, ignore_errors=True)
    modes = LOAD_MODES
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    weights = model / make_models.WEIGHTS
    size = weights.stat().st_size
    with start_registry(reg_dir) as server:
        host = server.host
        assert server.process is not None
        pid = server.process.pid
        ref = f"{host}/bench/load:v1"
        with client(WORK / "push-store-load") as c:
            pushed = c.push(model, ref)  # default flags
            with open_model(c, ref) as h:
                segments = h.model_file(make_models.WEIGHTS).segments
        if len(segments) != 1:
            raise SystemExit("the weights were pushed split: compare against one blob only")
        blob = f"/v2/bench/load/blobs/{segments[0].desc.digest}"
        for r in range(args.rounds):
            rotated = modes[r % len(modes) :] + modes[: r % len(modes)]
            for mode in rotated:
                if args.drop_caches:
                    settle_caches(host, blob)
                else:
                    subprocess.run(["sync"], check=False)
                with tempfile.TemporaryDirectory(dir=WORK, prefix="scratch-") as scratch:
                    before = process_cpu(pid)
                    row = run_child(mode, ref, host, blob, size, Path(scratch))
                    row["registry"] = process_cpu(pid) - before
                results[mode].append(row)
                print(f"round {r + 1} {mode}: {row}", file=sys.stderr)
        del pushed
    shutil.rmtree(reg_dir, ignore_errors=True)
    med = {key: {m: median(results[m], key) for m in modes} for key in results[modes[0]][0]}
    walls, reads, rss = med["wall"], med["read"], med["rss"]
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} vCPU (shared), "
        f"Python {platform.python_version()}; model {size / 2**30:.2f} GiB safetensors "
        f"(64 F16 tensors) pushed with default flags; {args.rounds} rounds, each round "
        "every command once in rotating order (paired runs), medians; each command a fresh "
        "process; loopback Distribution registry (its CPU in its own column); page cache "
        f"{'dropped and the blob re-read before each command' if args.drop_caches else 'as is'}; "
        f"load average at the end {os.getloadavg()[0]:.2f}.",
        "",
        "| command | wall (s) | read (s) | MiB/s (read) | CPU user+sys (s) | of which sys | "
        "registry CPU (s) | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in modes:
        peak = f"{rss[m] / 1e6:.0f}" if rss[m] else ""
        lines.append(
            f"| {m} | {walls[m]:.2f} | {reads[m]:.2f} | {size / reads[m] / MIB:.0f} | "
            f"{med['cpu'][m]:.2f} | {med['sys'][m]:.2f} | {med['registry'][m]:.2f} | {peak} |"
        )
    checks = [
        ("load ≤ 1.1x curl to /dev/null", walls["load"] / walls["curl"], 1.1, True),
        (
            "(context) Range GETs into fresh memory, nothing verified, vs curl",
            walls["ranges→memory"] / walls["curl"],
            1.1,
            True,
        ),
        (
            "(context) load vs Range GETs into fresh memory",
            walls["load"] / walls["ranges→memory"],
            1.1,
            True,
        ),
        ("load ≤ 0.5x pull + load_file", walls["load"] / walls["pull+load"], 0.5, True),
        (
            "lazy 4 threads ≥ 0.9x the throughput of plain Range GETs (read walls)",
            reads["ranges"] / reads["lazy"],
            0.9,
            False,
        ),
        (
            "(context) the same with whole-process walls (lazy's import and open included)",
            walls["ranges"] / walls["lazy"],
            0.9,
            False,
        ),
        (
            "(context) lazy 4 threads vs Range GETs + BLAKE3 (read walls)",
            reads["ranges+blake3"] / reads["lazy"],
            0.9,
            False,
        ),
    ]
    lines.append("")
    for text, value, bound, upper in checks:
        ok = value <= bound if upper else value >= bound
        lines.append(f"- {'PASS' if ok else 'FAIL'}: {text}: {value:.2f}x")
    over = (rss["load"] - size) / 1e6
    lines.append(
        f"- {'PASS' if over <= 300 else 'FAIL'}: load peak RSS ≤ model + 300 MB: "
        f"model + {over:.0f} MB"
    )
    publish("\n".join(lines) + "\n", args.record)
    return 0


def median(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--record", type=Path, default=None, help="append the section to this file")
    ap.add_argument("--keep", action="store_true", help="keep the registry storage")
    ap.add_argument("--load", action="store_true", help="the streaming-load comparison")
    ap.add_argument(
        "--drop-caches",
        action="store_true",
        help="with --load: drop the page cache before each command (root only)",
    )
    args = ap.parse_args(argv)

    WORK.mkdir(parents=True, exist_ok=True)
    model = write_v1(WORK / "models", args.size_gib)
    if args.load:
        return load_bench(args, model)
    reg_dir = WORK / "registry"
    shutil.rmtree(reg_dir, ignore_errors=True)
    results: dict[str, list[dict[str, Any]]] = {
        "pull": [],
        "list": [],
        "tensor": [],
        "sequential": [],
    }
    with start_registry(reg_dir) as server:
        host = server.host
        ref = f"{host}/bench/lazy:v1"
        files = scan_directory(model)
        t0 = time.perf_counter()
        annotations, blob, desc = chunk_index_annotations(files, cache_dir=WORK / "tables")
        index_time = time.perf_counter() - t0
        packed = pack_directory(model, annotations=annotations)
        with client(WORK / "push-store") as c:
            target = c.target(ref)
            t0 = time.perf_counter()
            copy_graph(packed.as_target(), packed.descriptor, target, tag="v1", concurrency=4)
            push_chunk_index(target, packed.descriptor, blob, desc)
            push_time = time.perf_counter() - t0
        middle = make_models.tensor_names()[len(make_models.tensor_names()) // 2]
        scenarios: dict[str, Callable[[Path], dict[str, Any]]] = {
            "pull": lambda s: run_pull(ref, host, s),
            "list": lambda s: run_list(ref, host, s),
            "tensor": lambda s: run_tensor(ref, host, s, middle),
            "sequential": lambda s: run_sequential(ref, host, s),
        }
        order = list(scenarios)
        for r in range(args.rounds):
            rotated = order[r % len(order) :] + order[: r % len(order)]
            for name in rotated:
                # range support is learned per registry client: each scenario's own
                # client starts knowing nothing, as the process-wide memory used to be reset
                subprocess.run(["sync"], check=False)
                with tempfile.TemporaryDirectory(dir=WORK, prefix="scratch-") as scratch:
                    row = scenarios[name](Path(scratch))
                results[name].append(row)
                print(f"round {r + 1} {name}: {row}", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(reg_dir / "storage", ignore_errors=True)

    size = sum(f.stat().st_size for f in model.iterdir() if f.is_file() and f.name[0] != ".")
    pull_wall = median(results["pull"], "wall")
    seq_wall = median(results["sequential"], "wall")
    tensor = results["tensor"][0]
    lines = [
        f"## Lazy reads vs full pull ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} vCPU, "
        f"Python {platform.python_version()}; "
        f"model {size / 2**30:.2f} GiB (64 F16 tensors, {tensor['nbytes'] / MIB:.0f} MiB each), "
        f"chunk index {desc.size / 1024:.1f} KiB (4 MiB chunks, built in {index_time:.1f} s), "
        f"push {push_time:.1f} s; {args.rounds} rounds, medians, fresh client and empty cache "
        "per run, loopback Distribution registry.",
        "",
        "| scenario | wall (s) | blob bytes | throughput |",
        "|---|---:|---:|---:|",
    ]
    for name in ("pull", "list", "tensor", "sequential"):
        wall = median(results[name], "wall")
        nbytes = median(results[name], "bytes")
        thr = f"{nbytes / wall / MIB:.0f} MiB/s" if name in ("pull", "sequential") else ""
        label = {
            "pull": "full pull (verified, to a directory)",
            "list": "list all tensors (bytes beyond the manifest)",
            "tensor": "read one 64 MiB tensor (open + read; bytes beyond the manifest)",
            "sequential": "sequential read of every file through the lazy handle",
        }[name]
        lines.append(f"| {label} | {wall:.3f} | {int(nbytes):,} | {thr} |")
    list_bytes = median(results["list"], "bytes")
    t_bytes = median(results["tensor"], "tensor_bytes")
    t_total = median(results["tensor"], "bytes")
    t_wall = median(results["tensor"], "wall")
    checks = [
        (
            "listing fetches ≤ 1 MiB beyond the manifest",
            list_bytes <= MIB,
            f"{list_bytes / 1024:.1f} KiB",
        ),
        (
            "one tensor fetches ≤ 1.1x its size + index",
            t_total <= 1.1 * tensor["nbytes"] + tensor["index"] + tensor["header_bytes"],
            f"tensor chunks {t_bytes / tensor['nbytes']:.3f}x its size; with index "
            f"({tensor['index'] / 1024:.1f} KiB) and header: {t_total / MIB:.2f} MiB",
        ),
        (
            "one tensor takes ≤ 0.05x a full pull",
            t_wall <= 0.05 * pull_wall,
            f"{t_wall / pull_wall:.3f}x",
        ),
        (
            "sequential lazy read ≥ 0.8x full-pull throughput",
            pull_wall / seq_wall >= 0.8,
            f"{pull_wall / seq_wall:.2f}x",
        ),
    ]
    lines.append("")
    for text, ok, value in checks:
        lines.append(f"- {'PASS' if ok else 'FAIL'}: {text}: {value}")
    publish("\n".join(lines) + "\n", args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
