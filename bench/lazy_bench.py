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
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
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


def median(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--record", type=Path, default=None, help="append the section to this file")
    ap.add_argument("--keep", action="store_true", help="keep the registry storage")
    args = ap.parse_args(argv)

    WORK.mkdir(parents=True, exist_ok=True)
    model = write_v1(WORK / "models", args.size_gib)
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
    section = "\n".join(lines) + "\n"
    print(section)
    if args.record is not None:
        with open(args.record, "a", encoding="utf-8") as f:
            f.write("\n" + section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
