"""Run the coalescing cache deploy/mirrors/ ships (nginx) unprivileged on loopback.

The configuration is rendered from the ``nginx.conf.template`` of the ConfigMap in
``deploy/mirrors/nginx-cache.yaml``, with the same variables its ``render.sh`` fills in
(the cache rules have one source of truth), into a temporary prefix: a loopback port,
the cache directory, pid and temp files, and the cache's own upstream credentials as the
include ``render.sh`` writes. Usable from benchmarks too::

    with start_nginx_cache(tmp_dir, upstream_addr="127.0.0.1:5443", upstream_host="localhost",
                           upstream_ca=ca, credentials=("user", "pw")) as cache:
        ...  # cache.host is a plain-HTTP mirror of the upstream

The Debian package ``nginx`` must be installed (``bash .ci/install-deps``);
:func:`nginx_binary` raises :class:`NginxMissing` saying so otherwise.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.integration.registry_server import _probe, _stop_process, free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mirrors" / "nginx-cache.yaml"
NGINX_BIN_ENV = "MODELREG_TEST_NGINX_BIN"
STARTUP_TIMEOUT = 15.0
_PORT_ATTEMPTS = 5
_ENVSUBST = re.compile(r"envsubst '([^']*)'")


class NginxMissing(RuntimeError):
    """nginx is not installed."""


def nginx_binary() -> Path:
    env = os.environ.get(NGINX_BIN_ENV)
    found = env or shutil.which("nginx") or "/usr/sbin/nginx"
    path = Path(found)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise NginxMissing(
            f"{path} not found: the cache tests need the Debian package 'nginx'; run "
            f"`bash .ci/install-deps` to install it (or set {NGINX_BIN_ENV})."
        )
    return path


def deploy_config_map(path: Path = DEPLOY) -> dict[str, str]:
    """The ``data`` of the nginx ConfigMap deploy/mirrors/ ships."""
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "ConfigMap" and doc["metadata"]["name"].endswith("nginx"):
            data: dict[str, str] = doc["data"]
            return data
    raise LookupError(f"no nginx ConfigMap in {path}")


def deploy_settings(path: Path = DEPLOY) -> dict[str, str]:
    """The values the Deployment gives ``render.sh`` (its init container's env)."""
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "Deployment":
            (init,) = doc["spec"]["template"]["spec"]["initContainers"]
            return {e["name"]: e["value"] for e in init["env"] if "value" in e}
    raise LookupError(f"no Deployment in {path}")


def template_variables(data: dict[str, str]) -> list[str]:
    """The names ``render.sh`` substitutes (its ``envsubst`` list), in order."""
    match = _ENVSUBST.search(data["render.sh"])
    if match is None:
        raise LookupError("render.sh has no envsubst list")
    return re.findall(r"\$\{([A-Z_]+)\}", match.group(1))


def render(template: str, names: list[str], values: dict[str, str]) -> str:
    """``envsubst`` of exactly ``names``: every one must have a value, and no other
    ``${...}`` may be left in the result."""
    if set(values) != set(names):
        raise ValueError(f"values for {sorted(values)}, template needs {sorted(names)}")
    text = template
    for name in names:
        text = text.replace("${" + name + "}", values[name])
    if "${" in text:
        left = ", ".join(re.findall(r"\$\{\w+}", text))
        raise ValueError(f"placeholders left unrendered: {left}")
    return text


def auth_include(username: str, password: str) -> str:
    """What ``render.sh`` writes for the cache's upstream credentials."""
    basic = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f'set $upstream_authorization "Basic {basic}";\n'


@dataclass
class NginxCache:
    """A running cache, as handed to tests."""

    host: str
    port: int
    prefix: Path
    cache_dir: Path
    access_log: Path
    error_log: Path
    config_file: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def stop(self) -> None:
        _stop_process(self.process)

    def entries(self, digest: str) -> list[Path]:
        """Cache files holding (a slice of) the blob ``digest``."""
        needle = f"\nKEY: blob {digest} ".encode()
        return sorted(
            path
            for path in self.cache_dir.rglob("*")
            if path.is_file() and needle in path.read_bytes()[:4096]
        )


def _launch(binary: Path, prefix: Path, config: Path, log: Path) -> subprocess.Popen[bytes]:
    args = [str(binary), "-p", str(prefix), "-e", "stderr", "-c", str(config)]
    if os.geteuid() == 0:
        # a root master would hand the workers to "nobody", who cannot enter the
        # test's temp directory: keep them as the test's own user
        args += ["-g", "user root;"]
    with log.open("ab") as out:
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )


@contextlib.contextmanager
def start_nginx_cache(
    tmp_dir: Path,
    *,
    upstream_addr: str,
    upstream_host: str,
    upstream_ca: Path,
    credentials: tuple[str, str] | None,
    slice_size: str | None = None,
    cache_max_size: str = "4g",
    config_map: Path = DEPLOY,
) -> Iterator[NginxCache]:
    """Start nginx with the deploy/ configuration; stop it on exit.

    ``slice_size``: default the Deployment's (tests use small slices to split small
    blobs)."""
    binary = nginx_binary()
    prefix = Path(tmp_dir)
    run_dir, cache_dir, auth_dir = prefix / "run", prefix / "cache", prefix / "auth"
    for directory in (run_dir, cache_dir, auth_dir):
        directory.mkdir(parents=True, exist_ok=True)
    if credentials is not None:
        (auth_dir / "upstream.conf").write_text(auth_include(*credentials))
    data = deploy_config_map(config_map)
    names = template_variables(data)
    access_log, error_log = prefix / "access.log", prefix / "error.log"
    config_file = prefix / "nginx.conf"
    values: dict[str, str] = {
        "UPSTREAM_ADDR": upstream_addr,
        "UPSTREAM_HOST": upstream_host,
        "UPSTREAM_CA": str(upstream_ca),
        "CACHE_DIR": str(cache_dir),
        "CACHE_MAX_SIZE": cache_max_size,
        "SLICE_SIZE": slice_size or deploy_settings(config_map)["SLICE_SIZE"],
        "RUN_DIR": str(run_dir),
        "AUTH_DIR": str(auth_dir),
        "ACCESS_LOG": str(access_log),
    }
    for _attempt in range(_PORT_ATTEMPTS):
        port = free_port()
        values["LISTEN"] = f"127.0.0.1:{port}"
        config_file.write_text(render(data["nginx.conf.template"], names, values))
        log_start = error_log.stat().st_size if error_log.exists() else 0
        process = _launch(binary, prefix, config_file, error_log)
        try:
            ready = _wait_ready(process, port)
        except BaseException:
            _stop_process(process)
            raise
        if ready:
            break
        _stop_process(process)
        log = error_log.read_text(errors="replace")[log_start:]
        if "Address already in use" not in log:
            raise RuntimeError(f"nginx exited with {process.returncode}:\n{log}")
    else:
        raise RuntimeError(f"nginx could not bind a free port in {_PORT_ATTEMPTS} attempts")
    cache = NginxCache(
        f"127.0.0.1:{port}", port, prefix, cache_dir, access_log, error_log, config_file, process
    )
    try:
        yield cache
    finally:
        _stop_process(process)


def _wait_ready(process: subprocess.Popen[bytes], port: int) -> bool:
    """True once ``/v2/`` answers 200; False if nginx exited first."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if _probe("127.0.0.1", port, None) == 200:
            return True
        time.sleep(0.02)
    raise RuntimeError(f"nginx did not answer on 127.0.0.1:{port} within {STARTUP_TIMEOUT}s")
