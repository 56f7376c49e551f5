"""Per-registry circuit breakers, alone and in the engine (SECURITY 23, issue 20).

A fake clock drives the windows; the fake registry counts the requests it gets, so
"denied without contacting the registry" is a count, not a timing."""

from __future__ import annotations

import json
from typing import Any

from modelreg.webhook.admission import parse_review, validation_response
from modelreg.webhook.breaker import BreakerConfig, Breakers
from modelreg.webhook.engine import Engine, EngineConfig
from modelreg.webhook.metrics import Metrics
from tests.unit.webhook.fakeregistry import FakeClient
from tests.unit.webhook.reviews import pod_spec, review, workload
from tests.unit.webhook.test_engine import REG, Clock, policies

OTHER = "other.example.com"


def breakers(clock: Clock, failures: int = 3, reset: float = 10.0) -> Breakers:
    return Breakers(BreakerConfig(failures=failures, reset_after=reset), Metrics(), clock)


def test_opens_after_n_failures_in_a_row() -> None:
    clock = Clock()
    b = breakers(clock)
    b.failure(REG)
    b.failure(REG)
    b.success(REG)  # an answer resets the count: failures must be in a row
    b.failure(REG)
    b.failure(REG)
    assert b.state(REG) == "closed" and b.blocked(REG) is None
    b.failure(REG)
    assert b.state(REG) == "open"
    reason = b.blocked(REG)
    assert reason is not None
    assert f"registry {REG} unreachable: circuit open after 3 connection failures" in reason
    assert b.state(OTHER) == "closed" and b.blocked(OTHER) is None  # per registry


def test_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    clock = Clock()
    b = breakers(clock)
    for _ in range(3):
        b.failure(REG)
    clock.now += 9.9
    assert b.blocked(REG) is not None
    clock.now += 0.2
    assert b.blocked(REG, probe=False) is None  # a look from the event loop takes nothing
    assert b.state(REG) == "open"
    assert b.blocked(REG) is None  # the probe
    assert b.state(REG) == "half-open"
    assert b.blocked(REG) is not None  # everyone else waits for the probe's result
    assert b.blocked(REG, probe=False) is not None
    b.success(REG)
    assert b.state(REG) == "closed" and b.blocked(REG) is None
    m = b.metrics
    assert m.breaker_state.value(registry=REG) == 0
    assert m.breaker_transitions.value(registry=REG, state="open") == 1
    assert m.breaker_transitions.value(registry=REG, state="half-open") == 1
    assert m.breaker_transitions.value(registry=REG, state="closed") == 1
    assert m.breaker_denials.value(registry=REG) == 3


def test_failed_probe_opens_again_and_a_lost_probe_is_replaced() -> None:
    clock = Clock()
    b = Breakers(BreakerConfig(failures=2, reset_after=5, probe_timeout=20), Metrics(), clock)
    b.failure(REG)
    b.failure(REG)
    clock.now += 5
    assert b.blocked(REG) is None and b.state(REG) == "half-open"
    b.failure(REG)  # the probe failed: open for another window
    assert b.state(REG) == "open" and b.blocked(REG) is not None
    assert b.metrics.breaker_state.value(registry=REG) == 1
    clock.now += 5
    assert b.blocked(REG) is None  # next probe
    clock.now += 19
    assert b.blocked(REG) is not None  # probe still running
    clock.now += 1
    assert b.blocked(REG) is None  # it never reported: another probe


def test_zero_failures_never_opens() -> None:
    b = breakers(Clock(), failures=0)
    for _ in range(100):
        b.failure(REG)
    assert b.state(REG) == "closed"


# ----------------------------------------------------------------- in the engine
def refs_of(engine: Engine, *images: str) -> Any:
    doc = review(workload("Pod", pod_spec(list(images))))
    return engine.models(parse_review(json.dumps(doc).encode()))


def test_engine_denies_fast_without_contacting_a_dead_registry(client: FakeClient) -> None:
    clock = Clock()
    config = EngineConfig(breaker=BreakerConfig(failures=3, reset_after=10))
    engine = Engine(policies(), client, config, clock=clock)
    good = refs_of(engine, f"{REG}/models/good:v1")
    other = refs_of(engine, f"{REG}/models/other:v1")
    # an allow decision made while the registry was up: cached
    assert engine.decide(good, deadline=clock.now + 5)[0].allowed
    client.down = True
    for _ in range(3):
        out = engine.decide(other, deadline=clock.now + 5)
        assert not out[0].allowed and "cannot connect" in (out[0].error or "")
    assert engine.breakers.state(REG) == "open"
    contacted = client.resolves
    # decisions needing the registry: denied on the event loop, before any thread
    blocked = engine.blocked(other)
    assert blocked is not None and "circuit open" in (blocked[0].error or "")
    resp = validation_response("u", blocked)
    assert resp["allowed"] is False and "fail closed" in resp["status"]["message"]
    # and on the decision threads too (a review that got past the loop's look)
    out = engine.decide(other, deadline=clock.now + 5)
    assert "circuit open" in (out[0].error or "")
    assert client.resolves == contacted  # nobody contacted the dead registry
    # the cached allow keeps serving within its TTL
    cached = engine.cached(good)
    assert cached is not None and cached[0].allowed
    assert engine.blocked(good) is None
    # after the window: one probe; the registry is back; the circuit closes
    client.down = False
    clock.now += 10
    assert engine.blocked(other) is None
    assert engine.decide(other, deadline=clock.now + 5)[0].allowed
    assert client.resolves == contacted + 1
    assert engine.breakers.state(REG) == "closed"
    assert engine.metrics.breaker_state.value(registry=REG) == 0
    engine.close()


def test_not_found_is_an_answer_not_a_connection_failure(client: FakeClient) -> None:
    engine = Engine(policies(), client, EngineConfig(breaker=BreakerConfig(failures=2)))
    missing = refs_of(engine, f"{REG}/models/missing:v1")
    for _ in range(5):
        assert not engine.decide(missing, deadline=engine._clock() + 5)[0].allowed
    assert engine.breakers.state(REG) == "closed"
    engine.close()


def test_a_registry_that_never_answers_opens_the_circuit_at_the_deadlines() -> None:
    """A hung registry: the decisions time out while their first request is still under
    way; each such timeout counts as a connection failure, without waiting for the
    request's own error."""
    import threading

    gate = threading.Event()

    class Hung(FakeClient):
        def resolve(self, ref: Any) -> Any:
            gate.wait(30)
            return super().resolve(ref)

    client = Hung()
    client.push_model(f"{REG}/models/good", "v1", {"model.safetensors": b"weights"})
    engine = Engine(policies(), client, EngineConfig(breaker=BreakerConfig(failures=2)))
    refs = refs_of(engine, f"{REG}/models/good:v1")
    for _ in range(2):
        out = engine.decide(refs, deadline=engine._clock() + 0.05)
        assert (out[0].error or "").startswith("registry slow: no decision")
    assert engine.breakers.state(REG) == "open"
    blocked = engine.blocked(refs_of(engine, f"{REG}/models/good:v1"))
    assert blocked is not None and "circuit open" in (blocked[0].error or "")
    gate.set()
    engine.close()
