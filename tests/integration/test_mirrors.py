"""Mirrors and per-host configuration against real Distribution registries on loopback.

The upstream is a plain Distribution registry (or TLS + basic auth with its own CA),
the mirror a Distribution registry in proxy mode (a pull-through cache) in front of
it, configured only through a ``hosts.toml`` in the test's hosts directory.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelreg import Client, RemoteOptions
from modelreg.errors import NetworkError
from tests.hostile.crafted import CraftedRegistry
from tests.integration.registry_server import RegistryServer, _stop_process, free_port
from tests.listeners import silent_listener

StartCache = Callable[[RegistryServer], RegistryServer]
WEIGHTS = bytes(range(256)) * 4096  # 1 MiB: read through the bulk path


def _model(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    (model / "weights.bin").write_bytes(WEIGHTS)
    return model


def _push(server: RegistryServer, tmp_path: Path, **options: object) -> str:
    ref = f"{server.host}/mirrors/{uuid.uuid4().hex[:10]}:v1"
    with Client(RemoteOptions(**options)) as client:  # type: ignore[arg-type]
        client.push(_model(tmp_path), ref)
    return ref


def _hosts_dir(tmp_path: Path, host: str, text: str) -> Path:
    root = tmp_path / "certs.d"
    (root / host).mkdir(parents=True)
    (root / host / "hosts.toml").write_text(text)
    return root


def _blob_gets(server: RegistryServer) -> int:
    pattern = re.compile(r'http\.request\.method=GET .*http\.request\.uri="[^"]*/blobs/sha256:')
    return sum(
        1
        for line in server.log_text().splitlines()
        if "response completed" in line and pattern.search(line)
    )


def _pull(ref: str, out: Path, hosts: Path, warnings: list[str] | None = None) -> object:
    options = RemoteOptions(
        hosts_dirs=(str(hosts),),
        on_warning=(warnings.append if warnings is not None else None),
    )
    with Client(options) as client:
        return client.pull(ref, out, cache=False)


def _pull_via(
    cache: RegistryServer, upstream: RegistryServer, ref: str, tmp_path: Path, capabilities: str
) -> tuple[Any, int, int]:
    """Pull ``ref`` with ``cache`` as the upstream's mirror (its ``capabilities``), check
    the copy; (the result, bytes from the cache, bytes from the upstream)."""
    hosts = _hosts_dir(
        tmp_path,
        upstream.host,
        f'server = "http://{upstream.host}"\n\n'
        f'[host."http://{cache.host}"]\n  capabilities = [{capabilities}]\n',
    )
    with Client(RemoteOptions(hosts_dirs=(str(hosts),))) as client:
        result = client.pull(ref, tmp_path / "out", cache=False)
        registry = client.registry(upstream.host)
        (mirror,) = registry.mirrors
        counts = mirror.client.stats.bytes_received, registry.stats.bytes_received
    assert (tmp_path / "out" / "weights.bin").read_bytes() == WEIGHTS
    return result, *counts


def test_pull_goes_through_the_pull_through_cache(
    behind_cache: tuple[RegistryServer, RegistryServer], tmp_path: Path
) -> None:
    upstream, cache = behind_cache
    ref = _push(upstream, tmp_path)
    result, served_by_mirror, served_by_upstream = _pull_via(
        cache, upstream, ref, tmp_path, '"pull", "resolve"'
    )
    assert result.digest in result.reference
    assert _blob_gets(cache) >= 3  # config and layers came through the cache
    assert served_by_mirror >= len(WEIGHTS)
    assert served_by_upstream == 0
    # the client asked the cache with containerd's ns= parameter
    assert f"ns={upstream.host.replace(':', '%3A')}" in cache.log_text()


def test_dead_mirror_falls_back_to_the_upstream(
    registry_factory: Callable[..., RegistryServer], tmp_path: Path
) -> None:
    upstream = registry_factory()
    ref = _push(upstream, tmp_path)
    dead = f"127.0.0.1:{free_port()}"
    hosts = _hosts_dir(
        tmp_path,
        upstream.host,
        f'server = "http://{upstream.host}"\n[host."http://{dead}"]\n',
    )
    warnings: list[str] = []
    _pull(ref, tmp_path / "out", hosts, warnings)
    assert (tmp_path / "out" / "weights.bin").read_bytes() == WEIGHTS
    # reported once, then skipped for the rest of the pull
    assert len([w for w in warnings if dead in w]) == 1, warnings


def test_a_hung_mirror_costs_the_timeout_once_then_the_upstream_serves(
    registry_factory: Callable[..., RegistryServer], tmp_path: Path
) -> None:
    upstream = registry_factory()
    ref = _push(upstream, tmp_path)
    warnings: list[str] = []
    with silent_listener() as port:
        hung = f"127.0.0.1:{port}"
        hosts = _hosts_dir(
            tmp_path, upstream.host, f'server = "http://{upstream.host}"\n[host."http://{hung}"]\n'
        )
        options = RemoteOptions(hosts_dirs=(str(hosts),), timeout=1.0, on_warning=warnings.append)
        with Client(options) as client:
            client.pull(ref, tmp_path / "out", cache=False)
    assert (tmp_path / "out" / "weights.bin").read_bytes() == WEIGHTS
    # reported once, then skipped for the rest of the pull: one timeout, not one per blob
    assert len([w for w in warnings if hung in w]) == 1, warnings


def _asked(server: RegistryServer, what: str) -> list[str]:
    """The paths of the GET/HEAD requests for ``what`` (manifests, blobs) it answered."""
    pattern = re.compile(r'"(?:GET|HEAD) (/v2/[^ ?"]*/' + what + r'/[^ ?"]*)[^ "]* HTTP/')
    return [m.group(1) for line in server.log_text().splitlines() if (m := pattern.search(line))]


def test_a_mirror_without_resolve_serves_blobs_while_tags_resolve_upstream(
    behind_cache: tuple[RegistryServer, RegistryServer], tmp_path: Path
) -> None:
    upstream, cache = behind_cache
    ref = _push(upstream, tmp_path)
    _, from_mirror, _ = _pull_via(cache, upstream, ref, tmp_path, '"pull"')
    tag = "/manifests/" + ref.rsplit(":", 1)[1]
    assert not [u for u in _asked(cache, "manifests") if u.endswith(tag)]
    assert [u for u in _asked(upstream, "manifests") if u.endswith(tag)]
    assert _asked(cache, "blobs") and from_mirror >= len(WEIGHTS)


def test_upstream_down_digest_from_the_cache_tag_fails_clearly(
    behind_cache: tuple[RegistryServer, RegistryServer], tmp_path: Path
) -> None:
    upstream, cache = behind_cache
    ref = _push(upstream, tmp_path)
    warm = _hosts_dir(
        tmp_path,
        upstream.host,
        f'server = "http://{upstream.host}"\n[host."http://{cache.host}"]\n',
    )
    pulled = _pull(ref, tmp_path / "warm", warm)
    by_digest = pulled.reference  # type: ignore[attr-defined]
    assert upstream.process is not None
    _stop_process(upstream.process)
    digest_only = tmp_path / "digest-only"
    (digest_only / upstream.host).mkdir(parents=True)
    (digest_only / upstream.host / "hosts.toml").write_text(
        f'server = "http://{upstream.host}"\n'
        f'[host."http://{cache.host}"]\n  capabilities = ["pull"]\n'
    )
    _pull(by_digest, tmp_path / "by-digest", digest_only)
    assert (tmp_path / "by-digest" / "weights.bin").read_bytes() == WEIGHTS
    with pytest.raises(NetworkError) as info:
        _pull(ref, tmp_path / "by-tag", digest_only)
    assert "resolve" in (info.value.hint or "")
    assert not (tmp_path / "by-tag").exists() or not any((tmp_path / "by-tag").iterdir())


def test_private_ca_from_hosts_toml_and_no_credentials_to_the_mirror(
    registry_factory: Callable[..., RegistryServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream = registry_factory(auth="basic", tls=True)
    assert upstream.ca_file is not None
    monkeypatch.setenv("DOCKER_CONFIG", str(upstream.docker_config(tmp_path).parent))
    ref = _push(upstream, tmp_path, ca_file=str(upstream.ca_file))
    with CraftedRegistry() as mirror:  # knows nothing: every read is a 404
        hosts = _hosts_dir(
            tmp_path,
            upstream.host,
            f'server = "https://{upstream.host}"\nca = "{upstream.ca_file}"\n\n'
            f'[host."http://{mirror.host}"]\n  capabilities = ["pull", "resolve"]\n',
        )
        _pull(ref, tmp_path / "out", hosts)  # no ca_file anywhere but hosts.toml
        assert mirror.requests, "the mirror was never asked"
        assert all("authorization" not in seen.headers for seen in mirror.requests)
        ns = f"ns={upstream.host.replace(':', '%3A')}"
        assert all(ns in seen.path for seen in mirror.requests if seen.path != "/v2/")
    assert (tmp_path / "out" / "weights.bin").read_bytes() == WEIGHTS


def test_credentials_go_to_a_mirror_only_when_configured_for_it(
    registry_factory: Callable[..., RegistryServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream = registry_factory()
    ref = _push(upstream, tmp_path)
    with CraftedRegistry() as mirror:
        mirror.challenge = 'Basic realm="mirror"'
        config = tmp_path / "docker" / "config.json"
        config.parent.mkdir()
        # "bWlycm9yOnNlY3JldA==" is mirror:secret
        config.write_text(
            '{"auths": {"%s": {"auth": "bWlycm9yOnNlY3JldA=="}}}' % mirror.host  # noqa: UP031
        )
        monkeypatch.setenv("DOCKER_CONFIG", str(config.parent))
        hosts = _hosts_dir(
            tmp_path,
            upstream.host,
            f'server = "http://{upstream.host}"\n[host."http://{mirror.host}"]\n',
        )
        _pull(ref, tmp_path / "out", hosts)
        sent = {s.headers.get("authorization") for s in mirror.requests} - {None}
    assert sent == {"Basic bWlycm9yOnNlY3JldA=="}


# ------------------------------------------------------------------ cp per-side flags


def test_cp_from_private_ca_registry_to_plain_http_one(
    registry_factory: Callable[..., RegistryServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelreg_cli.main import app
    from typer.testing import CliRunner

    source = registry_factory(auth="basic", tls=True)
    target = registry_factory()
    assert source.ca_file is not None
    monkeypatch.setenv("DOCKER_CONFIG", str(source.docker_config(tmp_path).parent))
    ref = _push(source, tmp_path, ca_file=str(source.ca_file))
    dst = f"{target.host}/copied/{uuid.uuid4().hex[:8]}:v1"
    runner = CliRunner()
    # the failure a new user meets: one --ca-file for both ends makes the loopback
    # destination HTTPS too, and it speaks plain HTTP
    shared = runner.invoke(app, ["cp", ref, dst, "--ca-file", str(source.ca_file)])
    assert shared.exit_code == 6, shared.output
    per_side = runner.invoke(
        app, ["cp", ref, dst, "--from-ca-file", str(source.ca_file), "--to-plain-http"]
    )
    assert per_side.exit_code == 0, per_side.output
    with Client(RemoteOptions(ca_file=str(source.ca_file))) as client:
        copied = client.resolve(ref)[2].digest
    with Client(RemoteOptions()) as client:
        assert client.resolve(dst)[2].digest == copied


def test_cp_per_side_flags_for_one_host_must_agree(tmp_path: Path) -> None:
    from modelreg_cli.main import app
    from typer.testing import CliRunner

    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    result = CliRunner().invoke(
        app,
        ["cp", "localhost:1/a:v1", "localhost:1/b:v1", "--from-ca-file", str(ca), "--to-insecure"],
    )
    assert result.exit_code == 2
    assert "both sides are localhost:1" in result.output
    local = CliRunner().invoke(
        app, ["cp", "oci:" + str(tmp_path), "localhost:1/b", "--from-insecure"]
    )
    assert local.exit_code == 2 and "not one" in local.output
