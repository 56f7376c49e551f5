#!/usr/bin/env python3
"""What ``--split`` costs and saves, beyond what ``bench/run.py`` measures.

    .venv/bin/python bench/split_bench.py --size-gib 4 [--rounds 3] [--record]

1. **Part size vs dedup** (no registry, headers only): for each target part size,
   how many parts ``model.safetensors`` of the synthetic v1 gets and how many bytes a
   push of v2 after v1 sends (the parts holding a changed tensor), and the same for
   Llama-7B / Llama-3-8B shapes under three fine-tune patterns. This is the measurement
   behind the default part size.
2. **Remote tensor listing**: ``modelreg inspect REF --tensors --json`` of v1 pushed
   whole and pushed ``--split``: bytes fetched beyond the manifest and config (from
   the JSON's ``bytesFetched``; target ≤ 1 MiB) and wall time, against a local
   Distribution registry, next to a full ``pull`` for scale.

Push/pull timings of split artifacts (fresh push vs curl, v2 push vs oras-py, pull
of v2 with v1 cached) are ``bench/run.py``'s ``--split`` rows. ``--record`` appends
the tables to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(ROOT))

import make_models  # noqa: E402
from _common import compile_sources  # noqa: E402
from registry_server import start_registry  # noqa: E402

from modelreg.model import split  # noqa: E402
from modelreg.model.formats import (  # noqa: E402
    FileSource,
    ModelFileInfo,
    TensorInfo,
    parse_safetensors,
)

MODELREG = ROOT / ".venv" / "bin" / "modelreg"
MIB = 1 << 20
SIZES_MIB = (16, 32, 64, 128, 256, 512)


def fmt(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


# ----------------------------------------------------------------- 1. part size
def sent_for(info: ModelFileInfo, size: int, target: int, changed: set[str]) -> tuple[int, int]:
    spans = split.plan_spans(info, size, target)
    assert spans is not None
    sent = 0
    for sp in spans[1:]:
        if any(t.name in changed for t in info.tensors if sp.offset <= t.offset < sp.end):
            sent += sp.length
    return len(spans), sent


def llama(layers: int, hidden: int, inter: int, vocab: int, kv: int) -> tuple[ModelFileInfo, int]:
    shapes = [("model.embed_tokens.weight", vocab * hidden)]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [
            (p + "input_layernorm.weight", hidden),
            (p + "mlp.down_proj.weight", hidden * inter),
            (p + "mlp.gate_proj.weight", hidden * inter),
            (p + "mlp.up_proj.weight", hidden * inter),
            (p + "post_attention_layernorm.weight", hidden),
            (p + "self_attn.k_proj.weight", hidden * kv),
            (p + "self_attn.o_proj.weight", hidden * hidden),
            (p + "self_attn.q_proj.weight", hidden * hidden),
            (p + "self_attn.v_proj.weight", hidden * kv),
        ]
    shapes += [("model.norm.weight", hidden), ("lm_head.weight", vocab * hidden)]
    offset = 100_000
    tensors = []
    for name, numel in shapes:
        tensors.append(TensorInfo(name, "BF16", (numel,), offset, numel * 2))
        offset += numel * 2
    return ModelFileInfo("safetensors", tuple(tensors), header_size=100_000), offset


def part_size_tables(models: Path) -> list[str]:
    out = ["### Part size vs bytes a v2 push sends (headers only, no registry)", ""]
    with FileSource(models / "v1" / "model.safetensors") as src:
        info = parse_safetensors(src)
        size = src.size
    names = make_models.tensor_names()
    changed = {names[i] for i in make_models.changed_indices()}
    need = sum(t.nbytes for t in info.tensors if t.name in changed)
    out += [
        f"Synthetic model ({fmt(size)}, {len(info.tensors)} F16 tensors of "
        f"{fmt(info.tensors[0].nbytes)}, {len(changed)} changed = {fmt(need)}):",
        "",
        "| part size | parts | v2 sends | % of the model |",
        "|---:|---:|---:|---:|",
    ]
    for mib in SIZES_MIB:
        parts, sent = sent_for(info, size, mib * MIB, changed)
        out.append(f"| {mib} MiB | {parts} | {fmt(sent)} | {100 * sent / size:.1f}% |")
    out += [
        "",
        "Llama shapes (bf16), bytes sent relative to the bytes of the changed tensors "
        "(1.00x = exactly the changed tensors):",
        "",
        "| model | fine-tune changes | " + " | ".join(f"{m} MiB" for m in SIZES_MIB) + " |",
        "|---|---|" + "---:|" * len(SIZES_MIB),
    ]
    shapes = {
        "Llama-2-7B": llama(32, 4096, 11008, 32000, 4096),
        "Llama-3-8B": llama(32, 4096, 14336, 128256, 1024),
    }
    patterns = {
        "q,v of every layer": lambda n: "q_proj" in n or "v_proj" in n,
        "last 4 layers": lambda n: any(f"layers.{i}." in n for i in range(28, 32)),
        "one layer": lambda n: "layers.7." in n,
    }
    for label, (minfo, msize) in shapes.items():
        for pattern, pred in patterns.items():
            chosen = {t.name for t in minfo.tensors if pred(t.name)}
            base = sum(t.nbytes for t in minfo.tensors if t.name in chosen)
            cells = []
            for mib in SIZES_MIB:
                parts, sent = sent_for(minfo, msize, mib * MIB, chosen)
                cells.append(f"{sent / base:.2f}x ({parts} parts)")
            out.append(f"| {label} | {pattern} | " + " | ".join(cells) + " |")
    return out


# ----------------------------------------------------------------- 2. inspect
def run(cmd: list[str], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-500:]}")
    return wall, json.loads(proc.stdout)


def inspect_tables(models: Path, work: Path, rounds: int, part_size: str | None) -> list[str]:
    out = ["### Remote `inspect --tensors` of the 4 GiB model", ""]
    home = work / "home"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ, MODELREG_HOME=str(home), DOCKER_CONFIG=str(work / "docker"))
    rows: dict[str, list[tuple[float, int, int]]] = {}
    with start_registry(work / "registry") as server:
        refs = {"whole file": f"{server.host}/bench/inspect:whole"}
        refs["--split"] = f"{server.host}/bench/inspect:split"
        split_args = ["--split"] + (["--part-size", part_size] if part_size else [])
        run([str(MODELREG), "push", str(models / "v1"), refs["whole file"], "--json"], env)
        run(
            [str(MODELREG), "push", str(models / "v1"), refs["--split"], "--json", *split_args], env
        )
        for rnd in range(rounds):
            for label, ref in refs.items():
                wall, doc = run([str(MODELREG), "inspect", ref, "--tensors", "--json"], env)
                listing = doc["tensors"]
                rows.setdefault(label, []).append(
                    (wall, int(listing["bytesFetched"]), int(listing["requests"]))
                )
                assert len(listing["tensors"]) == len(make_models.tensor_names()), rnd
        pull_home = work / "home-pull"
        penv = dict(env, MODELREG_HOME=str(pull_home), MODELREG_FSYNC="0")
        pull_wall, pulled = run(
            [
                str(MODELREG),
                "pull",
                refs["whole file"],
                "-o",
                str(work / "out"),
                "--json",
                "--no-cache",
            ],
            penv,
        )
    out += [
        f"{rounds} round(s); fetched = tensor-header bytes beyond manifest and config "
        "(target ≤ 1 MiB).",
        "",
        "| artifact | median wall (s) | fetched | requests | tensors |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, values in rows.items():
        wall = statistics.median(v[0] for v in values)
        fetched = max(v[1] for v in values)
        requests = max(v[2] for v in values)
        out.append(
            f"| {label} | {wall:.2f} | {fmt(fetched)} | {requests} | "
            f"{len(make_models.tensor_names())} |"
        )
    out.append(
        f"| (full pull, no fsync, for scale) | {pull_wall:.2f} | "
        f"{fmt(pulled['bytesFetched'])} | | |"
    )
    worst = max(v[1] for values in rows.values() for v in values)
    verdict = "PASS" if worst <= MIB else "FAIL"
    out += [
        "",
        f"Target: listing every tensor fetches ≤ 1 MiB beyond the manifest: "
        f"{fmt(worst)} → {verdict}",
    ]
    shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gib", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--part-size", default=None, help="--part-size for the split push")
    ap.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    ap.add_argument("--work", type=Path, default=BENCH_DIR / "_work")
    args = ap.parse_args(argv)
    compile_sources(ROOT)
    models = args.work / "models"
    make_models.make_models(models, args.size_gib)
    started = dt.datetime.now(dt.UTC)
    lines = [
        f"## {started:%Y-%m-%d %H:%M} UTC: --split analysis (bench/split_bench.py), "
        f"{args.size_gib:g} GiB model",
        "",
    ]
    lines += part_size_tables(models)
    lines.append("")
    lines += inspect_tables(models, args.work / "split-scratch", args.rounds, args.part_size)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.record:
        with open(BENCH_DIR / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write("\n\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
