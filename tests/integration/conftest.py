"""Fixtures running a real CNCF Distribution registry (``docker-registry`` 2.8).

* ``registry_plain``: HTTP, no auth (session scope, shared: use unique repo names).
* ``registry_tls_basic``: HTTPS (own CA, ``server.ca_file``) + htpasswd basic auth.
* ``registry_token``: HTTP + token auth served by ``server.token_server``.
* ``registry_factory``: function scope, ``registry_factory(auth=..., tls=...,
  extra_config=..., token_options=...)`` starts a fresh, empty registry.

See ``tests/integration/registry_server.py`` for the implementation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.registry_server import (
    AuthKind,
    RegistryBinaryMissing,
    RegistryFactory,
    RegistryServer,
    registry_binary,
    start_registry,
)
from tests.integration.sigstore_fixtures import FakeSigstore


def _require_binary() -> None:
    try:
        registry_binary()
    except RegistryBinaryMissing as exc:
        pytest.fail(str(exc), pytrace=False)


def _session_registry(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    auth: AuthKind | None,
    tls: bool,
) -> Iterator[RegistryServer]:
    _require_binary()
    with start_registry(tmp_path_factory.mktemp(name), auth=auth, tls=tls) as server:
        yield server


@pytest.fixture(scope="session")
def registry_plain(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RegistryServer]:
    yield from _session_registry(tmp_path_factory, "registry-plain", None, False)


@pytest.fixture(scope="session")
def registry_tls_basic(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RegistryServer]:
    yield from _session_registry(tmp_path_factory, "registry-tls-basic", "basic", True)


@pytest.fixture(scope="session")
def registry_token(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RegistryServer]:
    yield from _session_registry(tmp_path_factory, "registry-token", "token", False)


@pytest.fixture
def registry_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RegistryFactory]:
    """Start fresh registries; all of them are stopped when the test ends."""
    _require_binary()
    with contextlib.ExitStack() as stack:

        def factory(
            auth: AuthKind | None = None, tls: bool = False, **kwargs: Any
        ) -> RegistryServer:
            tmp_dir = tmp_path_factory.mktemp(f"registry-{auth or 'plain'}{'-tls' if tls else ''}")
            return stack.enter_context(start_registry(tmp_dir, auth=auth, tls=tls, **kwargs))

        yield factory


@pytest.fixture
def pull_through_cache(
    registry_factory: RegistryFactory,
) -> Any:
    """``pull_through_cache(upstream)``: a fresh Distribution registry in proxy mode
    (``proxy.remoteurl``) in front of ``upstream``, with its credentials if it has any.

    A plain-HTTP upstream only: the cache is a Go process that would need the TLS
    upstream's private CA in its environment.
    """

    def start(upstream: RegistryServer) -> RegistryServer:
        proxy: dict[str, Any] = {"remoteurl": upstream.url}
        if upstream.username is not None:
            proxy.update(username=upstream.username, password=upstream.password)
        return registry_factory(extra_config={"proxy": proxy})

    return start


@pytest.fixture
def behind_cache(
    registry_factory: RegistryFactory, pull_through_cache: Any
) -> tuple[RegistryServer, RegistryServer]:
    """(a plain upstream, a pull-through cache in front of it)."""
    upstream = registry_factory()
    return upstream, pull_through_cache(upstream)


@pytest.fixture(scope="module")
def fake() -> FakeSigstore:
    """The tests' private Sigstore (CA, log, OIDC tokens), one per module."""
    return FakeSigstore()
