"""Retries: which requests, on what, how long to wait, and the error after the budget."""

from __future__ import annotations

import email.utils
import ssl

import httpx
import pytest

from modelreg.content.registry import RetryPolicy
from modelreg.content.registry.retry import parse_retry_after
from modelreg.errors import InvalidInputError, NetworkError, RateLimitedError, RegistryError
from tests.unit.content.registry.conftest import FakeClock, MakeClient
from tests.unit.content.registry.fakes import FakeRegistry


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(date, now=1_000_000) == pytest.approx(30.0)
    assert parse_retry_after(email.utils.formatdate(10, usegmt=True), now=1_000) == 0.0


def test_backoff_is_exponential_with_full_jitter() -> None:
    top = RetryPolicy(base_delay=0.5, max_delay=3, jitter=lambda: 1.0)
    assert [top.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    bottom = RetryPolicy(jitter=lambda: 0.0)
    assert bottom.backoff(4) == 0.0
    with pytest.raises(InvalidInputError):
        RetryPolicy(max_attempts=0)


def flaky(fake: FakeRegistry, statuses: list[int], headers: dict[str, str] | None = None) -> None:
    """The next requests answer the given statuses, then the registry behaves."""
    remaining = list(statuses)

    def interceptor(request: httpx.Request) -> httpx.Response | None:
        if remaining:
            return httpx.Response(remaining.pop(0), headers=headers or {})
        return None

    fake.interceptors.append(interceptor)


def test_get_retried_on_5xx_then_succeeds(
    fake: FakeRegistry, make_client: MakeClient, clock: FakeClock
) -> None:
    flaky(fake, [503, 502, 500])
    make_client().ping()
    assert len(fake.requests) == 4
    assert clock.sleeps == [0.2, 0.4, 0.8]


def test_429_honours_retry_after_capped_by_max_delay(
    fake: FakeRegistry, make_client: MakeClient, clock: FakeClock
) -> None:
    flaky(fake, [429], {"Retry-After": "3"})
    make_client().ping()
    flaky(fake, [429], {"Retry-After": "3600"})
    make_client().ping()
    assert clock.sleeps == [3.0, 10.0]


def test_rate_limited_after_budget(fake: FakeRegistry, make_client: MakeClient) -> None:
    flaky(fake, [429] * 10, {"Retry-After": "1"})
    with pytest.raises(RateLimitedError) as info:
        make_client().ping()
    assert len(fake.requests) == 5
    message = str(info.value)
    assert fake.host in message and "after 5 attempts" in message and "/v2/" in message


def test_5xx_after_budget_names_host_and_attempts(
    fake: FakeRegistry, make_client: MakeClient
) -> None:
    flaky(fake, [503] * 10)
    with pytest.raises(RegistryError) as info:
        make_client().ping()
    assert info.value.status == 503
    assert "503 Service Unavailable" in info.value.message
    assert "after 5 attempts" in info.value.message


def test_total_deadline_stops_retries(fake: FakeRegistry, make_client: MakeClient) -> None:
    clock = FakeClock()
    policy = RetryPolicy(
        max_attempts=100,
        base_delay=10,
        max_delay=10,
        total_deadline=25,
        sleep=clock.sleep,
        clock=clock,
        jitter=lambda: 1.0,
    )
    flaky(fake, [500] * 100)
    with pytest.raises(RegistryError):
        make_client(retry=policy).ping()
    assert sum(clock.sleeps) <= 25
    assert len(fake.requests) == 3


def _raise(exc: Exception) -> httpx.Response:
    raise exc


def test_connect_errors_retried_then_network_error(
    fake: FakeRegistry, make_client: MakeClient
) -> None:
    fake.interceptors.append(lambda r: _raise(httpx.ConnectError("connection refused")))
    with pytest.raises(NetworkError) as info:
        make_client().ping()
    assert len(fake.requests) == 5
    assert "cannot connect to registry.test" in info.value.message
    assert "after 5 attempts" in info.value.message
    assert "--plain-http" in (info.value.hint or "")


def test_tls_verification_failure_not_retried(fake: FakeRegistry, make_client: MakeClient) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        try:
            raise ssl.SSLCertVerificationError("certificate verify failed: self-signed")
        except ssl.SSLError as exc:
            raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]") from exc

    fake.interceptors.append(broken)
    with pytest.raises(NetworkError) as info:
        make_client().ping()
    assert len(fake.requests) == 1
    assert "--ca-file" in (info.value.hint or "") and "--insecure" in (info.value.hint or "")


def _fail_first_request(fake: FakeRegistry, exc: Exception) -> dict[str, int]:
    """The first request to ``fake`` raises ``exc``; the others reach it. The returned
    ``{"n": ...}`` counts the requests seen."""
    calls = {"n": 0}

    def fail_once(request: httpx.Request) -> httpx.Response | None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise exc
        return None

    fake.interceptors.append(fail_once)
    return calls


def test_read_timeout_retried_for_get_not_for_post(
    fake: FakeRegistry, make_client: MakeClient
) -> None:
    calls = _fail_first_request(fake, httpx.ReadTimeout("slow"))
    make_client().ping()
    assert calls["n"] == 2

    fake.interceptors.clear()
    fake.interceptors.append(lambda r: _raise(httpx.ReadTimeout("slow")))
    client = make_client()
    with pytest.raises(NetworkError, match="did not answer in time"):
        client.request("POST", "/v2/x/blobs/uploads/", scopes=(), what="start", ok=(202,))
    assert len([r for r in fake.requests if r.method == "POST"]) == 1


def test_post_retried_when_nothing_reached_the_server(
    fake: FakeRegistry, make_client: MakeClient
) -> None:
    calls = _fail_first_request(fake, httpx.ConnectError("connection refused"))
    response = make_client().request(
        "POST", "/v2/x/blobs/uploads/", scopes=(), what="start", ok=(202,)
    )
    response.close()
    assert calls["n"] == 2


def test_request_with_streamed_body_is_never_retried(
    fake: FakeRegistry, make_client: MakeClient
) -> None:
    fake.interceptors.append(lambda r: httpx.Response(500))
    sent: list[bytes] = []

    def body() -> object:
        for block in (b"a" * 10, b"b" * 10):
            sent.append(block)
            yield block

    with pytest.raises(RegistryError) as info:
        make_client().request(
            "PATCH",
            "/v2/x/blobs/uploads/u1",
            scopes=(),
            what="send bytes",
            content=body(),  # type: ignore[arg-type]
            headers={"Content-Length": "20"},
            ok=(202,),
            idempotent=True,
        )
    assert info.value.status == 500
    assert len(fake.requests) == 1


def test_manifest_put_is_retried(fake: FakeRegistry, make_client: MakeClient) -> None:
    from modelreg.oci.manifest import Manifest, empty_config

    flaky(fake, [502])
    manifest = Manifest(config=empty_config(), layers=())
    make_client().repository("x").push_manifest(manifest.descriptor(), manifest.raw, "v1")
    assert fake.count("PUT", "/manifests/v1") == 2
