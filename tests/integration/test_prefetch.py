"""``prefetch`` warms a real pull-through cache (Distribution in proxy mode) in front of
a real Distribution upstream: after it, the upstream can be stopped and a pull by
digest through the cache still succeeds; a mirror serving wrong bytes is found out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from modelreg import Client, RemoteOptions
from modelreg.errors import InvalidInputError
from modelreg.events import Event
from tests.hostile.crafted import CraftedRegistry, sha256
from tests.integration.registry_server import RegistryServer, _stop_process
from tests.integration.test_mirrors import (
    WEIGHTS,
    _blob_gets,
    _hosts_dir,
    _pull,
    _push,
)

StartCache = Callable[[RegistryServer], RegistryServer]


def _wait_stored(cache: RegistryServer, count: int, timeout: float = 30.0) -> None:
    """Distribution's proxy mode answers a miss from the upstream and stores the blob by
    fetching it again in the background: wait until ``count`` blobs are on its disk."""
    blobs = cache.root_dir / "docker" / "registry" / "v2" / "blobs"
    deadline = time.monotonic() + timeout
    while len(list(blobs.rglob("data"))) < count:
        assert time.monotonic() < deadline, "the cache never stored what it served"
        time.sleep(0.1)


def test_prefetch_warms_the_cache_so_pulls_survive_the_upstream(
    behind_cache: tuple[RegistryServer, RegistryServer], tmp_path: Path
) -> None:
    upstream, cache = behind_cache
    ref = _push(upstream, tmp_path)
    events: list[Event] = []
    # no configuration at all: the cache is named on the command line
    with Client(RemoteOptions(hosts_dirs=())) as client:
        result = client.prefetch(ref, via=[f"http://{cache.host}"], progress=events.append)
    assert result.warm, result.to_dict()
    (warmth,) = result.mirrors
    assert warmth.mirror == cache.host
    assert warmth.from_upstream == 0
    assert warmth.from_mirror >= len(WEIGHTS)
    assert result.blobs == 4 and result.blob_bytes >= len(WEIGHTS)  # config + 3 files
    assert {e.kind for e in events} >= {"start", "advance", "done"}
    assert _blob_gets(cache) >= 3  # as logged by the cache (small blobs may log late)
    json.dumps(result.to_dict())

    # the upstream gone: by digest from the cache alone
    _wait_stored(cache, result.blobs + result.manifests)
    assert upstream.process is not None
    _stop_process(upstream.process)
    hosts = _hosts_dir(
        tmp_path,
        upstream.host,
        f'server = "http://{upstream.host}"\n'
        f'[host."http://{cache.host}"]\n  capabilities = ["pull"]\n',
    )
    _pull(result.reference, tmp_path / "out", hosts)
    assert (tmp_path / "out" / "weights.bin").read_bytes() == WEIGHTS


def test_prefetch_without_via_warms_the_configured_mirrors_and_counts_fallback(
    registry_factory: Callable[..., RegistryServer], tmp_path: Path
) -> None:
    upstream = registry_factory()
    ref = _push(upstream, tmp_path)
    with CraftedRegistry() as empty:  # a mirror that is no cache: every read a 404
        hosts = _hosts_dir(
            tmp_path,
            upstream.host,
            f'server = "http://{upstream.host}"\n[host."http://{empty.host}"]\n',
        )
        with Client(RemoteOptions(hosts_dirs=(str(hosts),))) as client:
            result = client.prefetch(ref)
    (warmth,) = result.mirrors
    assert warmth.mirror == empty.host
    assert not result.warm
    assert warmth.from_mirror == 0
    assert warmth.from_upstream >= len(WEIGHTS)


def test_prefetch_needs_a_mirror(
    registry_factory: Callable[..., RegistryServer], tmp_path: Path
) -> None:
    upstream = registry_factory()
    ref = _push(upstream, tmp_path)
    with Client(RemoteOptions(hosts_dirs=())) as client, pytest.raises(InvalidInputError) as info:
        client.prefetch(ref)
    assert "--via" in (info.value.hint or "")
    with Client(RemoteOptions(hosts_dirs=())) as client, pytest.raises(InvalidInputError):
        client.prefetch(ref, via=[upstream.host])


def test_prefetch_through_a_lying_mirror_reads_the_blob_again_from_upstream(
    tmp_path: Path,
) -> None:
    weight = "application/vnd.cncf.model.weight.v1.raw"
    good = b"weights" * 1000
    warnings: list[str] = []
    with CraftedRegistry() as upstream, CraftedRegistry() as mirror:
        for server in (upstream, mirror):
            server.model("m", "v1", [(weight, good, {"org.opencontainers.image.title": "w"})])
        mirror.blob("m", b"WEIGHTS" + good[7:], digest=sha256(good))
        options = RemoteOptions(hosts_dirs=(), on_warning=warnings.append)
        with Client(options) as client:
            result = client.prefetch(f"{upstream.host}/m:v1", via=[f"http://{mirror.host}"])
        assert upstream.count("GET", rf"/v2/m/blobs/{sha256(good)}.*") == 1
    (warmth,) = result.mirrors
    assert warmth.untrusted and not result.warm
    assert any(mirror.host in w and "untrusted" in w for w in warnings), warnings


def test_prefetch_cli(
    behind_cache: tuple[RegistryServer, RegistryServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from modelreg_cli.main import app
    from typer.testing import CliRunner

    upstream, cache = behind_cache
    ref = _push(upstream, tmp_path)
    monkeypatch.setenv("MODELREG_HOSTS_DIR", "")
    runner = CliRunner()
    done = runner.invoke(app, ["prefetch", ref, "--via", f"http://{cache.host}", "--json"])
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["warm"] is True
    assert doc["served"][cache.host] >= len(WEIGHTS)
    text = runner.invoke(app, ["prefetch", ref, "--via", f"http://{cache.host}", "--referrers"])
    assert text.exit_code == 0, text.output
    assert cache.host in text.stdout and "warm" in text.stdout
