"""The Starlette app in-process (no sockets): fail closed on internal errors, 4xx on junk."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import httpx
from starlette.applications import Starlette

from modelreg.webhook.engine import Engine, EngineConfig
from modelreg.webhook.server import create_app
from tests.unit.webhook.fakeregistry import FakeClient
from tests.unit.webhook.reviews import pod_spec, review, workload
from tests.unit.webhook.test_engine import REG, policies


def in_app(
    app: Starlette, body: Callable[[httpx.AsyncClient], Any], *, lifespan: bool = True
) -> None:
    """Run ``body(client)`` against the ASGI app in-process (with its lifespan)."""

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        ctx = app.router.lifespan_context(app) if lifespan else contextlib.nullcontext()
        async with ctx, httpx.AsyncClient(transport=transport, base_url="https://hook") as c:
            await body(c)

    asyncio.run(main())


class Exploding(Engine):
    def models(self, request: Any) -> Any:
        raise RuntimeError("boom")


def test_internal_error_is_a_denial_not_a_500() -> None:
    app = create_app(Exploding(policies(), FakeClient()))
    doc = review(workload("Pod", pod_spec([f"{REG}/models/x:v1"])))

    async def body(http: httpx.AsyncClient) -> None:
        r = await http.post("/validate", json=doc)
        assert r.status_code == 200
        resp = r.json()["response"]
        assert resp["allowed"] is False and resp["uid"] == doc["request"]["uid"]
        assert "fail closed" in resp["status"]["message"]
        assert "boom" not in resp["status"]["message"]  # no internals leak to the user
        # the mutating endpoint never blocks on its own: it admits with a warning
        m = (await http.post("/mutate", json=doc)).json()["response"]
        assert m["allowed"] is True and "internal error" in m["warnings"][0]

    in_app(app, body)


def test_delete_and_connect_are_allowed_without_work() -> None:
    client = FakeClient()
    app = create_app(Engine(policies(), client))
    doc = review(workload("Pod", pod_spec([f"{REG}/models/x:v1"])), operation="DELETE")
    doc["request"]["object"] = None

    async def body(http: httpx.AsyncClient) -> None:
        r = await http.post("/validate", json=doc)
        assert r.json()["response"]["allowed"] is True
        assert client.resolves == 0

    in_app(app, body)


def test_readiness_and_metrics() -> None:
    app = create_app(Engine(policies(), FakeClient(), EngineConfig()))

    async def body(http: httpx.AsyncClient) -> None:
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.get("/healthz")).text == "ok"
        r = await http.post("/validate", content=b"{", headers={"content-type": "application/json"})
        assert r.status_code == 400
        metrics = await http.get("/metrics")
        assert 'modelreg_webhook_requests_total{code="400",endpoint="validate"} 1' in metrics.text
        assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")

    in_app(app, body)

    async def not_ready(http: httpx.AsyncClient) -> None:
        assert (await http.get("/readyz")).status_code == 503  # before startup: not ready

    in_app(app, not_ready, lifespan=False)
