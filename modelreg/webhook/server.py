"""The HTTPS admission webhook: Starlette routes served by uvicorn.

Endpoints: ``POST /validate`` (ValidatingWebhookConfiguration), ``POST /mutate``
(MutatingWebhookConfiguration: pins tags to digests), ``GET /healthz``, ``GET /readyz``,
``GET /metrics`` (Prometheus text format).

Every answer to a well-formed review is an AdmissionReview: a decision that could not
be reached inside the budget, or any internal error, is a *denial* with the reason
(fail closed). Malformed bodies, a wrong apiVersion or kind, bodies over the size
limit and wrong content types get a 4xx without touching the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from modelreg.errors import PolicyError
from modelreg.policy import load_policies
from modelreg.webhook.admission import (
    MAX_REFERENCES,
    AdmissionRequest,
    ModelRef,
    RefOutcome,
    ReviewError,
    build_patch,
    deny_all,
    mutation_response,
    parse_review,
    review_response,
    validation_response,
)
from modelreg.webhook.engine import Engine
from modelreg.webhook.metrics import CONTENT_TYPE
from modelreg.webhook.tls import ReloadingTLS

__all__ = [
    "DEFAULT_MAX_BODY",
    "PolicyWatcher",
    "ServerConfig",
    "create_app",
    "serve",
    "uvicorn_server",
]

log = logging.getLogger("modelreg.webhook")

DEFAULT_MAX_BODY: Final = 3 * 1024 * 1024
"""etcd stores objects up to 1.5 MiB; an AdmissionReview carries object + oldObject."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"  # noqa: S104 - a webhook listens on the pod IP
    port: int = 8443
    cert_file: str = "/etc/modelreg/tls/tls.crt"
    key_file: str = "/etc/modelreg/tls/tls.key"
    max_body: int = DEFAULT_MAX_BODY
    reload_interval: float = 10.0
    log_level: str = "info"
    policy_paths: tuple[str, ...] = field(default=())
    """Policy files/directories to watch and reload (empty: no policy reload)."""


class _State:
    def __init__(self) -> None:
        self.ready = False


class PolicyWatcher:
    """Reloads the policies when their files change; a policy that fails to load leaves
    the current ones in force (and is reported), so a typo never opens the gate."""

    def __init__(self, paths: Sequence[str | Path], engine: Engine) -> None:
        self.paths = [Path(p) for p in paths]
        self.engine = engine
        self._stamp = self.stamp()
        self.reloads = 0
        self.failures = 0

    def stamp(self) -> tuple[tuple[str, int, int, int], ...]:
        out = []
        for path in self.paths:
            files = sorted(path.rglob("*")) if path.is_dir() else [path]
            for f in files:
                try:
                    st = os.stat(f)
                except OSError:
                    continue
                out.append((str(f), st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def check(self) -> bool:
        stamp = self.stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            policies = load_policies(self.paths)
        except PolicyError as exc:
            self.failures += 1
            log.error("policies changed but do not load; keeping the current ones: %s", exc)
            return False
        self.engine.replace_policies(policies)
        self.reloads += 1
        log.info("policies reloaded: %d policies, digest %s", len(policies), policies.digest)
        return True


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > limit:
                raise ReviewError(413, f"body over the {limit}-byte limit")
        except ValueError as exc:
            raise ReviewError(400, "bad Content-Length") from exc
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() not in ("application/json", ""):
        raise ReviewError(415, f"content type {ctype[:80]!r} is not application/json")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ReviewError(413, f"body over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _error(exc: ReviewError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status)


def create_app(
    engine: Engine,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    tls: ReloadingTLS | None = None,
    reload_interval: float = 10.0,
    policy_watcher: PolicyWatcher | None = None,
) -> Starlette:
    metrics = engine.metrics
    budget = engine.config.budget
    state = _State()

    async def _outcomes(
        refs: Sequence[ModelRef], request: AdmissionRequest, start: float, *, pin: bool
    ) -> list[RefOutcome]:
        deadline = start + budget
        if pin:
            futures = engine.submit_pins(refs, deadline=deadline, dry_run=request.dry_run)
        else:
            futures = engine.submit(refs, deadline=deadline, dry_run=request.dry_run)
        waiting = [asyncio.wrap_future(f) for f in futures]
        remaining = max(0.0, deadline - time.monotonic())
        await asyncio.wait(waiting, timeout=remaining)
        out = []
        for ref, fut in zip(refs, futures, strict=True):
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                out.append(fut.result())
            elif fut.done():
                exc = fut.exception()
                out.append(RefOutcome(ref, error=f"internal error: {type(exc).__name__}"))
            else:
                out.append(engine.timed_out(ref))
        for w in waiting:  # the threads finish on their own; nobody awaits them any more
            if not w.done():
                w.cancel()
        return out

    async def review(request: Request, endpoint: str) -> Response:
        start = time.monotonic()
        try:
            body = await _read_body(request, max_body)
            review_req = parse_review(body)
        except ReviewError as exc:
            metrics.requests.inc(endpoint=endpoint, code=str(exc.status))
            return _error(exc)
        dry = "true" if review_req.dry_run else "false"
        try:
            response = await _answer(review_req, endpoint, start)
        except Exception as exc:  # fail closed, never a 500 for a well-formed review
            log.exception("review %s: internal error", review_req.uid)
            if endpoint == "mutate":
                response = mutation_response(
                    review_req.uid, [], [f"modelreg: internal error: {type(exc).__name__}"]
                )
            else:
                response = {
                    "uid": review_req.uid,
                    "allowed": False,
                    "status": {
                        "code": 403,
                        "reason": "Forbidden",
                        "message": "modelreg could not decide (denied, fail closed): internal "
                        f"error {type(exc).__name__}; see the webhook's log",
                    },
                }
        elapsed = time.monotonic() - start
        result = "allowed" if response.get("allowed") else "denied"
        metrics.decisions.inc(endpoint=endpoint, result=result, dry_run=dry)
        metrics.latency.observe(elapsed, endpoint=endpoint)
        metrics.requests.inc(endpoint=endpoint, code="200")
        if log.isEnabledFor(logging.INFO):
            log.info(
                "%s %s %s %s/%s uid=%s %s in %.1f ms%s",
                endpoint,
                review_req.operation,
                review_req.kind,
                review_req.namespace,
                review_req.name,
                review_req.uid,
                result,
                elapsed * 1000,
                " (dryRun)" if review_req.dry_run else "",
            )
        return Response(
            json.dumps(review_response(response), separators=(",", ":")),
            media_type="application/json",
        )

    async def _answer(req: AdmissionRequest, endpoint: str, start: float) -> dict[str, Any]:
        if req.operation not in ("CREATE", "UPDATE"):
            return {"uid": req.uid, "allowed": True}
        refs = engine.models(req)
        if not refs:
            return {"uid": req.uid, "allowed": True}
        if len(refs) > MAX_REFERENCES:
            return deny_all(
                req.uid, refs[:1], f"more than {MAX_REFERENCES} references in one object"
            )
        if endpoint == "mutate":
            outcomes = await _outcomes(refs, req, start, pin=True)
            warnings = [
                f"modelreg: {o.label()}: not pinned: {o.error}" for o in outcomes if o.error
            ]
            return mutation_response(req.uid, build_patch(outcomes, req), warnings)
        cached = engine.cached(refs)
        outcomes = cached if cached is not None else await _outcomes(refs, req, start, pin=False)
        return validation_response(req.uid, outcomes)

    async def validate(request: Request) -> Response:
        return await review(request, "validate")

    async def mutate(request: Request) -> Response:
        return await review(request, "mutate")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        if not state.ready:
            return PlainTextResponse("starting", status_code=503)
        return PlainTextResponse(f"ready: {len(engine.policies)} policies")

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.expose(), media_type=CONTENT_TYPE)

    async def _watch() -> None:
        while True:
            await asyncio.sleep(reload_interval)
            try:
                if tls is not None and tls.changed():
                    ok = tls.maybe_reload()
                    metrics.cert_reloads.inc(result="ok" if ok else "rejected")
                if policy_watcher is not None:
                    before = policy_watcher.failures
                    if policy_watcher.check():
                        metrics.policy_reloads.inc(result="ok")
                    elif policy_watcher.failures != before:
                        metrics.policy_reloads.inc(result="rejected")
            except Exception:  # never let the watcher die
                log.exception("reload check failed")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        watching = tls is not None or policy_watcher is not None
        watcher = asyncio.get_running_loop().create_task(_watch()) if watching else None
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    routes = [
        Route("/validate", validate, methods=["POST"]),
        Route("/mutate", mutate, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def uvicorn_server(engine: Engine, config: ServerConfig) -> Any:
    """A configured ``uvicorn.Server`` (not started) serving HTTPS with reloading certs."""
    import uvicorn

    tls = ReloadingTLS(config.cert_file, config.key_file)
    watcher = PolicyWatcher(config.policy_paths, engine) if config.policy_paths else None
    app = create_app(
        engine,
        max_body=config.max_body,
        tls=tls,
        reload_interval=config.reload_interval,
        policy_watcher=watcher,
    )
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        ssl_certfile=config.cert_file,
        ssl_keyfile=config.key_file,
        ssl_context_factory=lambda _config, _default: tls.context,
        log_level=config.log_level,
        access_log=False,
        lifespan="on",
        timeout_keep_alive=30,
        server_header=False,
        h11_max_incomplete_event_size=64 * 1024,
    )
    return uvicorn.Server(uv_config)


def serve(engine: Engine, config: ServerConfig) -> None:
    """Run the webhook until SIGINT/SIGTERM."""
    import gc

    server = uvicorn_server(engine, config)
    # Everything loaded so far (policies, modules) lives as long as the process: keep it
    # out of the collector's scans, which otherwise show up as latency spikes.
    gc.collect()
    gc.freeze()
    try:
        server.run()
    finally:
        engine.close()


class BackgroundServer:
    """Run the webhook in a background thread (tests, benchmarks, embedding)::

    with BackgroundServer(engine, config) as server:
        httpx.post(server.url + "/validate", ...)
    """

    def __init__(
        self, engine: Engine, config: ServerConfig, *, startup_timeout: float = 15.0
    ) -> None:
        import threading

        self.engine = engine
        self.config = config
        self.server = uvicorn_server(engine, config)
        self._thread = threading.Thread(target=self.server.run, name="webhook", daemon=True)
        self._timeout = startup_timeout

    @property
    def url(self) -> str:
        return f"https://{self.config.host}:{self.config.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self._timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"webhook did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self.engine.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
