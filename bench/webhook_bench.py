#!/usr/bin/env python3
"""Admission webhook at cluster scale: driven the way the kube-apiserver drives it.

    .venv/bin/python bench/webhook_bench.py                       # every scenario, ~4 min
    .venv/bin/python bench/webhook_bench.py --levels 50 --scenarios cached --seconds 5

The kube-apiserver talks to a webhook over HTTP/1.1, one keep-alive connection per
concurrent review and one review in flight on each, and gives up after
``timeoutSeconds``. This harness does the same: one load process (its CPU is reported,
so a saturated client is visible instead of being mistaken for a slow server) opens N
TLS connections, then on each connection sends a review, waits for the whole answer,
sends the next, for ``--seconds``. Latency is measured from the first byte written to
the last byte read, i.e. from the request's arrival as the apiserver sees it.

Everything runs on loopback, each part in its own process:

* a CNCF Distribution registry (``tests/integration/registry_server.py``) holding three
  models signed with a fresh key;
* fault registries: ``dead`` (a closed port: connection refused), ``hung`` (accepts and
  never answers), ``slow`` (a proxy to the real registry that holds every answer
  ``--slow-delay`` seconds);
* ``modelreg webhook serve --budget B`` with one policy per registry (key signature +
  noPickle). The ``cached`` scenario uses a server whose caches are warm; every other
  scenario uses a server started with every TTL at 0, so that each review resolves and
  verifies (concurrent reviews of the same digest still share one verification: that is
  the engine's in-flight sharing, not a cache);
* Pod CREATE reviews naming 1 to 3 models (pinned ``tag@digest``).

Per level: reviews/s, p50/p99/max, answers later than budget + 0.5 s and later than
``timeoutSeconds``, allowed / denied / shed (denied as "overloaded") counts, server RSS
(idle and peak) and the CPU seconds of server and load generator. A benchmark, not a
test: it never fails on a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures as cf
import contextlib
import http.client
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))

from modelreg.client import Client, RemoteOptions  # noqa: E402
from modelreg.webhook import certs  # noqa: E402
from tests.integration.registry_server import start_registry  # noqa: E402
from tests.integration.test_webhook_cli import LAUNCH  # noqa: E402  (the CLI as the tests run it)
from tests.unit.webhook.reviews import pod_spec, review, workload  # noqa: E402

MODELS = ("llm-a", "llm-b", "llm-c")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


# ------------------------------------------------------------------ processes
def _pids(root: int) -> list[int]:
    """``root`` and its descendants (worker processes, if any)."""
    out = [root]
    for pid in out:
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                out.extend(int(x) for x in task.read_text().split())
    return out


def cpu_seconds(root: int) -> float:
    total = 0
    for pid in _pids(root):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_mb(root: int) -> list[float]:
    """Resident set of each process (MB)."""
    out = []
    for pid in _pids(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out.append(int(line.split()[1]) / 1024)
    return out


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max([self.peak, *rss_mb(self.pid)])

    def __enter__(self) -> RssSampler:
        self.peak = max(rss_mb(self.pid) or [0.0])
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------- fault registries
class Hung:
    """Accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self.sock.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.held.append(conn)
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        for c in self.held:
            c.close()
        self.sock.close()


class SlowProxy:
    """Forwards to the real registry, holding each answer chunk ``delay`` seconds."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream = upstream_port
        self.delay = delay
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, hold: float) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    if hold:
                        await asyncio.sleep(hold)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream)
            await asyncio.gather(pipe(r, uw, 0.0), pipe(ur, w, self.delay))

        async def main() -> None:
            await asyncio.start_server(handle, "127.0.0.1", self.port)
            ready.set()
            await asyncio.Event().wait()

        self.loop.run_until_complete(main())


# ----------------------------------------------------------------------- webhook
@contextlib.contextmanager
def webhook(work: Path, policy: Path, tls: dict[str, str], *extra: str) -> Iterator[Any]:
    port = free_port()
    logf = work / f"webhook-{port}.log"
    log = open(logf, "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LAUNCH,
            "webhook",
            "serve",
            "--policy",
            str(policy),
            "--tls-cert",
            tls["cert"],
            "--tls-key",
            tls["key"],
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *extra,
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MODELREG_HOME": str(work / f"hook-home-{port}")},
    )
    ctx = ssl.create_default_context(cafile=tls["ca"])
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                conn.close()
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(logf.read_text())
        time.sleep(0.1)
    try:
        yield proc.pid, port
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def metrics_text(port: int, ca: str) -> str:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, context=ssl.create_default_context(cafile=ca), timeout=10
    )
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return text


# ------------------------------------------------------------------ load client
@dataclass
class Level:
    port: int
    ca: str
    connections: int
    seconds: float
    bodies: list[bytes]
    warm_until: bytes = b""
    """Warm-up on each connection repeats until an answer holds these bytes (or 3 tries)."""


def _request(body: bytes) -> bytes:
    head = (
        "POST /validate?timeout=10s HTTP/1.1\r\nHost: modelreg-webhook.bench.svc:443\r\n"
        "Content-Type: application/json\r\nAccept: application/json, */*\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes
) -> bytes:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return await reader.readexactly(length)


async def _run_level(level: Level) -> dict[str, Any]:
    ctx = ssl.create_default_context(cafile=level.ca)
    requests = [_request(b) for b in level.bodies]
    lat: list[float] = []
    first: list[float] = []
    """Latency of each connection's first review(s), while the other connections of the
    level still make their handshakes: outside the measured window, but no answer may be
    late there either. The handshake itself is timed apart (``handshakes``): at 500 new
    connections the load process's own TLS work would otherwise be counted as the
    server's latency."""
    handshakes: list[float] = []
    counts = {"allowed": 0, "denied": 0, "shed": 0, "breaker": 0, "budget": 0, "errors": 0}
    kinds: collections.Counter[str] = collections.Counter()
    """Which connection errors, and whether before or in the measured window."""
    go = asyncio.Event()
    warm = [0]
    started = 0.0
    t_connect = time.perf_counter()

    async def conn(i: int) -> None:
        rnd = random.Random(i)
        try:
            t0 = time.perf_counter()
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", level.port, ssl=ctx, server_hostname="127.0.0.1"
            )
            handshakes.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for _ in range(20 if level.warm_until else 1):
                answer = await _exchange(reader, writer, rnd.choice(requests))
                first.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                if not level.warm_until or level.warm_until in answer:
                    break
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            counts["errors"] += 1
            kinds[f"warm-up: {type(exc).__name__}"] += 1
            return
        warm[0] += 1
        await go.wait()
        stop = started + level.seconds
        try:
            while (now := time.perf_counter()) < stop:
                answer = await _exchange(reader, writer, rnd.choice(requests))
                lat.append(time.perf_counter() - now)
                if b'"allowed":true' in answer:
                    counts["allowed"] += 1
                    continue
                counts["denied"] += 1
                if b"overloaded" in answer:
                    counts["shed"] += 1
                elif b"circuit open" in answer:
                    counts["breaker"] += 1
                elif b"budget" in answer:
                    counts["budget"] += 1
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            counts["errors"] += 1
            kinds[f"measured: {type(exc).__name__}"] += 1
        finally:
            writer.close()

    tasks = [asyncio.ensure_future(conn(i)) for i in range(level.connections)]
    # every connection has made its handshake and first review before the clock starts
    while warm[0] + counts["errors"] < level.connections:
        await asyncio.sleep(0.02)
    connect_s = time.perf_counter() - t_connect
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "latencies": lat,
        "first": first,
        "handshakes": handshakes,
        "counts": counts,
        "error_kinds": dict(kinds),
        "wall": wall,
        "connect_s": connect_s,
        "client_cpu": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
    }


def run_level(level: Level) -> dict[str, Any]:
    """In the load process: one event loop, every connection of the level."""
    with contextlib.suppress(ImportError):
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    return asyncio.run(_run_level(level))


# ------------------------------------------------------------------------ setup
def bodies_for(refs: list[str], count: int = 64, seed: int = 1) -> list[bytes]:
    """Pod CREATE reviews naming 1 to 3 of ``refs`` (plus a non-model sidecar)."""
    rnd = random.Random(seed)
    out = []
    for _ in range(count):
        chosen = rnd.sample(refs, rnd.randint(1, min(3, len(refs))))
        doc = review(workload("Pod", pod_spec([*chosen, "busybox:1.36"])), uid=str(uuid.uuid4()))
        out.append(json.dumps(doc).encode())
    return out


def prepare(work: Path, host: str) -> dict[str, str]:
    """Push and sign three models; return their pinned references by name."""
    from modelreg import sign as sign_api

    key = sign_api.generate_private_key()
    (work / "release.pub").write_bytes(sign_api.public_key_pem(key.public_key()))
    pinned = {}
    with Client(RemoteOptions(store=str(work / "store"), fsync=False)) as client:
        for name in MODELS:
            src = work / name
            src.mkdir()
            (src / "model.safetensors").write_bytes(os.urandom(1 << 16))
            (src / "config.json").write_text('{"architectures": ["X"]}')
            ref = f"{host}/bench/{name}:v1"
            pushed = client.push(src, ref)
            _, target, desc = client.resolve(ref)
            sign_api.sign(target, desc, sign_api.KeySigner(key))
            pinned[name] = f"bench/{name}:v1@{pushed.digest}"
    return pinned


def write_policy(work: Path, hosts: list[str]) -> Path:
    policy = work / "policy"
    policy.mkdir()
    for i, host in enumerate(hosts):
        (policy / f"p{i}.yaml").write_text(
            "apiVersion: modelreg.dev/v1alpha1\nkind: ModelPolicy\n"
            f"metadata: {{name: bench-{i}}}\n"
            f"spec:\n  match: {{references: ['{host}/bench/**']}}\n  require:\n"
            "    signatures:\n      authorities:\n        - name: release\n"
            "          key: {path: ../release.pub}\n    artifact: {noPickle: true}\n"
        )
    return policy


def summarise(
    scenario: str, conns: int, result: dict[str, Any], server: dict[str, float], args: Any
) -> dict[str, Any]:
    lat = result["latencies"]
    every = lat + result["first"]
    over_budget = sum(1 for x in every if x > args.budget + 0.5)
    over_timeout = sum(1 for x in every if x > args.timeout_seconds)
    return {
        "scenario": scenario,
        "connections": conns,
        "reviews": len(lat),
        "rps": len(lat) / result["wall"] if result["wall"] else 0.0,
        "p50_ms": pct(lat, 50) * 1000,
        "p99_ms": pct(lat, 99) * 1000,
        "max_ms": max(lat, default=float("nan")) * 1000,
        "first_max_ms": max(result["first"], default=float("nan")) * 1000,
        "handshake_p99_ms": pct(result["handshakes"], 99) * 1000,
        "over_budget": over_budget,
        "over_timeout": over_timeout,
        **result["counts"],
        "error_kinds": result["error_kinds"],
        "connect_s": result["connect_s"],
        "client_cpu_s": result["client_cpu"],
        **server,
    }


def run(
    pool: cf.ProcessPoolExecutor, pid: int, level: Level, scenario: str, args: Any
) -> dict[str, Any]:
    cpu0 = cpu_seconds(pid)
    spy = None
    if args.profile:
        # py-spy (pip install py-spy; not a project dependency) samples the server while
        # the level runs: where the time of an answer goes
        out = args.profile / f"{scenario}-{level.connections}.txt"
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--rate",
                "200",
                "--output",
                str(out),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    with RssSampler(pid) as rss:
        result = pool.submit(run_level, level).result()
        peak = rss.peak
    if spy is not None:
        spy.send_signal(2)
        spy.wait(timeout=30)
    server = {"server_cpu_s": cpu_seconds(pid) - cpu0, "rss_peak_mb": peak}
    row = summarise(scenario, level.connections, result, server, args)
    print(
        f"  {scenario:<22} {level.connections:>4} conns: {row['reviews']:>6} reviews "
        f"{row['rps']:>7.0f}/s p50 {row['p50_ms']:7.1f} p99 {row['p99_ms']:7.1f} "
        f"max {row['max_ms']:7.1f} (first {row['first_max_ms']:.0f}, handshake p99 "
        f"{row['handshake_p99_ms']:.0f}) ms; "
        f">budget+0.5 {row['over_budget']} shed {row['shed']} "
        f"circuit {row['breaker']} errors {row['errors']} {row['error_kinds'] or ''}; cpu server "
        f"{row['server_cpu_s']:.1f}s client {row['client_cpu_s']:.1f}s; rss {peak:.0f} MB",
        flush=True,
    )
    return row


def print_table(rows: list[dict[str, Any]], idle: dict[str, float], args: Any) -> None:
    print(
        f"\nmodelreg webhook at cluster scale ({os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, --budget {args.budget:g}, timeoutSeconds "
        f"{args.timeout_seconds:g}, {args.seconds:g} s per level, load average at start "
        f"{args.load_at_start})\n"
    )
    print(
        "| scenario | conns | reviews | reviews/s | p50 ms | p99 ms | max ms | first max ms "
        "| handshake p99 ms "
        "| > budget+0.5 s "
        "| > timeoutSeconds | allowed | denied | shed | circuit open | errors "
        "| server CPU s | client CPU s | RSS idle / peak MB |"
    )
    print("|---|" + "---:|" * 17 + "---|")
    for r in rows:
        print(
            f"| {r['scenario']} | {r['connections']} | {r['reviews']} | {r['rps']:.0f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.0f} | "
            f"{r['first_max_ms']:.0f} | {r['handshake_p99_ms']:.0f} | {r['over_budget']} | "
            f"{r['over_timeout']} | {r['allowed']} | {r['denied']} | {r['shed']} | "
            f"{r['breaker']} | {r['errors']} | {r['server_cpu_s']:.1f} | "
            f"{r['client_cpu_s']:.1f} | {idle.get(r['scenario'], 0):.0f} / "
            f"{r['rss_peak_mb']:.0f} |"
        )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--levels", default="50,200,500", help="connections, comma separated")
    ap.add_argument(
        "--scenarios",
        default="cached,mixed,uncached,dead,hung,slow",
        help="cached, mixed (cached + 10%% on the hung registry), uncached, dead, hung, slow",
    )
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per level")
    ap.add_argument("--budget", type=float, default=4.0, help="webhook serve --budget")
    ap.add_argument("--timeout-seconds", type=float, default=10.0, help="the apiserver's")
    ap.add_argument("--slow-delay", type=float, default=0.25, help="slow registry: s per answer")
    ap.add_argument("--server-args", default="", help="extra `webhook serve` flags")
    ap.add_argument("--json", type=Path, help="write the rows as JSON here")
    ap.add_argument("--profile", type=Path, help="py-spy the server into this directory")
    args = ap.parse_args()
    args.load_at_start = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    levels = [int(x) for x in args.levels.split(",") if x]
    scenarios = [x for x in args.scenarios.split(",") if x]
    # the server must not run out of descriptors at 500 connections (plus the registry's)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    rows: list[dict[str, Any]] = []
    idle: dict[str, float] = {}
    base = ("--budget", str(args.budget), *args.server_args.split())
    cold = (*base, "--cache-ttl", "0", "--negative-ttl", "0", "--tag-ttl", "0")
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="webhook-bench-")))
        os.environ["MODELREG_HOME"] = str(work / "home")
        registry = stack.enter_context(start_registry(work / "registry"))
        pinned = prepare(work, registry.host)
        hung = Hung()
        stack.callback(hung.close)
        slow = SlowProxy(int(registry.host.rsplit(":", 1)[1]), args.slow_delay)
        dead = free_port()
        hosts = {
            "real": registry.host,
            "dead": f"127.0.0.1:{dead}",
            "hung": f"127.0.0.1:{hung.port}",
            "slow": f"127.0.0.1:{slow.port}",
        }
        policy = write_policy(work, list(hosts.values()))
        tls = certs.write(
            certs.generate("modelreg-webhook", "bench", extra_names=("127.0.0.1",)), work / "tls"
        )
        pool = stack.enter_context(cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")))
        pool.submit(int, 0).result()  # start the load process before any timing

        def refs(where: str) -> list[str]:
            return [f"{hosts[where]}/{p}" for p in pinned.values()]

        for scenario in scenarios:
            where = {"cached": "real", "uncached": "real", "mixed": "real"}.get(scenario, scenario)
            flags = base if scenario in ("cached", "mixed") else cold
            print(f"{scenario}: webhook serve {' '.join(flags)}", flush=True)
            with webhook(work, policy, tls, *flags) as (pid, port):
                time.sleep(0.5)
                idle[scenario] = max(rss_mb(pid))
                warm = b"circuit open" if scenario in ("dead", "hung") else b""
                bodies = bodies_for(refs(where))
                if scenario == "mixed":  # 1 review in 10 names a model on the hung registry
                    bodies = bodies_for(refs(where), 58) + bodies_for(refs("hung"), 6)
                for conns in levels:
                    level = Level(port, tls["ca"], conns, args.seconds, bodies, warm)
                    rows.append(run(pool, pid, level, scenario, args))
                with contextlib.suppress(OSError):
                    text = metrics_text(port, tls["ca"])
                    (work.parent / f"webhook-bench-{scenario}.metrics").write_text(text)
    print_table(rows, idle, args)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "idle_rss_mb": idle}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
