"""Fixtures for the registry client's unit tests: a fake registry, a clock that never sleeps."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from modelreg.content.registry import RegistryClient, RetryPolicy, StaticCredentials
from tests.unit.content.registry.fakes import FakeRegistry


class FakeClock:
    """Monotonic time that only moves when the code under test 'sleeps'."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def retry(clock: FakeClock) -> RetryPolicy:
    return RetryPolicy(sleep=clock.sleep, clock=clock, jitter=lambda: 1.0)


@pytest.fixture
def fake() -> FakeRegistry:
    return FakeRegistry()


MakeClient = Callable[..., RegistryClient]


@pytest.fixture
def make_client(fake: FakeRegistry, retry: RetryPolicy) -> Iterator[MakeClient]:
    clients: list[RegistryClient] = []

    def make(*, login: bool = False, **kwargs: object) -> RegistryClient:
        if login:
            kwargs.setdefault(
                "credentials", StaticCredentials(username=fake.username, password=fake.password)
            )
        kwargs.setdefault("retry", retry)
        client = RegistryClient(fake.host, transport=fake.transport(), **kwargs)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
