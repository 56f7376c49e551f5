#!/usr/bin/env python3
"""N simulated nodes pulling one model: directly, through a pull-through cache (cold,
and warmed by ``modelreg prefetch``), and with the cache dead (issue 21).

    .venv/bin/python bench/mirror_bench.py --size-mib 256 --nodes 8

Starts under ``bench/_work/mirrors/`` a Distribution registry (the upstream, plain
HTTP on loopback) and writes a random model of ``--size-mib`` MiB in four files, pushed
once by tag. Then, each scenario with a fresh Distribution in proxy mode (the cache)
in front of the upstream:

* ``direct``: the nodes pull from the upstream; no hosts.toml mirror.
* ``cache-cold``: the nodes pull through the empty cache (hosts.toml: the cache with
  ``capabilities = ["pull"]``, the upstream as ``server``), all at once.
* ``cache-prefetched``: ``modelreg prefetch REF --via http://CACHE`` first (its own
  egress and time reported), then the nodes pull through the cache.
* ``cache-dead``: the hosts.toml names a port nobody listens on (``dial_timeout =
  "1s"``): the nodes fall back to the upstream.

and, against a second upstream with basic auth over TLS (the same model pushed to it),
with the coalescing cache deploy/mirrors/ ships (nginx ``proxy_cache_lock``, its
configuration rendered from ``deploy/mirrors/nginx-cache.yaml`` by
``tests/integration/nginx_cache.py``, run unprivileged with its own upstream
credentials):

* ``direct-tls``: the nodes pull from that upstream; no mirror.
* ``nginx-cold``: the nodes pull through the empty nginx cache, all at once.
* ``nginx-dead``: the same hosts.toml, with that nginx stopped before the nodes start
  (its port refuses connections): the nodes fall back to the upstream. Compare its wall
  time with ``direct-tls`` plus the mirror's ``dial_timeout`` (1 s). On a busy machine
  the wall time of 8 concurrent 1 GiB pulls varies by more than that second, so
  ``--dead-overhead-rounds N`` also times N alternating single in-process pulls of a
  1 MiB model, direct and with the cache dead: the overhead itself.

A node is a ``modelreg pull REF -o DIR --no-cache`` process with its own
``MODELREG_HOME``, configured only through ``MODELREG_HOSTS_DIR`` (and, for the TLS
upstream, ``DOCKER_CONFIG`` holding the upstream's credentials); all N start
together; the pull verifies every byte, and the bench checks every file's size and
SHA-256 against the model afterwards. Upstream egress is what the upstream wrote for
blob GETs, summed from its own log (``http.response.written`` of every completed
``GET .../blobs/...``), so nothing sits between the nodes and the registries.
``--record FILE`` appends the Markdown table to FILE.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH_DIR))

from _common import compile_sources  # noqa: E402

from modelreg.client import Client, RemoteOptions  # noqa: E402
from modelreg.settings import Settings  # noqa: E402
from tests.integration.nginx_cache import NginxCache, start_nginx_cache  # noqa: E402
from tests.integration.registry_server import (  # noqa: E402
    RegistryServer,
    free_port,
    start_registry,
)

WORK = BENCH_DIR / "_work" / "mirrors"
MODELREG = str(Path(sys.executable).with_name("modelreg"))
_BLOB_GET = re.compile(
    r'msg="response completed".*http\.request\.method=GET .*http\.request\.uri="[^"]*/blobs/'
    r".*http\.response\.written=(\d+)"
)


def write_model(path: Path, size_mib: int) -> dict[str, str]:
    """Four files of random bytes (weights barely compress); name -> sha256."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text('{"model_type": "bench"}')
    digests = {"config.json": hashlib.sha256(b'{"model_type": "bench"}').hexdigest()}
    per_file = size_mib // 4
    for i in range(4):
        name = f"model-{i:02d}-of-04.bin"
        h = hashlib.sha256()
        with open(path / name, "wb") as f:
            for _ in range(per_file):
                block = os.urandom(1 << 20)
                h.update(block)
                f.write(block)
        digests[name] = h.hexdigest()
    return digests


def egress(upstream: RegistryServer) -> int:
    """Blob bytes the upstream has written so far (its log)."""
    total = 0
    for line in upstream.log_text().splitlines():
        match = _BLOB_GET.search(line)
        if match:
            total += int(match.group(1))
    return total


def hosts_dir(root: Path, upstream: RegistryServer, mirror: str | None) -> Path:
    directory = root / upstream.host
    directory.mkdir(parents=True, exist_ok=True)
    text = f'server = "{upstream.url}"\n'
    if upstream.ca_file is not None:
        text += f'ca = "{upstream.ca_file}"\n'
    if mirror is not None:
        text += f'\n[host."http://{mirror}"]\n  capabilities = ["pull"]\n  dial_timeout = "1s"\n'
    (directory / "hosts.toml").write_text(text)
    return root


def run_nodes(
    ref: str, nodes: int, hosts: Path, work: Path, docker_config: Path | None = None
) -> tuple[float, list[Path]]:
    """``nodes`` concurrent pulls, each its own home; wall time of the slowest."""
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    start = time.monotonic()
    for n in range(nodes):
        home = work / f"node{n}"
        env = dict(os.environ, MODELREG_HOME=str(home / "home"), MODELREG_HOSTS_DIR=str(hosts))
        env["MODELREG_FSYNC"] = "0"
        if docker_config is not None:
            env["DOCKER_CONFIG"] = str(docker_config.parent)
        out = home / "out"
        cmd = [MODELREG, "pull", ref, "-o", str(out), "--no-cache", "--quiet"]
        procs.append(
            (subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out)
        )
    outputs = []
    for proc, out in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a node's pull failed ({proc.returncode}): {err.decode()}")
        outputs.append(out)
    return time.monotonic() - start, outputs


def check(outputs: list[Path], digests: dict[str, str]) -> None:
    for out in outputs:
        for name, digest in digests.items():
            h = hashlib.sha256()
            with open(out / name, "rb") as f:
                while block := f.read(1 << 22):
                    h.update(block)
            if h.hexdigest() != digest:
                raise SystemExit(f"{out / name}: wrong content")


def wait_stored(cache: RegistryServer, count: int, timeout: float = 120.0) -> float:
    """Distribution stores a proxied blob after answering: wait until ``count`` are on disk."""
    blobs = cache.root_dir / "docker" / "registry" / "v2" / "blobs"
    start = time.monotonic()
    while len(list(blobs.rglob("data"))) < count:
        if time.monotonic() - start > timeout:
            raise SystemExit("the cache never stored what it served")
        time.sleep(0.2)
    return time.monotonic() - start


@contextlib.contextmanager
def cache_for(upstream: RegistryServer, name: str) -> Iterator[RegistryServer]:
    with start_registry(WORK / name, extra_config={"proxy": {"remoteurl": upstream.url}}) as cache:
        yield cache


@contextlib.contextmanager
def nginx_for(upstream: RegistryServer, name: str) -> Iterator[NginxCache]:
    """The deploy/ nginx cache (its own credentials, the Deployment's slice size)."""
    assert upstream.ca_file is not None
    with start_nginx_cache(
        WORK / name,
        upstream_addr=upstream.host,
        upstream_host="localhost",
        upstream_ca=upstream.ca_file,
        credentials=upstream.basic_auth,
        cache_max_size="64g",
    ) as cache:
        yield cache


def cache_statuses(cache: NginxCache) -> dict[str, int]:
    """How many blob requests the cache answered per ``$upstream_cache_status``."""
    counts: dict[str, int] = {}
    for line in cache.access_log.read_text().splitlines():
        if "/blobs/" in line:
            status = re.search(r"cache=(\S+)", line)
            key = status.group(1) if status else "?"
            counts[key] = counts.get(key, 0) + 1
    return counts


def scenario(
    name: str,
    upstream: RegistryServer,
    ref: str,
    args: argparse.Namespace,
    digests: dict[str, str],
    model_bytes: int,
    docker_config: Path | None = None,
) -> dict[str, Any]:
    work = WORK / name
    shutil.rmtree(work, ignore_errors=True)
    row: dict[str, Any] = {"scenario": name}
    with contextlib.ExitStack() as stack:
        mirror: str | None = None
        nginx: NginxCache | None = None
        if name.startswith("nginx-"):
            nginx = stack.enter_context(nginx_for(upstream, f"{name}-nginx"))
            mirror = nginx.host
            if name == "nginx-dead":
                nginx.stop()
        elif name.startswith("cache-") and name != "cache-dead":
            cache = stack.enter_context(cache_for(upstream, f"{name}-registry"))
            mirror = cache.host
        elif name == "cache-dead":
            mirror = f"127.0.0.1:{free_port()}"
        hosts = hosts_dir(work / "certs.d", upstream, mirror)
        if name == "cache-prefetched":
            before = egress(upstream)
            start = time.monotonic()
            with Client(RemoteOptions(hosts_dirs=())) as client:
                warmed = client.prefetch(ref, via=[f"http://{cache.host}"])
            row["prefetch_s"] = time.monotonic() - start
            row["stored_s"] = wait_stored(cache, warmed.blobs + warmed.manifests)
            row["prefetch_egress"] = egress(upstream) - before
            row["prefetch_warm"] = warmed.warm
        before = egress(upstream)
        wall, outputs = run_nodes(ref, args.nodes, hosts, work, docker_config)
        if nginx is None:
            time.sleep(1.0)  # Distribution's background stores finish (and are counted)
        else:
            row["cache_statuses"] = cache_statuses(nginx)
        row["egress"] = egress(upstream) - before
        row["wall_s"] = wall
        row["load"] = os.getloadavg()[0]
        check(outputs, digests)
        row["ratio"] = row["egress"] / model_bytes
    shutil.rmtree(work, ignore_errors=True)
    return row


def dead_overhead(tls: RegistryServer, config: Path, rounds: int) -> str:
    """What a dead cache adds to one pull: a 1 MiB model pulled in-process, direct and
    with the cache dead (a closed port, ``dial_timeout = "1s"``), alternating."""
    small = WORK / "small"
    small.mkdir(exist_ok=True)
    (small / "config.json").write_text('{"model_type": "bench"}')
    (small / "weights.bin").write_bytes(os.urandom(1 << 20))
    ref = f"{tls.host}/bench/small:v1"
    with Client(
        RemoteOptions(hosts_dirs=(), ca_file=str(tls.ca_file), docker_config=str(config))
    ) as c:
        c.push(small, ref)
    hosts = {
        "direct": hosts_dir(WORK / "overhead" / "direct", tls, None),
        "dead": hosts_dir(WORK / "overhead" / "dead", tls, f"127.0.0.1:{free_port()}"),
    }
    times: dict[str, list[float]] = {"direct": [], "dead": []}
    for n in range(rounds):
        for kind in ("direct", "dead"):
            home = WORK / "overhead" / f"{kind}-{n}"
            settings = Settings.from_env({"MODELREG_HOME": str(home / "home")})
            warnings: list[str] = []
            options = RemoteOptions(
                hosts_dirs=(str(hosts[kind]),),
                docker_config=str(config),
                fsync=False,
                on_warning=warnings.append,
            )
            start = time.monotonic()
            with Client(options, settings=settings) as client:
                client.pull(ref, home / "out", cache=False)
            times[kind].append(time.monotonic() - start)
            if len(warnings) != (kind == "dead"):  # the dead cache, reported once
                raise SystemExit(f"{kind} pull: unexpected warnings {warnings}")
            shutil.rmtree(home)
    direct, dead = statistics.median(times["direct"]), statistics.median(times["dead"])
    return (
        f"Dead-cache overhead: one pull of a 1 MiB model (in-process, a fresh client each, "
        f"{rounds} alternating rounds): direct median {direct:.3f} s, cache dead median "
        f"{dead:.3f} s, +{dead - direct:.3f} s (max dead {max(times['dead']):.3f} s, max direct "
        f"{max(times['direct']):.3f} s); the mirror's dial_timeout is 1 s.\n"
    )


def table(rows: list[dict[str, Any]], model_bytes: int, args: argparse.Namespace) -> str:
    mib = model_bytes / (1 << 20)
    lines = [
        f"{args.nodes} nodes (processes) pulling a {mib:.0f} MiB model (5 blobs) at once, each "
        "with its own `MODELREG_HOME`, configured only through `MODELREG_HOSTS_DIR`; every "
        "node's files checked by SHA-256 afterwards. Upstream egress = blob bytes the upstream "
        "Distribution wrote (its log).",
        "",
        "| scenario | upstream egress | x model | wall, all nodes (s) | load (1 min) after |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['egress'] / (1 << 20):.1f} MiB | {r['ratio']:.2f} | "
            f"{r['wall_s']:.1f} | {r['load']:.1f} |"
        )
    # a scenario listed more than once (interleaved rounds, to see through a busy
    # machine's noise) is summarised by its median
    runs: dict[str, list[float]] = {}
    for r in rows:
        runs.setdefault(r["scenario"], []).append(r["wall_s"])
    walls = {name: statistics.median(times) for name, times in runs.items()}
    if "nginx-dead" in walls and "direct-tls" in walls:
        bound = walls["direct-tls"] + 1.0
        verdict = "within" if walls["nginx-dead"] <= bound else "NOT within"
        rounds = len(runs["nginx-dead"])
        lines += [
            "",
            f"Cache dead: the {args.nodes} pulls took {walls['nginx-dead']:.1f} s, direct "
            f"{walls['direct-tls']:.1f} s"
            + (f" (medians of {rounds} rounds)" if rounds > 1 else "")
            + f"; {verdict} the mirror's dial_timeout (1 s) + the direct time ({bound:.1f} s).",
        ]
    for r in rows:
        if r.get("cache_statuses"):
            lines += [
                "",
                f"`{r['scenario']}`: nginx blob requests by cache status: {r['cache_statuses']}.",
            ]
    for r in rows:
        if "prefetch_s" in r:
            lines += [
                "",
                f"`cache-prefetched`: the `prefetch` before the pulls took {r['prefetch_s']:.1f} s "
                f"and caused {r['prefetch_egress'] / (1 << 20):.1f} MiB of upstream egress "
                f"({r['prefetch_egress'] / model_bytes:.2f}x the model); the cache had stored "
                f"everything {r['stored_s']:.1f} s after it returned; warm: {r['prefetch_warm']}.",
                "",
                f"Whole rollout (the prefetch, then {args.nodes} pulls): "
                f"{(r['prefetch_egress'] + r['egress']) / (1 << 20):.1f} MiB of upstream egress, "
                f"{(r['prefetch_egress'] + r['egress']) / model_bytes:.2f}x the model.",
            ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument(
        "--scenarios",
        default="direct,cache-cold,cache-prefetched,cache-dead,direct-tls,nginx-cold,nginx-dead",
        help="comma list",
    )
    parser.add_argument(
        "--dead-overhead-rounds",
        type=int,
        default=0,
        help="with a TLS scenario: also time N alternating single pulls, direct vs cache dead",
    )
    parser.add_argument("--record", type=Path, help="append the Markdown table to this file")
    args = parser.parse_args()
    compile_sources(ROOT)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    print(f"Load average at the start: {os.getloadavg()}", flush=True)
    digests = write_model(WORK / "model", args.size_mib)
    model_bytes = sum(p.stat().st_size for p in (WORK / "model").iterdir())
    rows = []
    names = args.scenarios.split(",")
    tls_names = {"direct-tls", "nginx-cold", "nginx-dead"}
    with contextlib.ExitStack() as stack:
        if set(names) - tls_names:
            upstream = stack.enter_context(start_registry(WORK / "upstream"))
            ref = f"{upstream.host}/bench/model:v1"
            with Client(RemoteOptions(hosts_dirs=())) as client:
                client.push(WORK / "model", ref)
        if set(names) & tls_names:
            tls = stack.enter_context(start_registry(WORK / "upstream-tls", auth="basic", tls=True))
            tls_ref = f"{tls.host}/bench/model:v1"
            config = tls.docker_config(WORK)
            push = RemoteOptions(hosts_dirs=(), ca_file=str(tls.ca_file), docker_config=str(config))
            with Client(push) as client:
                client.push(WORK / "model", tls_ref)
        for name in names:
            if name in tls_names:
                row = scenario(name, tls, tls_ref, args, digests, model_bytes, config)
            else:
                row = scenario(name, upstream, ref, args, digests, model_bytes)
            rows.append(row)
            print(rows[-1], flush=True)
        overhead = ""
        if args.dead_overhead_rounds and set(names) & tls_names:
            overhead = dead_overhead(tls, config, args.dead_overhead_rounds)
    text = table(rows, model_bytes, args) + ("\n" + overhead if overhead else "")
    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} vCPU (shared)")
    print(f"Load average at the end: {os.getloadavg()}\n")
    print(text)
    if args.record:
        with open(args.record, "a") as f:
            f.write(text)
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
