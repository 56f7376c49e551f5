#!/usr/bin/env python3
"""modelreg benchmark: side by side with curl and oras-py against one local registry.

    .venv/bin/python bench/run.py --size-gib 4 --rounds 3 --record

Starts a fresh Distribution registry (``tests/integration/registry_server.py``)
under ``bench/_work/``, generates the synthetic models (``bench/make_models.py``)
and runs each scenario for ``--rounds`` rounds, tools alternating (their order
rotates every round), every tool a separate process under ``/usr/bin/time -v``.
Reports medians of wall time, peak RSS and bytes moved as a Markdown table with
the target checks of ``PERFORMANCE.md``; ``--record`` appends it to
``bench/RESULTS.md``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(BENCH_DIR))

import make_models  # noqa: E402
from _common import compile_sources  # noqa: E402
from registry_server import RegistryServer, start_registry  # noqa: E402

PY = Path(sys.executable)
VENV_BIN = ROOT / ".venv" / "bin"
MODELREG = (
    VENV_BIN / "modelreg"
    if (VENV_BIN / "modelreg").exists()
    else Path(shutil.which("modelreg") or "modelreg")
)
ORAS_TOOL = BENCH_DIR / "_oras_tool.py"
GNU_TIME = Path("/usr/bin/time")
WEIGHTS = make_models.WEIGHTS
SCENARIOS = ("push-fresh", "push-v2", "repush", "pull")
RSS_LIMIT_MB = 150.0
SPLIT_COLD = "modelreg --split (cold digests)"
SPLIT_WARM = "modelreg --split (warm digests)"
SPLIT_PULL_COLD = "modelreg --split cold cache"
SPLIT_PULL_V2 = "modelreg --split v2, v1 in cache"
CURL_SYNC = "curl -o + sync"
DISK_FLOOR = "disk: dd + fsync"
STDERR_TAIL = 600


# --------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------


@dataclass
class Run:
    """One timed process."""

    scenario: str
    tool: str
    round: int
    ok: bool
    wall: float = 0.0
    rss_mb: float = 0.0
    cpu_s: float = 0.0  # client user+sys
    registry_cpu_s: float = 0.0
    sent: int | None = None
    received: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class Proc:
    rc: int
    wall: float
    rss_mb: float
    cpu_s: float
    registry_cpu_s: float
    stdout: str
    stderr: str


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu(pid: int | None) -> float:
    """user+sys CPU seconds of a running process (0 if unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # after "pid (comm)": state is fields[0]; utime, stime are fields 11, 12
    return (int(fields[11]) + int(fields[12])) / _clock_ticks()


def parse_gnu_time(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.strip().rpartition(": ")
        if key == "Maximum resident set size (kbytes)":
            out["rss_kb"] = float(value)
        elif key == "User time (seconds)":
            out["user"] = float(value)
        elif key == "System time (seconds)":
            out["sys"] = float(value)
        elif key == "Exit status":
            out["exit"] = float(value)
    return out


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.scratch = work / "scratch"
        self.server: RegistryServer | None = None
        self.runs: list[Run] = []
        self.models: dict[str, Path] = {}
        self.files: dict[str, dict[str, dict[str, Any]]] = {}  # version -> name -> {sha256,size}
        self.setup_errors: dict[str, str] = {}
        self._pull_ready: dict[str, bool] = {}
        self._seq = 0
        self.fingerprint_start = source_fingerprint()
        self.fingerprint_end = self.fingerprint_start

    # ------------------------------------------------------------- helpers
    @property
    def host(self) -> str:
        assert self.server is not None
        return self.server.host

    def ref(self, repo: str, tag: str = "v1") -> str:
        return f"{self.host}/{repo}:{tag}"

    def model_size(self, version: str) -> int:
        return sum(int(f["size"]) for f in self.files[version].values())

    def with_digest_cache_of(self, home: Path, name: str) -> Path:
        """A fresh home ``name`` holding only ``home``'s digest cache: a warm push then
        skips hashing, but knows nothing of where blobs were seen (that would turn the
        next "fresh" push into a mount)."""
        warm = self.fresh_dir(name)
        (warm / "state").mkdir(parents=True)
        for f in (home / "state").glob("digests.sqlite*"):
            shutil.copy2(f, warm / "state" / f.name)
        return warm

    def fresh_dir(self, name: str) -> Path:
        path = self.scratch / name
        rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def env(self, home: Path | None = None, fsync: bool = True) -> dict[str, str]:
        env = dict(os.environ)
        env["DOCKER_CONFIG"] = str(self.work / "docker-config")  # no stored credentials
        (self.work / "docker-config").mkdir(exist_ok=True)
        env.pop("MODELREG_FSYNC", None)
        if home is not None:
            env["MODELREG_HOME"] = str(home)
        if not fsync:
            env["MODELREG_FSYNC"] = "0"
        env["NO_COLOR"] = "1"
        env["COLUMNS"] = "120"
        return env

    def run_cmd(self, cmd: list[str], env: dict[str, str], label: str, timed: bool = True) -> Proc:
        """Run ``cmd`` under GNU time; ``sync`` first so earlier writeback stays out."""
        self._seq += 1
        stem = self.logs / f"{self._seq:03d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}"
        time_file = stem.with_suffix(".time")
        if timed:
            subprocess.run(["sync"], check=False)
        full = [str(GNU_TIME), "-v", "-o", str(time_file), *cmd]
        reg_pid = self.server.process.pid if self.server and self.server.process else None
        reg_cpu0 = process_cpu(reg_pid)
        t0 = time.monotonic()
        proc = subprocess.run(full, env=env, capture_output=True, text=True, errors="replace")
        wall = time.monotonic() - t0
        reg_cpu = process_cpu(reg_pid) - reg_cpu0
        stem.with_suffix(".out").write_text(proc.stdout)
        stem.with_suffix(".err").write_text(" ".join(cmd) + "\n" + proc.stderr)
        try:
            parsed = parse_gnu_time(time_file.read_text())
        except FileNotFoundError:
            parsed = {}
        return Proc(
            rc=proc.returncode,
            wall=wall,
            rss_mb=parsed.get("rss_kb", 0.0) / 1024,
            cpu_s=parsed.get("user", 0.0) + parsed.get("sys", 0.0),
            registry_cpu_s=reg_cpu,
            stdout=proc.stdout,
            stderr=proc.stderr,
        )

    def record(
        self,
        scenario: str,
        tool: str,
        rnd: int,
        proc: Proc | None,
        *,
        sent: int | None = None,
        received: int | None = None,
        info: dict[str, Any] | None = None,
        error: str = "",
    ) -> Run:
        if proc is None:
            run = Run(scenario, tool, rnd, ok=False, error=error)
        else:
            ok = proc.rc == 0 and not error
            if proc.rc != 0 and not error:
                error = f"exit {proc.rc}: {tail(proc.stderr)}"
            run = Run(
                scenario,
                tool,
                rnd,
                ok=ok,
                wall=proc.wall,
                rss_mb=proc.rss_mb,
                cpu_s=proc.cpu_s,
                registry_cpu_s=proc.registry_cpu_s,
                sent=sent if ok else None,
                received=received if ok else None,
                info=info or {},
                error=error,
            )
        self.runs.append(run)
        status = "ok" if run.ok else "FAILED"
        detail = (
            f"{run.wall:7.2f} s  rss {run.rss_mb:6.1f} MB  cpu {run.cpu_s:6.2f} s  "
            f"registry cpu {run.registry_cpu_s:6.2f} s  sent {fmt_bytes(run.sent)}  "
            f"recv {fmt_bytes(run.received)}"
            if run.ok
            else run.error.replace("\n", " | ")[:300]
        )
        print(f"  [{scenario} r{rnd}] {tool:<24} {status:<6} {detail}", file=sys.stderr, flush=True)
        return run

    # ------------------------------------------------------------- registry HTTP (untimed)
    def http(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        assert self.server is not None
        req = urllib.request.Request(
            self.server.url + path, data=data, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items()), exc.read()

    def blob_exists(self, repo: str, digest: str) -> bool:
        status, _, _ = self.http("HEAD", f"/v2/{repo}/blobs/{digest}")
        return status == 200

    def missing_bytes(self, repo: str, version: str) -> int:
        """Bytes of ``version``'s files that ``repo`` lacks: what a HEAD-checking client sends."""
        return sum(
            int(f["size"])
            for f in self.files[version].values()
            if not self.blob_exists(repo, "sha256:" + f["sha256"])
        )

    def upload_url(self, repo: str, digest: str) -> str:
        status, headers, body = self.http("POST", f"/v2/{repo}/blobs/uploads/", data=b"")
        if status != 202:
            raise RuntimeError(f"POST upload: HTTP {status} {body[:200]!r}")
        location = next((v for k, v in headers.items() if k.lower() == "location"), "")
        assert self.server is not None
        url = urllib.parse.urljoin(self.server.url + "/", location)
        sep = "&" if "?" in url else "?"
        return f"{url}{sep}digest={urllib.parse.quote(digest, safe='')}"

    # ------------------------------------------------------------- tools
    def modelreg_push(
        self,
        version: str,
        ref: str,
        home: Path,
        fsync: bool = True,
        label: str = "modelreg-push",
        timed: bool = True,
        split: bool = False,
    ) -> tuple[Proc, dict[str, Any]]:
        cmd = [
            str(MODELREG),
            "push",
            str(self.models[version]),
            ref,
            "--json",
            "--name",
            "bench-model",
        ]
        if split:
            cmd.append("--split")
            if self.args.part_size:
                cmd += ["--part-size", self.args.part_size]
        proc = self.run_cmd(cmd, self.env(home, fsync), label, timed)
        return proc, parse_json(proc.stdout)

    def modelreg_pull(
        self,
        ref: str,
        out: Path,
        home: Path,
        fsync: bool,
        label: str,
        cache_mode: str | None = None,
    ) -> tuple[Proc, dict[str, Any]]:
        cmd = [str(MODELREG), "pull", ref, "-o", str(out), "--json"]
        if cache_mode is not None:
            cmd += ["--cache-mode", cache_mode]
        proc = self.run_cmd(cmd, self.env(home, fsync), label)
        return proc, parse_json(proc.stdout)

    def oras_push(
        self, version: str, ref: str, label: str = "oras-push", timed: bool = True
    ) -> Proc:
        cmd = [str(PY), str(ORAS_TOOL), "push", ref, str(self.models[version])]
        return self.run_cmd(cmd, self.env(), label, timed)

    def oras_pull(self, ref: str, out: Path, label: str) -> Proc:
        cmd = [str(PY), str(ORAS_TOOL), "pull", ref, str(out)]
        return self.run_cmd(cmd, self.env(), label)

    # ------------------------------------------------------------- scenarios
    def push_fresh(self, rnd: int) -> None:
        """v1 into a new repository per tool and round."""
        sc = "push-fresh"
        weights = self.files["v1"][WEIGHTS]
        digest = "sha256:" + weights["sha256"]

        def curl() -> None:
            repo = f"bench/fresh-curl-{rnd}"
            try:
                url = self.upload_url(repo, digest)  # untimed, as is the sha256 (precomputed)
            except Exception as exc:
                self.record(sc, "curl PUT", rnd, None, error=f"POST failed: {exc}")
                return
            cmd = [
                "curl",
                "-sS",
                "-f",
                "-T",
                str(self.models["v1"] / WEIGHTS),
                "-H",
                "Content-Type: application/octet-stream",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_upload}",
                url,
            ]
            proc = self.run_cmd(cmd, self.env(), f"{sc}-curl-{rnd}")
            sent, error = None, ""
            if proc.rc == 0:
                code, _, size = proc.stdout.strip().partition(" ")
                sent = int(float(size or 0))
                if code != "201":
                    error = f"HTTP {code}"
            self.record(sc, "curl PUT", rnd, proc, sent=sent, error=error)

        def oras() -> None:
            repo = f"bench/fresh-oras-{rnd}"
            sent = self.missing_bytes(repo, "v1")
            proc = self.oras_push("v1", self.ref(repo), f"{sc}-oras-{rnd}")
            self.record(sc, "oras-py", rnd, proc, sent=sent)

        def timed_push(variant: str, home: Path, row: str, split: bool = False) -> int:
            """Push v1 to a new repository as one timed run recorded as ``row``; the
            exit code. The cold push's repository has never carried its variant in its
            name, its label has ("cold-"): both kept as the earlier runs named them."""
            proc, doc = self.modelreg_push(
                "v1",
                self.ref(f"bench/fresh-modelreg-{variant}{rnd}"),
                home,
                label=f"{sc}-modelreg-{variant or 'cold-'}{rnd}",
                split=split,
            )
            self.record_modelreg_push(sc, row, rnd, proc, doc)
            return proc.rc

        def modelreg_cold() -> None:
            home = self.fresh_dir(f"home-fresh-cold-{rnd}")
            timed_push("", home, "modelreg (cold digests)")
            # keep only the digest cache for the warm variant (not where blobs were seen:
            # that would turn the next "fresh" push into a mount)
            self.with_digest_cache_of(home, f"home-fresh-warm-{rnd}")
            rmtree(home)

        def modelreg_warm() -> None:
            home = self.scratch / f"home-fresh-warm-{rnd}"
            if not (home / "state" / "digests.sqlite").exists():
                # cold variant did not run or failed: warm the digest cache here (untimed)
                home = self.fresh_dir(f"home-fresh-warm-{rnd}")
                proc, _ = self.modelreg_push(
                    "v1",
                    f"oci:{self.scratch / 'warmup-layout'}",
                    home,
                    label=f"{sc}-warmup-{rnd}",
                    timed=False,
                )
                rmtree(self.scratch / "warmup-layout")
                for f in (home / "state").glob("locations.sqlite*"):
                    f.unlink()
                if proc.rc != 0:
                    self.record(
                        sc,
                        "modelreg (warm digests)",
                        rnd,
                        None,
                        error=f"warm-up push failed: {tail(proc.stderr)}",
                    )
                    return
            timed_push("warm-", home, "modelreg (warm digests)")
            rmtree(home)

        # the warm variant needs the cold one's digest cache: keep them in that order
        def modelreg_split() -> None:
            home = self.fresh_dir(f"home-fresh-split-{rnd}")
            rc = timed_push("split-", home, SPLIT_COLD, split=True)
            # the same split push with only the digest cache kept (hashing excluded, as
            # curl's SHA-256 is precomputed and not counted)
            warm = self.with_digest_cache_of(home, f"home-fresh-split-warm-{rnd}")
            rmtree(home)
            if rc != 0:
                self.record(sc, SPLIT_WARM, rnd, None, error="cold split push failed")
                return
            timed_push("split-warm-", warm, SPLIT_WARM, split=True)
            rmtree(warm)

        tools: list[Callable[[], None]] = [curl, oras, modelreg_cold]
        if self.args.split:
            tools.append(modelreg_split)
        for fn in rotate(tools, rnd):
            fn()
            if fn is modelreg_cold:
                modelreg_warm()

    def record_modelreg_push(
        self, sc: str, tool: str, rnd: int, proc: Proc, doc: dict[str, Any], error: str = ""
    ) -> Run:
        sent = doc.get("bytesSent")
        info = {
            k: doc.get(k)
            for k in ("bytesSkipped", "bytesMounted", "blobsSent", "blobsSkipped", "blobsMounted")
            if k in doc
        }
        if proc.rc == 0 and sent is None and not error:
            error = f"no bytesSent in --json output: {proc.stdout[-200:]!r}"
        return self.record(sc, tool, rnd, proc, sent=sent, info=info, error=error)

    def push_v2(self, rnd: int) -> None:
        """v1 pushed (untimed) by the same tool into a new repository, then v2 (timed)."""
        sc = "push-v2"

        def oras() -> None:
            repo = f"bench/v2-oras-{rnd}"
            setup = self.oras_push(
                "v1", self.ref(repo, "v1"), f"{sc}-oras-setup-{rnd}", timed=False
            )
            if setup.rc != 0:
                self.record(sc, "oras-py", rnd, None, error=f"v1 push failed: {tail(setup.stderr)}")
                return
            sent = self.missing_bytes(repo, "v2")
            proc = self.oras_push("v2", self.ref(repo, "v2"), f"{sc}-oras-{rnd}")
            self.record(sc, "oras-py", rnd, proc, sent=sent)

        def modelreg(split: bool = False) -> None:
            tool = "modelreg --split" if split else "modelreg"
            repo = f"bench/v2-modelreg{'-split' if split else ''}-{rnd}"
            home = self.fresh_dir(f"home-v2{'-split' if split else ''}-{rnd}")
            setup, _ = self.modelreg_push(
                "v1",
                self.ref(repo, "v1"),
                home,
                label=f"{sc}-{tool}-setup-{rnd}",
                timed=False,
                split=split,
            )
            if setup.rc != 0:
                self.record(sc, tool, rnd, None, error=f"v1 push failed: {tail(setup.stderr)}")
                return
            proc, doc = self.modelreg_push(
                "v2", self.ref(repo, "v2"), home, label=f"{sc}-{tool}-{rnd}", split=split
            )
            self.record_modelreg_push(sc, tool, rnd, proc, doc)
            rmtree(home)

        tools: list[Callable[[], None]] = [oras, modelreg]
        if self.args.split:
            tools.append(lambda: modelreg(split=True))
        for fn in rotate(tools, rnd):
            fn()

    def repush(self, rnd: int) -> None:
        """v1 again into a repository that holds it (pushed untimed by the same tool)."""
        sc = "repush"

        def oras() -> None:
            repo = f"bench/repush-oras-{rnd}"
            setup = self.oras_push("v1", self.ref(repo), f"{sc}-oras-setup-{rnd}", timed=False)
            if setup.rc != 0:
                self.record(sc, "oras-py", rnd, None, error=f"v1 push failed: {tail(setup.stderr)}")
                return
            sent = self.missing_bytes(repo, "v1")
            proc = self.oras_push("v1", self.ref(repo), f"{sc}-oras-{rnd}")
            self.record(sc, "oras-py", rnd, proc, sent=sent)

        def modelreg() -> None:
            repo = f"bench/repush-modelreg-{rnd}"
            home = self.fresh_dir(f"home-repush-{rnd}")
            setup, _ = self.modelreg_push(
                "v1", self.ref(repo), home, label=f"{sc}-modelreg-setup-{rnd}", timed=False
            )
            if setup.rc != 0:
                self.record(
                    sc, "modelreg", rnd, None, error=f"v1 push failed: {tail(setup.stderr)}"
                )
                return
            proc, doc = self.modelreg_push("v1", self.ref(repo), home, label=f"{sc}-modelreg-{rnd}")
            self.record_modelreg_push(sc, "modelreg", rnd, proc, doc)
            rmtree(home)

        for fn in rotate([oras, modelreg], rnd):
            fn()

    def setup_pull_sources(self) -> None:
        """v1 pushed by modelreg and by oras-py (untimed): what the pulls read.

        Done once per source; a source whose push failed is tried again next round (the
        code under test may be mid-edit in a shared working tree).
        """
        if not self._pull_ready.get("oras"):
            proc = self.oras_push(
                "v1", self.ref("bench/pullsrc-oras"), "pull-setup-oras", timed=False
            )
            self._pull_ready["oras"] = proc.rc == 0
            if proc.rc != 0:
                self.setup_errors["pull-oras"] = tail(proc.stderr)
            else:
                self.setup_errors.pop("pull-oras", None)
        if not self._pull_ready.get("modelreg"):
            home = self.fresh_dir("home-pull-setup")
            proc, _ = self.modelreg_push(
                "v1",
                self.ref("bench/pullsrc-modelreg"),
                home,
                label="pull-setup-modelreg",
                timed=False,
            )
            self._pull_ready["modelreg"] = proc.rc == 0
            if proc.rc != 0:
                self.setup_errors["pull-modelreg"] = tail(proc.stderr)
            else:
                self.setup_errors.pop("pull-modelreg", None)
            rmtree(home)
        if self.args.split and not self._pull_ready.get("modelreg-split"):
            home = self.fresh_dir("home-pull-setup-split")
            ok, err = True, ""
            for version in ("v1", "v2"):
                proc, _ = self.modelreg_push(
                    version,
                    self.ref("bench/pullsrc-modelreg-split", version),
                    home,
                    label=f"pull-setup-modelreg-split-{version}",
                    timed=False,
                    split=True,
                )
                if proc.rc != 0:
                    ok, err = False, tail(proc.stderr)
                    break
            self._pull_ready["modelreg-split"] = ok
            if ok:
                self.setup_errors.pop("pull-modelreg-split", None)
            else:
                self.setup_errors["pull-modelreg-split"] = err
            rmtree(home)

    def pull(self, rnd: int) -> None:
        sc = "pull"
        self.setup_pull_sources()
        total = self.model_size("v1")

        def curl(durable: bool) -> Callable[[], None]:
            tool = CURL_SYNC if durable else "curl -o"

            def go() -> None:
                out = self.fresh_dir(f"out-curl-{'sync-' if durable else ''}{rnd}")
                out.mkdir()
                assert self.server is not None
                cmd = ["curl", "-sS", "-f", "-L", "-w", "%{size_download}\n"]
                names = sorted(self.files["v1"])
                for name in names:
                    digest = self.files["v1"][name]["sha256"]
                    cmd += [
                        "-o",
                        str(out / name),
                        f"{self.server.url}/v2/bench/pullsrc-oras/blobs/sha256:{digest}",
                    ]
                if durable:  # the same bytes made as durable as modelreg's: fsync each file
                    files = " ".join(shlex.quote(str(out / n)) for n in names)
                    cmd = ["sh", "-c", f"{shlex.join(cmd)} && sync {files}"]
                if "pull-oras" in self.setup_errors:
                    self.record(
                        sc,
                        tool,
                        rnd,
                        None,
                        error=f"source push (oras) failed: {self.setup_errors['pull-oras']}",
                    )
                    return
                label = f"{sc}-curl-{'sync-' if durable else ''}{rnd}"
                proc = self.run_cmd(cmd, self.env(), label)
                received = sum(int(float(x)) for x in proc.stdout.split()) if proc.rc == 0 else None
                self.record(sc, tool, rnd, proc, received=received)
                rmtree(out)

            return go

        def disk() -> None:
            """The disk alone: the model's bytes written from memory and fsynced (dd)."""
            out = self.fresh_dir(f"out-disk-{rnd}")
            block = 8 << 20
            count = -(-total // block)
            cmd = ["dd", "if=/dev/zero", f"of={out}", f"bs={block}", f"count={count}"]
            proc = self.run_cmd([*cmd, "conv=fsync", "status=none"], self.env(), f"{sc}-dd-{rnd}")
            self.record(sc, DISK_FLOOR, rnd, proc, received=None)
            rmtree(out)

        def oras() -> None:
            if "pull-oras" in self.setup_errors:
                self.record(
                    sc,
                    "oras-py",
                    rnd,
                    None,
                    error=f"source push failed: {self.setup_errors['pull-oras']}",
                )
                return
            out = self.fresh_dir(f"out-oras-{rnd}")
            proc = self.oras_pull(self.ref("bench/pullsrc-oras"), out, f"{sc}-oras-{rnd}")
            self.record(sc, "oras-py", rnd, proc, received=total)
            rmtree(out)

        def modelreg(fsync: bool, cache_mode: str | None = None) -> Callable[[], None]:
            suffix = "" if fsync else ", MODELREG_FSYNC=0"
            if cache_mode is not None:
                suffix += f", --cache-mode {cache_mode}"

            def go() -> None:
                if "pull-modelreg" in self.setup_errors:
                    err = f"source push failed: {self.setup_errors['pull-modelreg']}"
                    self.record(sc, f"modelreg cold cache{suffix}", rnd, None, error=err)
                    self.record(sc, f"modelreg warm cache{suffix}", rnd, None, error=err)
                    return
                tag = ("fsync" if fsync else "nofsync") + (f"-{cache_mode}" if cache_mode else "")
                home = self.fresh_dir(f"home-pull-{tag}-{rnd}")
                outs: list[Path] = []  # the cold pull's output stays while the warm one runs
                for variant in ("cold", "warm"):
                    out = self.fresh_dir(f"out-modelreg-{tag}-{variant}-{rnd}")
                    outs.append(out)
                    proc, doc = self.modelreg_pull(
                        self.ref("bench/pullsrc-modelreg"),
                        out,
                        home,
                        fsync,
                        f"{sc}-modelreg-{variant}-{tag}-{rnd}",
                        cache_mode,
                    )
                    error = ""
                    if proc.rc == 0 and "bytesFetched" not in doc:
                        error = f"no bytesFetched in --json output: {proc.stdout[-200:]!r}"
                    info = {"bytesFromCache": doc.get("bytesFromCache")}
                    run = self.record(
                        sc,
                        f"modelreg {variant} cache{suffix}",
                        rnd,
                        proc,
                        received=doc.get("bytesFetched"),
                        info=info,
                        error=error,
                    )
                    if not run.ok and variant == "cold":
                        self.record(
                            sc,
                            f"modelreg warm cache{suffix}",
                            rnd,
                            None,
                            error="cold pull failed, no warm cache",
                        )
                        break
                for out in outs:
                    rmtree(out)
                rmtree(home)

            return go

        def modelreg_split() -> None:
            """Split artifact: cold pull of v1, then v2 with v1 in the cache."""
            if "pull-modelreg-split" in self.setup_errors:
                err = f"source push failed: {self.setup_errors['pull-modelreg-split']}"
                self.record(sc, SPLIT_PULL_COLD, rnd, None, error=err)
                self.record(sc, SPLIT_PULL_V2, rnd, None, error=err)
                return
            home = self.fresh_dir(f"home-pull-split-{rnd}")
            outs: list[Path] = []  # v1's output stays while v2 is pulled
            for tool, version in ((SPLIT_PULL_COLD, "v1"), (SPLIT_PULL_V2, "v2")):
                out = self.fresh_dir(f"out-modelreg-split-{version}-{rnd}")
                outs.append(out)
                proc, doc = self.modelreg_pull(
                    self.ref("bench/pullsrc-modelreg-split", version),
                    out,
                    home,
                    True,
                    f"{sc}-modelreg-split-{version}-{rnd}",
                )
                error = ""
                if proc.rc == 0 and "bytesFetched" not in doc:
                    error = f"no bytesFetched in --json output: {proc.stdout[-200:]!r}"
                run = self.record(
                    sc,
                    tool,
                    rnd,
                    proc,
                    received=doc.get("bytesFetched"),
                    info={"bytesFromCache": doc.get("bytesFromCache")},
                    error=error,
                )
                if not run.ok and version == "v1":
                    self.record(sc, SPLIT_PULL_V2, rnd, None, error="v1 pull failed")
                    break
            for out in outs:
                rmtree(out)
            rmtree(home)

        tools: list[Callable[[], None]] = [
            curl(False),
            curl(True),
            disk,
            oras,
            modelreg(True),
            modelreg(False),
            modelreg(True, "copy"),
        ]
        if self.args.split:
            tools.append(modelreg_split)
        for fn in rotate(tools, rnd):
            fn()


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    tool: str
    runs: list[Run]

    @property
    def ok_runs(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    @property
    def complete(self) -> bool:
        return bool(self.runs) and len(self.ok_runs) == len(self.runs)

    def median(self, attr: str) -> float | None:
        values = [getattr(r, attr) for r in self.ok_runs if getattr(r, attr) is not None]
        return statistics.median(values) if values else None

    @property
    def max_rss(self) -> float | None:
        values = [r.rss_mb for r in self.ok_runs]
        return max(values) if values else None


REFERENCE = {  # scenario -> (reference scenario, reference tool)
    "push-fresh": ("push-fresh", "curl PUT"),
    "repush": ("push-fresh", "curl PUT"),
    "push-v2": ("push-v2", "oras-py"),
    "pull": ("pull", "curl -o"),
}


def build_rows(runs: list[Run]) -> list[Row]:
    rows: dict[tuple[str, str], Row] = {}
    for run in runs:
        rows.setdefault((run.scenario, run.tool), Row(run.scenario, run.tool, [])).runs.append(run)
    order = {s: i for i, s in enumerate(SCENARIOS)}
    return sorted(rows.values(), key=lambda r: order.get(r.scenario, 99))


def find(rows: list[Row], scenario: str, tool: str) -> Row | None:
    return next((r for r in rows if r.scenario == scenario and r.tool == tool), None)


def ratio(rows: list[Row], row: Row) -> float | None:
    ref_sc, ref_tool = REFERENCE.get(row.scenario, (None, None))
    ref = find(rows, ref_sc or "", ref_tool or "")
    a, b = row.median("wall"), ref.median("wall") if ref else None
    if a is None or not b:
        return None
    return a / b


def markdown_table(rows: list[Row], rounds: int) -> str:
    lines = [
        "| scenario | tool | median wall (s) | ratio | peak RSS (MB) | client CPU (s) "
        "| registry CPU (s) | sent | received | ok runs |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ref_sc, ref_tool = REFERENCE.get(row.scenario, ("", ""))
        r = ratio(rows, row)
        ratio_txt = "—" if r is None else f"{r:.2f}x {ref_tool.split()[0]}"
        if row.scenario == ref_sc and row.tool == ref_tool:
            ratio_txt = "1.00 (ref)"
        if not row.ok_runs:
            lines.append(
                f"| {row.scenario} | {row.tool} | FAILED | | | | | | | 0/{len(row.runs)} |"
            )
            continue
        lines.append(
            f"| {row.scenario} | {row.tool} | {row.median('wall'):.2f} | {ratio_txt} "
            f"| {row.max_rss:.0f} | {row.median('cpu_s'):.2f} | {row.median('registry_cpu_s'):.2f} "
            f"| {fmt_bytes(_med_int(row, 'sent'))} | {fmt_bytes(_med_int(row, 'received'))} "
            f"| {len(row.ok_runs)}/{len(row.runs)} |"
        )
    return "\n".join(lines)


def _med_int(row: Row, attr: str) -> int | None:
    m = row.median(attr)
    return None if m is None else int(m)


def target_checks(rows: list[Row], model_v1: int, model_v2: int) -> list[tuple[str, str, str]]:
    """(target, measured, PASS/FAIL/N/A)."""
    checks: list[tuple[str, str, str]] = []

    def wall_ratio(
        sc: str, tool: str, ref_tool: str, limit: float, what: str, inverse: bool = False
    ) -> None:
        row, ref = find(rows, sc, tool), find(rows, sc, ref_tool)
        a = row.median("wall") if row else None
        b = ref.median("wall") if ref else None
        if a is None or b is None or not b or not a:
            why = "scenario not run" if row is None or ref is None else "a run failed"
            checks.append((what, f"not measured ({why})", "N/A"))
            return
        value = b / a if inverse else a / b
        ok = value >= limit if inverse else value <= limit
        shown = f"{value:.2f}x {'faster ' if inverse else ''}({a:.2f} s vs {b:.2f} s)"
        checks.append((what, shown, "PASS" if ok else "FAIL"))

    wall_ratio(
        "push-fresh",
        "modelreg (cold digests)",
        "curl PUT",
        1.1,
        "push fresh ≤ 1.1x curl PUT (cold digest cache: hashing included)",
    )
    wall_ratio(
        "push-fresh",
        "modelreg (warm digests)",
        "curl PUT",
        1.1,
        "push fresh ≤ 1.1x curl PUT (warm digest cache)",
    )

    mr_rows = [r for r in rows if r.tool.startswith("modelreg") and r.ok_runs]
    if mr_rows:
        worst = max(mr_rows, key=lambda r: r.max_rss or 0)
        checks.append(
            (
                f"modelreg peak RSS ≤ {RSS_LIMIT_MB:.0f} MB (every modelreg run)",
                f"max {worst.max_rss:.0f} MB ({worst.scenario}, {worst.tool})",
                "PASS" if (worst.max_rss or 0) <= RSS_LIMIT_MB else "FAIL",
            )
        )
    else:
        checks.append((f"modelreg peak RSS ≤ {RSS_LIMIT_MB:.0f} MB", "not measured", "N/A"))

    wall_ratio(
        "pull", "modelreg cold cache", "curl -o", 1.2, "pull (cold cache, fsync) ≤ 1.2x curl -o"
    )
    wall_ratio(
        "pull",
        "modelreg cold cache, MODELREG_FSYNC=0",
        "curl -o",
        1.2,
        "pull (cold cache, no fsync) ≤ 1.2x curl -o",
    )
    wall_ratio(
        "pull",
        "modelreg cold cache",
        CURL_SYNC,
        1.2,
        f"pull (cold cache, fsync) ≤ 1.2x {CURL_SYNC} (both durable)",
    )
    wall_ratio(
        "pull",
        "modelreg cold cache",
        "oras-py",
        2.0,
        "pull (cold cache, fsync) ≥ 2x faster than oras-py",
        inverse=True,
    )

    def bytes_check(
        sc: str,
        tool: str,
        attr: str,
        what: str,
        limit: Callable[[int], bool],
        fmt: Callable[[int], str],
    ) -> None:
        row = find(rows, sc, tool)
        runs = row.ok_runs if row else []
        if not runs:
            why = "scenario not run" if row is None else "a run failed"
            checks.append((what, f"not measured ({why})", "N/A"))
            return
        values = [getattr(r, attr) for r in runs]
        worst = (
            max(v for v in values if v is not None) if any(v is not None for v in values) else None
        )
        if worst is None:
            checks.append((what, "no byte count", "N/A"))
            return
        checks.append((what, fmt(worst), "PASS" if limit(worst) else "FAIL"))

    bytes_check(
        "repush",
        "modelreg",
        "sent",
        "re-push unchanged v1 sends 0 bytes",
        lambda v: v == 0,
        lambda v: f"max {fmt_bytes(v)} sent",
    )
    for suffix in ("", ", MODELREG_FSYNC=0"):
        bytes_check(
            "pull",
            f"modelreg warm cache{suffix}",
            "received",
            f"warm-cache pull fetches 0 bytes{' (no fsync)' if suffix else ''}",
            lambda v: v == 0,
            lambda v: f"max {fmt_bytes(v)} fetched",
        )
    bytes_check(
        "push-v2",
        "modelreg",
        "sent",
        "push v2 after v1 sends ≤ 12% of the model",
        lambda v: v <= 0.12 * model_v2,
        lambda v: f"{fmt_bytes(v)} = {100 * v / model_v2:.1f}% of {fmt_bytes(model_v2)}",
    )
    wall_ratio("push-v2", "modelreg", "oras-py", 0.2, "push v2 wall ≤ 0.2x oras-py v2 push")

    # --split variants (tensor-aligned parts): only when they were measured
    if find(rows, "push-fresh", SPLIT_COLD):
        wall_ratio(
            "push-fresh",
            SPLIT_COLD,
            "curl PUT",
            1.0,
            "push fresh --split below curl's single stream (cold digest cache)",
        )
    if find(rows, "push-fresh", SPLIT_WARM):
        wall_ratio(
            "push-fresh",
            SPLIT_WARM,
            "curl PUT",
            1.0,
            "push fresh --split below curl's single stream (warm digest cache)",
        )
    if find(rows, "push-v2", "modelreg --split"):
        bytes_check(
            "push-v2",
            "modelreg --split",
            "sent",
            "push v2 --split after v1 sends ≤ 12% of the model",
            lambda v: v <= 0.12 * model_v2,
            lambda v: f"{fmt_bytes(v)} = {100 * v / model_v2:.1f}% of {fmt_bytes(model_v2)}",
        )
        wall_ratio(
            "push-v2", "modelreg --split", "oras-py", 0.2, "push v2 --split wall ≤ 0.2x oras-py"
        )
    if find(rows, "pull", SPLIT_PULL_COLD):
        wall_ratio(
            "pull", SPLIT_PULL_COLD, "curl -o", 1.2, "pull --split artifact (cold) ≤ 1.2x curl -o"
        )
    if find(rows, "pull", SPLIT_PULL_V2):
        bytes_check(
            "pull",
            SPLIT_PULL_V2,
            "received",
            "pull v2 with v1 in the cache fetches only the changed parts (≤ 12%)",
            lambda v: v <= 0.12 * model_v2,
            lambda v: f"{fmt_bytes(v)} = {100 * v / model_v2:.1f}% of {fmt_bytes(model_v2)}",
        )
    return checks


def failures(runs: list[Run]) -> list[str]:
    """Failed runs, those with the same error grouped, each error once in a code block."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        if not r.ok:
            groups.setdefault(r.error.strip(), []).append(r)
    out = []
    for error, group in groups.items():
        which = "; ".join(f"{r.scenario} / {r.tool} / round {r.round}" for r in group)
        body = "\n".join("    " + line for line in error.replace("```", "'''").splitlines())
        out += [f"- {which}:", "", "    ```", body, "    ```", ""]
    return out


def machine_facts(args: argparse.Namespace, bench: Bench) -> list[str]:
    def cmd(*c: str) -> str:
        try:
            return subprocess.run(c, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    mem_kb = 0
    cpu_model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    try:
        import oras.version as ov  # type: ignore[import-untyped]

        oras_version = ov.__version__
    except Exception:
        oras_version = "?"
    commit = cmd("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")
    dirty = cmd("git", "-C", str(ROOT), "status", "--porcelain", "--", "modelreg", "cli")
    fs = cmd("df", "-hT", str(bench.work)).splitlines()
    registry_version = cmd("/usr/bin/docker-registry", "--version")
    mr_version = (cmd(str(MODELREG), "--version").split() or ["?"])[-1]
    v1_size = fmt_bytes(bench.model_size("v1"))
    return [
        f"- machine: `nproc` = {cmd('nproc')}, {cpu_model}, RAM {mem_kb / 2**20:.1f} GiB, "
        f"{platform.system()} {platform.release()}",
        f"- disk (bench/_work): {fs[-1] if fs else '?'}",
        f"- registry: {registry_version} (filesystem storage, plain HTTP, loopback)",
        f"- peers: {' '.join(cmd('curl', '--version').split()[:2]) or 'curl ?'}; "
        f"oras-py {oras_version}; Python {platform.python_version()}",
        f"- modelreg {mr_version} "
        f"at {commit}{' + uncommitted changes in modelreg/ or cli/' if dirty else ''}; "
        f"source fingerprint {bench.fingerprint_start}"
        + (
            ""
            if bench.fingerprint_end == bench.fingerprint_start
            else f" → {bench.fingerprint_end} (CHANGED DURING THE RUN: results mix versions)"
        ),
        f"- model: v1 = {v1_size} ({WEIGHTS} in 64 F16 tensors + config.json + tokenizer.json), "
        f"v2 = 7 of 64 tensors changed; `--size-gib {args.size_gib:g}`",
        f"- rounds: {args.rounds} (medians; tool order rotates each round)",
    ]


NOTES = """\
Notes:
- ratio: median wall / median wall of the reference (curl PUT for pushes, curl -o for pulls,
  oras-py for the v2 push). Absolute times on this shared machine are noisy; ratios within one run
  are what count.
- curl PUT: one monolithic PUT of `model.safetensors` only (POST for the upload URL and the
  SHA-256 of the file are computed beforehand and NOT counted in curl's time; no manifest).
  modelreg and oras-py push all three files + config + manifest and compute digests themselves.
- curl -o: GET of the three blobs (one curl process, one connection, `-L`), written to files,
  nothing verified. modelreg verifies every byte; oras-py does not verify.
- `sync` runs before each timed run (untimed). modelreg fsyncs pulled files and its cache by
  default; rows labelled `MODELREG_FSYNC=0` disable it. curl and oras-py never fsync, except
  "curl -o + sync": the same curl, then `sync FILE...` (fsync of each file it wrote), timed
  together: the durable reference for modelreg's default. "disk: dd + fsync" is the disk
  alone: the model's size written from /dev/zero and fsynced by `dd conv=fsync`, no network.
- modelreg cold digests: fresh `MODELREG_HOME` (file hashed during the push). Warm digests: only
  the digest cache (`state/digests.sqlite`) copied from the cold run, so nothing is known about
  where blobs were seen (no mounts). Pushes go to a new repository per tool and round.
- push v2: v1 pushed (untimed) by the same tool and `MODELREG_HOME` into a new repository, then
  v2 timed; v2's file is hashed during that push (new file after a fine-tune).
- modelreg pull cold cache: fresh `MODELREG_HOME`; warm cache: the same home again, new output
  directory, the cold pull's output still in place. Default cache mode `auto`: the output file
  is written once and reflinked into the cache where the filesystem can; where it cannot (this
  ext4) the cache remembers the verified output file instead of copying it, and the warm pull
  copies from it, verifying every byte. `--cache-mode copy` rows: the cache keeps its own copy
  (every byte written twice here).
- bytes: modelreg from its `--json` (`bytesSent`, `bytesFetched`, blob bytes only); curl from
  `-w %{size_upload}` / `%{size_download}`; oras-py computed as the sizes of the blobs the
  repository lacked before the push (oras-py HEADs each blob first), or the model size for pulls.
- client CPU: user+sys of the tool's process (GNU time); registry CPU: user+sys of the registry
  process during the run (/proc).
- `--split` rows: `modelreg push --split` stores `model.safetensors` as tensor-aligned parts
  (default 32 MiB), pushed in parallel; v2 then sends only the parts that changed. The split pull
  source holds v1 and v2 (pushed untimed with `--split`); "v2, v1 in cache" pulls v2 with the
  home of the cold v1 pull, so only the changed parts should travel.
"""


def render(args: argparse.Namespace, bench: Bench, started: dt.datetime, elapsed: float) -> str:
    rows = build_rows(bench.runs)
    checks = target_checks(rows, bench.model_size("v1"), bench.model_size("v2"))
    parts = [
        f"## {started.strftime('%Y-%m-%d %H:%M UTC')}: {fmt_bytes(bench.model_size('v1'))} model, "
        f"{args.rounds} round(s)",
        "",
        *machine_facts(args, bench),
        f"- duration: {elapsed / 60:.1f} min",
        "",
        markdown_table(rows, args.rounds),
        "",
        "Targets (PERFORMANCE.md):",
        "",
        "| target | measured | result |",
        "|---|---|---|",
        *[f"| {t} | {m} | {r} |" for t, m, r in checks],
        "",
        NOTES,
    ]
    fails = failures(bench.runs)
    if fails:
        parts += ["Failed runs (stderr tail):", "", *fails, ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------
# utilities
# --------------------------------------------------------------------------


def source_fingerprint() -> str:
    """SHA-256 (12 hex) over modelreg's Python sources: the code measured (editable install)."""
    h = hashlib.sha256()
    for base in (ROOT / "modelreg", ROOT / "cli"):
        for path in sorted(base.rglob("*.py")):
            h.update(str(path.relative_to(ROOT)).encode() + b"\0")
            with contextlib.suppress(OSError):
                h.update(path.read_bytes())
    return h.hexdigest()[:12]


def rotate(items: list[Any], rnd: int) -> list[Any]:
    k = (rnd - 1) % len(items)
    return items[k:] + items[:k]


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError, IsADirectoryError):
        path.unlink()


def tail(text: str, n: int = STDERR_TAIL) -> str:
    text = text.strip()
    return text if len(text) <= n else "…" + text[-n:]


def parse_json(stdout: str) -> dict[str, Any]:
    stdout = stdout.strip()
    if not stdout:
        return {}
    with contextlib.suppress(json.JSONDecodeError):
        doc = json.loads(stdout)
        return doc if isinstance(doc, dict) else {}
    # last JSON object on stdout
    start = stdout.rfind("\n{")
    with contextlib.suppress(json.JSONDecodeError):
        doc = json.loads(stdout[start + 1 :] if start >= 0 else stdout)
        return doc if isinstance(doc, dict) else {}
    return {}


def fmt_bytes(n: int | float | None) -> str:
    if n is None:
        return "—"
    n = int(n)
    if n == 0:
        return "0 B"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


@contextlib.contextmanager
def registry(work: Path, keep: bool) -> Iterator[RegistryServer]:
    reg_dir = work / "registry"
    rmtree(reg_dir)
    try:
        with start_registry(reg_dir) as server:
            yield server
    finally:
        if not keep:
            rmtree(reg_dir / "storage")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-gib", type=float, default=4.0, help="model size (default 4)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per scenario (default 3)")
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        help=f"run only these scenarios (repeatable or comma-separated): {', '.join(SCENARIOS)}",
    )
    ap.add_argument("--record", action="store_true", help="append the result to bench/RESULTS.md")
    ap.add_argument(
        "--results", type=Path, default=BENCH_DIR / "RESULTS.md", help=argparse.SUPPRESS
    )
    ap.add_argument("--work", type=Path, default=BENCH_DIR / "_work", help="scratch directory")
    ap.add_argument(
        "--keep", action="store_true", help="keep registry storage and scratch afterwards"
    )
    ap.add_argument(
        "--split",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure `modelreg push --split` (tensor-aligned parts) variants (default: yes)",
    )
    ap.add_argument(
        "--part-size",
        default=None,
        help="--part-size for the --split variants (default: modelreg's, 32MiB; a 0.25 GiB model "
        "has 4 MiB tensors, so use e.g. 4MiB there to see v2 send only the changed parts)",
    )
    args = ap.parse_args(argv)
    only = [s.strip() for item in args.only for s in item.split(",") if s.strip()]
    unknown = [s for s in only if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    args.scenarios = [s for s in SCENARIOS if not only or s in only]
    if args.rounds < 1:
        ap.error("--rounds must be ≥ 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not GNU_TIME.exists():
        print("error: /usr/bin/time (GNU time) is required", file=sys.stderr)
        return 2
    compile_sources(ROOT)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()

    manifest = make_models.make_models(work / "models", args.size_gib)
    bench = Bench(args, work)
    rmtree(bench.logs)
    bench.logs.mkdir(parents=True)
    rmtree(bench.scratch)
    for version in ("v1", "v2"):
        bench.models[version] = work / "models" / version
        bench.files[version] = manifest["versions"][version]["files"]

    with registry(work, args.keep) as server:
        bench.server = server
        print(
            f"registry {server.url} (storage {server.root_dir}); scenarios {args.scenarios}, "
            f"{args.rounds} round(s), model {fmt_bytes(bench.model_size('v1'))}",
            file=sys.stderr,
        )
        scenario_fns = {
            "push-fresh": bench.push_fresh,
            "push-v2": bench.push_v2,
            "repush": bench.repush,
            "pull": bench.pull,
        }
        try:
            for rnd in range(1, args.rounds + 1):
                for sc in args.scenarios:
                    try:
                        scenario_fns[sc](rnd)
                    except Exception as exc:
                        bench.record(
                            sc, "(harness)", rnd, None, error=f"{type(exc).__name__}: {exc}"
                        )
        except KeyboardInterrupt:
            print("interrupted: reporting what was measured", file=sys.stderr)
        finally:
            if not args.keep:
                rmtree(bench.scratch)

    bench.fingerprint_end = source_fingerprint()
    if bench.fingerprint_end != bench.fingerprint_start:
        print("warning: modelreg's sources changed during the run", file=sys.stderr)
    text = render(args, bench, started, time.monotonic() - t0)
    print(text)
    if args.record:
        results = args.results
        if not results.exists():
            results.write_text(
                "# Benchmark results\n\nAppended by `bench/run.py --record`; newest last. "
                "See bench/README.md for what each scenario measures.\n\n"
            )
        with results.open("a") as f:
            f.write("\n" + text + "\n")
        print(f"recorded in {results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
