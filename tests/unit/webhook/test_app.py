"""The webhook's request handling in-process (no sockets): fail closed on internal
errors, 4xx on junk, the deadline counted from arrival, the admission queue that sheds,
readiness, metrics. No timing assertions: counts, order and state only."""

from __future__ import annotations

import asyncio
import json
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from modelreg.policy import PolicySet
from modelreg.webhook import certs
from modelreg.webhook.admission import ModelRef, RefOutcome, parse_review
from modelreg.webhook.engine import Engine, EngineConfig
from modelreg.webhook.http import HttpRequest, HttpResponse
from modelreg.webhook.server import Webhook
from modelreg.webhook.tls import ReloadingTLS
from tests.unit.policy.fakes import Result, Sig
from tests.unit.webhook.fakeregistry import FakeClient
from tests.unit.webhook.reviews import pod_spec, review, workload
from tests.unit.webhook.test_engine import REG, policies


def request(
    path: str,
    doc: Any = None,
    *,
    method: str = "POST",
    arrival: float | None = None,
    body: bytes | None = None,
) -> HttpRequest:
    data = body if body is not None else (json.dumps(doc).encode() if doc is not None else b"")
    return HttpRequest(
        method=method,
        path=path,
        headers={"content-type": "application/json"},
        body=data,
        arrival=time.monotonic() if arrival is None else arrival,
    )


def run(body: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(body())  # type: ignore[arg-type]


def answer(hook: Webhook, req: HttpRequest) -> dict[str, Any]:
    resp: HttpResponse = run(lambda: hook.handle(req))
    assert resp.status == 200, resp.body
    doc = json.loads(resp.body)
    assert doc["apiVersion"] == "admission.k8s.io/v1" and doc["kind"] == "AdmissionReview"
    return dict(doc["response"])


def pod(*images: str, **kw: Any) -> dict[str, Any]:
    return review(workload("Pod", pod_spec(list(images))), **kw)


def started(engine: Engine, **kw: Any) -> Webhook:
    hook = Webhook(engine, **kw)
    hook.started = True
    return hook


class Exploding(Engine):
    def models(self, request: Any) -> Any:
        raise RuntimeError("boom")


def test_internal_error_is_a_denial_not_a_500() -> None:
    hook = started(Exploding(policies(), FakeClient()))
    doc = pod(f"{REG}/models/x:v1")
    resp = answer(hook, request("/validate", doc))
    assert resp["allowed"] is False and resp["uid"] == doc["request"]["uid"]
    assert "fail closed" in resp["status"]["message"]
    assert "boom" not in resp["status"]["message"]  # no internals leak to the user
    # the mutating endpoint never blocks on its own: it admits with a warning
    m = answer(hook, request("/mutate", doc))
    assert m["allowed"] is True and "internal error" in m["warnings"][0]


def test_delete_and_connect_are_allowed_without_work() -> None:
    client = FakeClient()
    hook = started(Engine(policies(), client))
    doc = pod(f"{REG}/models/x:v1", operation="DELETE")
    doc["request"]["object"] = None
    assert answer(hook, request("/validate", doc))["allowed"] is True
    assert client.resolves == 0


def test_junk_is_4xx_and_counted() -> None:
    hook = started(Engine(policies(), FakeClient()))
    bad: HttpResponse = run(lambda: hook.handle(request("/validate", body=b"{")))
    assert bad.status == 400
    wrong_type = request("/validate", pod("x"))
    wrong_type.headers["content-type"] = "text/plain"
    assert run(lambda: hook.handle(wrong_type)).status == 415
    assert run(lambda: hook.handle(request("/validate", method="GET"))).status == 405
    assert run(lambda: hook.handle(request("/nope", method="GET"))).status == 404
    metrics = run(lambda: hook.handle(request("/metrics", method="GET")))
    text = metrics.body.decode()
    assert 'modelreg_webhook_requests_total{code="400",endpoint="validate"} 1' in text
    assert metrics.content_type.startswith("text/plain; version=0.0.4")


def test_readiness_needs_listener_policies_certificate_and_not_draining(tmp_path: Path) -> None:
    paths = certs.write(certs.generate("svc", "ns"), tmp_path)
    tls = ReloadingTLS(paths["cert"], paths["key"])
    engine = Engine(policies(), FakeClient())
    hook = Webhook(engine, tls=tls)

    def ready() -> tuple[int, str]:
        resp: HttpResponse = run(lambda: hook.handle(request("/readyz", method="GET")))
        return resp.status, resp.body.decode()

    assert ready() == (503, "starting")  # not listening yet
    hook.started = True
    status, text = ready()
    assert status == 200 and engine.policies.digest in text and "1 policies" in text
    tls.loaded = False  # as if no certificate had been loaded
    assert ready() == (503, "no serving certificate loaded")
    tls.loaded = True
    engine.replace_policies(PolicySet(()))
    assert ready() == (503, "no policy loaded")
    engine.replace_policies(policies())
    hook.draining = True  # SIGTERM: unready first, still answering reviews
    assert ready() == (503, "shutting down")
    assert answer(hook, request("/validate", pod("busybox")))["allowed"] is True


class RecordingEngine(Engine):
    """Records the deadline each decision was given."""

    deadlines: list[float]

    def submit(
        self, refs: Any, *, deadline: float, dry_run: bool
    ) -> list[Any]:  # the server's cold path
        self.deadlines.append(deadline)
        return super().submit(refs, deadline=deadline, dry_run=dry_run)


def test_deadline_counts_from_arrival(client: FakeClient) -> None:
    engine = RecordingEngine(policies(), client, EngineConfig(budget=4.0))
    engine.deadlines = []
    hook = started(engine)
    arrival = time.monotonic() - 1.5  # this review waited 1.5 s before it was handled
    resp = answer(hook, request("/validate", pod(f"{REG}/models/good:v1"), arrival=arrival))
    assert resp["allowed"] is True
    assert engine.deadlines == [arrival + 4.0]  # 2.5 s left for it, not 4


def test_review_that_waited_past_its_budget_is_shed_without_work(client: FakeClient) -> None:
    hook = started(Engine(policies(), client, EngineConfig(budget=4.0)))
    late = time.monotonic() - 5.0
    resp = answer(hook, request("/validate", pod(f"{REG}/models/good:v1"), arrival=late))
    assert resp["allowed"] is False
    assert "overloaded: the review waited" in resp["status"]["message"]
    assert "fail closed" in resp["status"]["message"]
    assert client.resolves == 0
    assert hook.metrics.shed.value(reason="late") == 1


class GatedClient(FakeClient):
    """resolve() waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def resolve(self, ref: Any) -> Any:
        self.entered.release()
        self.gate.wait(30)
        return super().resolve(ref)


def test_full_admission_queue_sheds_at_once_and_cached_reviews_pass() -> None:
    client = GatedClient()
    client.push_model(f"{REG}/models/good", "v1", {"model.safetensors": b"weights"})
    client.push_model(f"{REG}/models/other", "v1", {"model.safetensors": b"more"})
    engine = Engine(policies(), client)
    hook = started(engine, max_pending=1)
    # one decision made earlier: cached
    client.gate.set()
    assert answer(hook, request("/validate", pod(f"{REG}/models/other:v1")))["allowed"]
    client.gate.clear()
    client.entered = threading.Semaphore(0)

    async def main() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        first = asyncio.ensure_future(
            hook.handle(request("/validate", pod(f"{REG}/models/good:v1")))
        )
        # wait until the first review holds the only place in the queue
        while not client.entered.acquire(blocking=False):
            await asyncio.sleep(0.01)
        assert hook.pending == 1
        shed = await hook.handle(request("/validate", pod(f"{REG}/models/good:v1")))
        cached = await hook.handle(request("/validate", pod(f"{REG}/models/other:v1")))
        client.gate.set()
        done = await first
        return (
            json.loads(shed.body)["response"],
            json.loads(cached.body)["response"],
            json.loads(done.body)["response"],
        )

    shed, cached, first = asyncio.run(main())
    assert shed["allowed"] is False
    assert "overloaded" in shed["status"]["message"]
    assert "fail closed" in shed["status"]["message"]
    assert cached["allowed"] is True  # a cached review never waits, never sheds
    assert first["allowed"] is True
    assert client.resolves == 2  # the warm-up and the first review; the shed one did no work
    assert hook.pending == 0
    text = hook.metrics.expose()
    assert 'modelreg_webhook_shed_total{reason="overloaded"} 1' in text
    assert "modelreg_webhook_pending_reviews 0" in text


def test_mutate_is_shed_as_a_warning_not_a_denial() -> None:
    """The mutating endpoint admits (validation decides); a shed pin is a warning."""
    client = FakeClient()
    client.push_model(f"{REG}/models/good", "v1", {"model.safetensors": b"weights"})
    hook = started(Engine(policies(), client, EngineConfig(budget=4.0)))
    late = time.monotonic() - 5.0
    m = answer(hook, request("/mutate", pod(f"{REG}/models/good:v1"), arrival=late))
    assert m["allowed"] is True and "patch" not in m
    assert "overloaded" in m["warnings"][0]


def test_metrics_expose_policy_digest() -> None:
    engine = Engine(policies(), FakeClient())
    hook = started(engine)
    text = hook.metrics.expose()
    assert f'modelreg_webhook_policy_info{{digest="{engine.policies.digest}"}} 1' in text


def test_timed_out_names_the_cause() -> None:
    engine = Engine(policies(), FakeClient(), EngineConfig(budget=2.0))
    ref = engine.models(parse_review(json.dumps(pod(f"{REG}/models/good:v1")).encode()))[0]
    out = engine.timed_out(ref)
    assert isinstance(out, RefOutcome) and isinstance(out.ref, ModelRef)
    assert out.error is not None and out.error.startswith("registry slow: no decision")
    assert REG in out.error


def test_a_review_waiting_on_a_decision_in_flight_joins_it_instead_of_being_shed() -> None:
    """The admission queue bounds work, not reviews: the same model as the review ahead
    adds no verification, so it is not refused; another model is."""
    gate = threading.Event()
    computing = threading.Semaphore(0)
    calls: list[int] = []

    def verifier(target: Any, desc: Any, policy: Any) -> Result:
        calls.append(1)
        computing.release()
        gate.wait(30)
        return Result(digest=str(desc.digest), signatures=(Sig("k"),))

    pem = (Path(__file__).parents[3] / "policies/keys/example-release.pub").read_text()
    text = (
        "signatures:\n  authorities:\n    - name: k\n      key:\n        pem: |\n"
        + textwrap.indent(pem, "          ")
    )
    client = FakeClient()
    good = client.push_model(f"{REG}/models/good", "v1", {"model.safetensors": b"weights"})
    client.push_model(f"{REG}/models/other", "v1", {"model.safetensors": b"more"})
    hook = started(Engine(policies(text), client, verifier=verifier), max_pending=1)
    pinned = f"{REG}/models/good:v1@{good.digest}"

    async def main() -> list[dict[str, Any]]:
        first = asyncio.ensure_future(hook.handle(request("/validate", pod(pinned))))
        while not computing.acquire(blocking=False):  # the verification is under way
            await asyncio.sleep(0.01)
        second = asyncio.ensure_future(hook.handle(request("/validate", pod(pinned))))
        other = await hook.handle(request("/validate", pod(f"{REG}/models/other:v1")))
        await asyncio.sleep(0)
        gate.set()
        answers = [await first, await second, other]
        return [json.loads(a.body)["response"] for a in answers]

    first, second, other = asyncio.run(main())
    assert first["allowed"] is True and second["allowed"] is True
    assert len(calls) == 1  # one verification for both
    assert other["allowed"] is False and "overloaded" in other["status"]["message"]
    assert hook.metrics.shed.value(reason="overloaded") == 1


def test_identical_denials_are_logged_once_per_window_with_a_count(
    client: FakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    now = [time.monotonic()]
    engine = Engine(policies(), client, EngineConfig(budget=4.0), clock=lambda: now[0])
    hook = started(engine, clock=lambda: now[0])
    missing = pod(f"{REG}/models/missing:v1")
    with caplog.at_level("INFO", logger="modelreg.webhook"):
        for _ in range(5):
            resp = answer(hook, request("/validate", missing, arrival=now[0]))
            assert resp["allowed"] is False
        other = answer(hook, request("/validate", pod(f"{REG}/models/gone:v2"), arrival=now[0]))
        assert other["allowed"] is False
        now[0] += 1.5
        answer(hook, request("/validate", missing, arrival=now[0]))
    lines = [r.getMessage() for r in caplog.records if " denied in " in r.getMessage()]
    assert len(lines) == 3, lines  # first of each reason, then the one after the window
    assert "more with this reason" not in lines[0] and "more with this reason" not in lines[1]
    assert lines[2].endswith("(and 4 more with this reason, not logged)")
    # every review is still counted
    assert hook.metrics.decisions.value(endpoint="validate", result="denied", dry_run="false") == 7
