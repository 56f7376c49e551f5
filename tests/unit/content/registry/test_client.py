"""RegistryClient: host validation, the scheme rule, TLS options, counters, exports."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

import modelreg.content.registry as registry
from modelreg.content.registry import RegistryClient, RetryPolicy, is_loopback
from modelreg.errors import InvalidInputError, NetworkError
from tests.integration.registry_server import CertificateAuthority
from tests.unit.content.registry.conftest import MakeClient
from tests.unit.content.registry.fakes import FakeRegistry


def test_exports_resolve() -> None:
    for name in registry.__all__:
        assert getattr(registry, name) is not None


@pytest.mark.parametrize(
    "host",
    [
        "http://registry.test",
        "registry.test/path",
        "",
        "bad host",
        "-x.test",
        "registry.test:99999x",
    ],
)
def test_invalid_hosts(host: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        RegistryClient(host)
    assert "HOST[:PORT]" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.10.0.1", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("registry.test:5000", False),
        ("10.0.0.1:5000", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def _tls_refusing_transport(log: list[str]) -> httpx.MockTransport:
    """A loopback registry that speaks plain HTTP only."""

    def handle(request: httpx.Request) -> httpx.Response:
        log.append(f"{request.url.scheme} {request.url.path}")
        if request.url.scheme == "https":
            try:
                raise ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
            except ssl.SSLError as exc:
                raise httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version") from exc
        return httpx.Response(200, json={})

    return httpx.MockTransport(handle)


def test_scheme_rule(retry: RetryPolicy) -> None:
    assert RegistryClient("registry.test:5000").scheme == "https"
    assert RegistryClient("registry.test:5000", plain_http=True).scheme == "http"
    log: list[str] = []
    transport = _tls_refusing_transport(log)
    with RegistryClient("127.0.0.1:5000", transport=transport, retry=retry) as client:
        client.ping()
        client.ping()
        assert client.scheme == "http"
    assert log == ["https /v2/", "http /v2/", "http /v2/"]


def test_loopback_with_ca_file_never_falls_back(tmp_path: Path, retry: RetryPolicy) -> None:
    log: list[str] = []
    ca = tmp_path / "ca.pem"
    ca.write_bytes(CertificateAuthority("unit test CA").cert_pem)
    with RegistryClient(
        "localhost:5000", ca_file=str(ca), transport=_tls_refusing_transport(log), retry=retry
    ) as client:
        assert client.scheme == "https"
        with pytest.raises(NetworkError) as info:
            client.ping()
    assert "--plain-http" in (info.value.hint or "")
    assert log == ["https /v2/"]


def test_loopback_with_bad_certificate_does_not_fall_back(retry: RetryPolicy) -> None:
    log: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        log.append(request.url.scheme)
        try:
            raise ssl.SSLCertVerificationError(1, "certificate verify failed")
        except ssl.SSLError as exc:
            raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]") from exc

    with RegistryClient("localhost:5000", transport=httpx.MockTransport(handle), retry=retry) as c:
        with pytest.raises(NetworkError) as info:
            c.ping()
        assert c.scheme == "https"
    assert set(log) == {"https"}
    assert "--ca-file" in (info.value.hint or "")


def test_missing_ca_file() -> None:
    with pytest.raises(InvalidInputError, match="cannot load the CA certificate file"):
        RegistryClient("registry.test", ca_file="/nonexistent/ca.pem")


def test_insecure_warns() -> None:
    warnings: list[str] = []
    with RegistryClient("registry.test", insecure=True, on_warning=warnings.append) as client:
        assert client.scheme == "https"
    assert len(warnings) == 1 and "verification is disabled for registry.test" in warnings[0]


def test_stats_and_close(fake: FakeRegistry, make_client: MakeClient) -> None:
    client = make_client()
    client.ping()
    client.ping()
    assert client.stats.requests == 2
    snapshot = client.stats.snapshot()
    assert (snapshot.requests, snapshot.bytes_sent, snapshot.bytes_received) == (2, 0, 0)
    client.close()
    client.close()
    with pytest.raises(InvalidInputError, match="closed"):
        client.ping()


def test_docker_hub_alias_and_library_prefix() -> None:
    with RegistryClient("docker.io") as client:
        assert client.api_host == "registry-1.docker.io"
        assert client.repository("ubuntu").repository == "library/ubuntu"
        assert client.repository("org/model").repository == "org/model"


def test_repository_name_validated(make_client: MakeClient) -> None:
    with pytest.raises(InvalidInputError, match="invalid repository name 'Team/LLM'"):
        make_client().repository("Team/LLM")


def test_plain_http_password_warning(fake: FakeRegistry, retry: RetryPolicy) -> None:
    from modelreg.content.registry import StaticCredentials

    fake.auth = "basic"
    warnings: list[str] = []
    with RegistryClient(
        fake.host,
        plain_http=True,
        transport=fake.transport(),
        retry=retry,
        on_warning=warnings.append,
        credentials=StaticCredentials(username=fake.username, password=fake.password),
    ) as client:
        client.ping()
        client.ping()
    assert len(warnings) == 1 and "over plain HTTP" in warnings[0]
    assert fake.password not in warnings[0]


def test_unreachable_loopback_registry_is_probed_again(retry: RetryPolicy) -> None:
    log: list[str] = []
    state = {"up": False}

    def handle(request: httpx.Request) -> httpx.Response:
        log.append(request.url.scheme)
        if not state["up"]:
            try:
                raise ConnectionRefusedError(111, "Connection refused")
            except OSError as exc:
                raise httpx.ConnectError("[Errno 111] Connection refused") from exc
        return _tls_refusing_transport([]).handle_request(request)

    with RegistryClient("localhost:5000", transport=httpx.MockTransport(handle), retry=retry) as c:
        with pytest.raises(NetworkError, match="cannot connect"):
            c.ping()
        state["up"] = True
        c.ping()
        assert c.scheme == "http"
