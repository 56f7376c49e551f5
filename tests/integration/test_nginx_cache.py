"""The coalescing cache deploy/mirrors/ ships (nginx ``proxy_cache_lock``), rendered
from the deploy template, in front of a real Distribution registry (basic auth over TLS).

Who talks to whom::

    node processes --> barrier --> nginx (the cache) --> upstream meter --> Distribution
          \\------------------------ (tags, fallback) ---/

* The *upstream meter* is a TLS proxy serving the registry's certificate: every node and
  the cache know the registry by its address, and every blob byte the upstream sends
  anyone is counted there.
* The *barrier* makes the cold miss truly concurrent on any machine: each blob GET waits
  until every node has asked for it; and the meter holds the cache's first upstream
  fetch of a blob until the barrier has passed every node's request to the cache. With
  ``proxy_cache_lock off`` every node's miss goes upstream, and these tests fail.

Nodes are ``modelreg pull`` processes, each with its own ``MODELREG_HOME``, configured
only through a hosts directory (the cache with ``capabilities = ["pull"]``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from modelreg import Client, RemoteOptions
from modelreg.settings import Settings
from tests.integration.helpers import random_blob
from tests.integration.metering_proxy import MeteringProxy
from tests.integration.nginx_cache import NginxCache, NginxMissing, nginx_binary, start_nginx_cache
from tests.integration.registry_server import RegistryServer

NODES = 8
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(autouse=True)
def _nginx_installed() -> None:
    try:
        nginx_binary()
    except NginxMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@dataclass
class Setup:
    upstream: RegistryServer
    meter: MeteringProxy
    barrier: MeteringProxy
    cache: NginxCache
    ref: str
    files: dict[str, bytes]
    blobs: dict[str, int]
    docker_config: Path
    hosts: Path

    @property
    def model_bytes(self) -> int:
        return sum(self.blobs.values())


@contextlib.contextmanager
def _setup(upstream: RegistryServer, tmp_path: Path) -> Iterator[Setup]:
    assert upstream.ca_file is not None and upstream.basic_auth is not None
    pki = upstream.ca_file.parent
    files = {
        "config.json": b'{"model_type": "llama"}',
        "weights.bin": random_blob(3 << 20, uuid.uuid4().hex),  # three 1 MiB slices
        "tokenizer.json": random_blob(200_000, uuid.uuid4().hex),
    }
    model = tmp_path / "model"
    model.mkdir()
    for name, data in files.items():
        (model / name).write_bytes(data)
    with contextlib.ExitStack() as stack:
        meter = stack.enter_context(
            MeteringProxy(
                upstream.port,
                target_ca=upstream.ca_file,
                serve_cert=(pki / "server.pem", pki / "server-key.pem"),
            )
        )
        ref = f"{meter.host}/cache/{uuid.uuid4().hex[:10]}:v1"
        config = tmp_path / "docker" / "config.json"
        config.parent.mkdir()
        user, password = upstream.basic_auth
        auth = httpx.BasicAuth(user, password)
        config.write_text(json.dumps({"auths": {meter.host: {"auth": _b64(user, password)}}}))
        options = RemoteOptions(
            ca_file=str(upstream.ca_file), docker_config=str(config), hosts_dirs=()
        )
        with Client(options) as client:
            client.push(model, ref)
        repo, tag = ref.split("/", 1)[1].rsplit(":", 1)
        manifest = httpx.get(
            f"https://{meter.host}/v2/{repo}/manifests/{tag}",
            headers={"Accept": OCI_MANIFEST},
            auth=auth,
            verify=upstream.ssl_context(),
        ).json()
        # the files' blobs: what each node reads (a pull does not fetch the config blob)
        blobs = {d["digest"]: d["size"] for d in manifest["layers"]}
        cache = stack.enter_context(
            start_nginx_cache(
                tmp_path / "nginx",
                upstream_addr=meter.host,
                upstream_host="localhost",
                upstream_ca=upstream.ca_file,
                credentials=upstream.basic_auth,
                slice_size="1m",
            )
        )
        barrier = stack.enter_context(MeteringProxy(cache.port))
        hosts = tmp_path / "certs.d"
        (hosts / meter.host).mkdir(parents=True)
        (hosts / meter.host / "hosts.toml").write_text(
            f'server = "https://{meter.host}"\nca = "{upstream.ca_file}"\n\n'
            f'[host."http://{barrier.host}"]\n'
            '  capabilities = ["pull"]\n  dial_timeout = "1s"\n'
        )
        meter.blob_bytes.clear()
        yield Setup(upstream, meter, barrier, cache, ref, files, blobs, config, hosts)


def _b64(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _node(setup: Setup, node: Path, warnings: list[str] | None = None) -> Path:
    """One node: its own home, its own client, configured only through the hosts dir."""
    settings = Settings.from_env(
        {"MODELREG_HOME": str(node / "home"), "MODELREG_HOSTS_DIR": str(setup.hosts)}
    )
    options = RemoteOptions(
        hosts_dirs=(str(setup.hosts),),
        docker_config=str(setup.docker_config),
        fsync=False,
        on_warning=warnings.append if warnings is not None else None,
    )
    with Client(options, settings=settings) as client:
        client.pull(setup.ref, node / "out", cache=False)
    return node / "out"


def _nodes(setup: Setup, tmp_path: Path, name: str, count: int) -> list[Path]:
    """``count`` concurrent pulls by tag (threads); their output directories."""
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(_node, setup, tmp_path / name / f"node{n}") for n in range(count)]
        return [f.result(timeout=240) for f in futures]


def _verified(setup: Setup, outputs: list[Path]) -> None:
    for out in outputs:
        for name, data in setup.files.items():
            assert (out / name).read_bytes() == data, f"{out / name}"


def _cold_rollout(setup: Setup, tmp_path: Path, count: int) -> None:
    """``count`` nodes at once through the empty cache: one upstream fetch per blob."""
    setup.barrier.parties = count
    setup.meter.hold = lambda digest: setup.barrier.wait_forwarded(digest, count)
    try:
        outputs = _nodes(setup, tmp_path, "cold", count)
    finally:
        setup.barrier.parties = 0
        setup.meter.hold = None
    _verified(setup, outputs)
    assert setup.barrier.waits_expired == setup.meter.waits_expired == 0
    # every node asked the cache for every blob, concurrently
    assert all(setup.barrier.blob_gets[d] >= count for d in setup.blobs), setup.barrier.blob_gets
    egress = setup.meter.total_blob_bytes()
    assert setup.model_bytes <= egress <= 1.05 * setup.model_bytes, (
        f"upstream sent {egress} B for a {setup.model_bytes} B model "
        f"({egress / setup.model_bytes:.2f}x): {dict(setup.meter.blob_bytes)}"
    )
    setup.meter.blob_bytes.clear()


def test_cold_concurrent_rollout_costs_the_model_once_upstream(
    registry_tls_basic: RegistryServer, tmp_path: Path
) -> None:
    with _setup(registry_tls_basic, tmp_path) as setup:
        _cold_rollout(setup, tmp_path, NODES)
        # and a later node is served from the cache alone
        _verified(setup, _nodes(setup, tmp_path, "warm", 1))
        assert setup.meter.total_blob_bytes() == 0
    log = setup.cache.access_log.read_text()
    assert "cache=HIT" in log and "cache=MISS" in log
    # the cache never cached tag resolution nor forwarded a node's credentials: nodes
    # resolved the tag at the upstream, and the cache used its own
    assert "/manifests/v1" not in log


def test_dead_cache_nodes_pull_from_the_origin(
    registry_tls_basic: RegistryServer, tmp_path: Path
) -> None:
    with _setup(registry_tls_basic, tmp_path) as setup:
        _cold_rollout(setup, tmp_path, 3)
        setup.cache.stop()
        outputs = _nodes(setup, tmp_path, "dead", 2)
        _verified(setup, outputs)
        # both fell back to the origin for every blob
        assert setup.meter.total_blob_bytes() == 2 * setup.model_bytes


def test_tampered_cache_entry_is_detected_and_the_origin_serves(
    registry_tls_basic: RegistryServer, tmp_path: Path
) -> None:
    with _setup(registry_tls_basic, tmp_path) as setup:
        _cold_rollout(setup, tmp_path, 3)
        weights = hashlib.sha256(setup.files["weights.bin"]).hexdigest()
        digest = f"sha256:{weights}"
        assert digest in setup.blobs
        entries = setup.cache.entries(digest)
        assert len(entries) == 3  # one per 1 MiB slice
        middle = bytearray(entries[1].read_bytes())
        middle[-1000] ^= 0xFF  # in the body: the slice's bytes end the file
        entries[1].write_bytes(bytes(middle))
        warnings: list[str] = []
        _verified(setup, [_node(setup, tmp_path / "after", warnings)])
        (warning,) = [w for w in warnings if setup.barrier.host in w]
        assert digest in warning and "does not match its digest" in warning
        # the tampered blob came again from the origin, the rest from the cache
        assert setup.meter.blob_bytes[digest] >= setup.blobs[digest]
        assert set(setup.meter.blob_bytes) == {digest}
