"""The HTTPS admission webhook: routes, the admission queue, readiness, draining.

Endpoints: ``POST /validate`` (ValidatingWebhookConfiguration), ``POST /mutate``
(MutatingWebhookConfiguration: pins tags to digests), ``GET /healthz``, ``GET /readyz``,
``GET /metrics`` (Prometheus text format). Served by :mod:`modelreg.webhook.http` (one
process, one event loop, uvloop when installed; decisions needing a registry run on the
engine's threads).

**Fail closed.** Every answer to a well-formed review is an AdmissionReview: a decision
that could not be reached inside the budget, or any internal error, is a *denial* with
the reason. Malformed bodies, a wrong apiVersion or kind, bodies over the size limit and
wrong content types get a 4xx without touching the engine.

**Latency bounded from arrival.** A review's deadline is its arrival time (the first
bytes parsed, :attr:`HttpRequest.arrival`) plus ``budget``: time spent waiting behind
other requests is spent budget. What cannot be decided by then is denied, naming the
cause; ``budget`` is set below the webhook configuration's ``timeoutSeconds``
(deploy/README.md: budget + 2 s <= timeoutSeconds), so the API server always gets the
webhook's answer, never its own timeout.

**Shed, don't queue.** Reviews answered from the caches, or denied by an open circuit
breaker, cost microseconds and are never refused. Reviews that need a registry enter the
*admission queue*, bounded by ``max_pending``: when it is full, a review is denied at
once ("overloaded", ``modelreg_webhook_shed_total``) instead of waiting for a thread it
would get too late. A review whose decisions are all being computed already (the same
model as reviews ahead of it) adds no work and joins them whatever the queue holds.
The API server (and the controllers behind it) retry; a pod
refused in milliseconds is retried sooner than one refused after ``timeoutSeconds``.

**Readiness.** ``/readyz`` answers 200 only when the listener is up, at least one policy
is loaded, the serving certificate is loaded, and the server is not draining. On SIGTERM
the webhook turns unready first and keeps answering for ``drain_seconds`` (so the
Service stops sending it reviews), then stops accepting, answers what is in flight and
exits: a rolling update never drops a review.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

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
from modelreg.webhook.http import HttpLimits, HttpRequest, HttpResponse, HttpServer
from modelreg.webhook.metrics import CONTENT_TYPE
from modelreg.webhook.tls import ReloadingTLS

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_PENDING",
    "BackgroundServer",
    "PolicyWatcher",
    "ServerConfig",
    "Webhook",
    "serve",
]

log = logging.getLogger("modelreg.webhook")

DEFAULT_MAX_BODY: Final = 3 * 1024 * 1024
"""etcd stores objects up to 1.5 MiB; an AdmissionReview carries object + oldObject."""
DEFAULT_MAX_PENDING: Final = 64
"""Reviews that may wait on registry work at once. A cold decision costs tens of
milliseconds of CPU (resolve, manifest, config, signature); the engine's 16 threads share
one interpreter, so about this many reviews can finish inside a few seconds' budget.
More would only wait to be denied at their deadline."""


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
    max_pending: int = DEFAULT_MAX_PENDING
    """The admission queue: reviews waiting on registry work; more are shed at once."""
    drain_seconds: float = 5.0
    """After SIGTERM: seconds unready but still answering, before the listener closes."""
    keepalive_timeout: float = 30.0
    """An idle keep-alive connection is closed after this many seconds."""


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


def _json(status: int, doc: Any) -> HttpResponse:
    return HttpResponse(status, json.dumps(doc, separators=(",", ":")).encode())


def _text(status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> HttpResponse:
    return HttpResponse(status, text.encode(), content_type)


def _check_content_type(request: HttpRequest) -> None:
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() not in ("application/json", ""):
        raise ReviewError(415, f"content type {ctype[:80]!r} is not application/json")


def _denial_reason(response: dict[str, Any]) -> str:
    status = response.get("status")
    return str(status.get("message", "")) if isinstance(status, dict) else ""


class RepeatFilter:
    """Says which of many identical log lines to write: the first of each reason in a
    window, then one that carries how many were left out.

    When a registry dies, every review of its models is denied with the same reason, at
    thousands per second once the circuit is open: a line for each would cost more CPU
    than the denial itself and drown the log. The count keeps the log honest, the
    ``modelreg_webhook_decisions_total`` metric and the API server's audit log keep
    every review. Bounded: at most ``max_reasons`` reasons are remembered per window.
    """

    def __init__(
        self,
        *,
        window: float = 1.0,
        max_reasons: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.max_reasons = max_reasons
        self._clock = clock
        self._seen: dict[str, tuple[float, int]] = {}
        """reason: (when it was last written, how many were left out since)."""

    def admit(self, reason: str) -> int | None:
        """None: leave this line out. Else write it, with this many left out before it."""
        now = self._clock()
        entry = self._seen.get(reason)
        if entry is not None and now - entry[0] < self.window:
            self._seen[reason] = (entry[0], entry[1] + 1)
            return None
        if entry is None and len(self._seen) >= self.max_reasons:
            # forget reasons whose window is over; if all are current, write the line
            self._seen = {r: e for r, e in self._seen.items() if now - e[0] < self.window}
            if len(self._seen) >= self.max_reasons:
                return 0
        self._seen[reason] = (now, 0)
        return entry[1] if entry is not None else 0


class Webhook:
    """The webhook's request handling, transport-free: :meth:`handle` takes a parsed
    :class:`HttpRequest` and returns the :class:`HttpResponse` (tests call it directly).

    Runs on one event loop; :attr:`pending` (the admission queue) is only touched there.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        tls: ReloadingTLS | None = None,
        policy_watcher: PolicyWatcher | None = None,
        reload_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.metrics = engine.metrics
        self.budget = engine.config.budget
        self.max_pending = max_pending
        self.tls = tls
        self.policy_watcher = policy_watcher
        self.reload_interval = reload_interval
        self._clock = clock
        self.pending = 0
        self._denials = RepeatFilter(clock=clock)
        self.started = False
        """Set once the listener accepts connections."""
        self.draining = False
        self.metrics.policy_info.set(1, digest=engine.policies.digest)

    # -------------------------------------------------------------- readiness
    def not_ready(self) -> str | None:
        """Why the webhook must not be sent reviews now (None: ready)."""
        if not self.started:
            return "starting"
        if self.draining:
            return "shutting down"
        if len(self.engine.policies) == 0:
            return "no policy loaded"
        if self.tls is not None and not self.tls.loaded:
            return "no serving certificate loaded"
        return None

    # ----------------------------------------------------------------- routes
    async def handle(self, request: HttpRequest) -> HttpResponse:
        path = request.path
        if path in ("/validate", "/mutate"):
            if request.method != "POST":
                return _text(405, "POST an AdmissionReview")
            return await self.review(request, path[1:])
        if path not in ("/healthz", "/readyz", "/metrics"):
            return _text(404, "not found")
        if request.method != "GET":
            return _text(405, "GET only")
        if path == "/healthz":
            return _text(200, "ok")
        if path == "/metrics":
            return _text(200, self.metrics.expose(), CONTENT_TYPE)
        reason = self.not_ready()
        if reason is not None:
            return _text(503, reason)
        policies = self.engine.policies
        return _text(200, f"ready: {len(policies)} policies, digest {policies.digest}")

    async def review(self, request: HttpRequest, endpoint: str) -> HttpResponse:
        try:
            _check_content_type(request)
            review_req = parse_review(request.body)
        except ReviewError as exc:
            self.metrics.requests.inc(endpoint=endpoint, code=str(exc.status))
            return _json(exc.status, {"error": exc.message})
        deadline = request.arrival + self.budget
        try:
            response = await self._answer(review_req, endpoint, request.arrival, deadline)
        except Exception as exc:  # fail closed, never a 500 for a well-formed review
            log.exception("review %s: internal error", review_req.uid)
            response = self._internal_error(review_req.uid, endpoint, exc)
        elapsed = self._clock() - request.arrival
        result = "allowed" if response.get("allowed") else "denied"
        dry = "true" if review_req.dry_run else "false"
        self.metrics.decisions.inc(endpoint=endpoint, result=result, dry_run=dry)
        self.metrics.latency.observe(elapsed, endpoint=endpoint)
        self.metrics.requests.inc(endpoint=endpoint, code="200")
        # a line per denial at INFO; allowed reviews at DEBUG: at thousands of reviews/s
        # the line cost a third of the cached path's CPU (issue 20 profile), and the API
        # server's audit log already records every admission
        level = logging.DEBUG if result == "allowed" else logging.INFO
        if log.isEnabledFor(level):
            repeats: int | None = 0
            if level == logging.INFO:
                repeats = self._denials.admit(_denial_reason(response))
            if repeats is not None:
                log.log(
                    level,
                    "%s %s %s %s/%s uid=%s %s in %.1f ms%s%s",
                    endpoint,
                    review_req.operation,
                    review_req.kind,
                    review_req.namespace,
                    review_req.name,
                    review_req.uid,
                    result,
                    elapsed * 1000,
                    " (dryRun)" if review_req.dry_run else "",
                    f" (and {repeats} more with this reason, not logged)" if repeats else "",
                )
        return _json(200, review_response(response))

    @staticmethod
    def _internal_error(uid: str, endpoint: str, exc: Exception) -> dict[str, Any]:
        if endpoint == "mutate":  # the mutating endpoint admits; /validate decides
            return mutation_response(uid, [], [f"modelreg: internal error: {type(exc).__name__}"])
        return {
            "uid": uid,
            "allowed": False,
            "status": {
                "code": 403,
                "reason": "Forbidden",
                "message": "modelreg could not decide (denied, fail closed): internal "
                f"error {type(exc).__name__}; see the webhook's log",
            },
        }

    # ---------------------------------------------------------------- answers
    async def _answer(
        self, req: AdmissionRequest, endpoint: str, arrival: float, deadline: float
    ) -> dict[str, Any]:
        engine = self.engine
        if req.operation not in ("CREATE", "UPDATE"):
            return {"uid": req.uid, "allowed": True}
        refs = engine.models(req)
        if not refs:
            return {"uid": req.uid, "allowed": True}
        if len(refs) > MAX_REFERENCES:
            return deny_all(
                req.uid, refs[:1], f"more than {MAX_REFERENCES} references in one object"
            )
        pin = endpoint == "mutate"
        if not pin:
            cached = engine.cached(refs)
            if cached is not None:
                return validation_response(req.uid, cached)
        blocked = engine.blocked(refs)
        if blocked is not None and not pin:
            return validation_response(req.uid, blocked)
        skip = {id(o.ref) for o in blocked or ()}
        work = [r for r in refs if id(r) not in skip]
        shed = self._shed(arrival, deadline, joins=engine.joins_in_flight(work))
        if shed is not None:
            outcomes = [RefOutcome(r, error=shed) for r in work]
        elif not work:
            outcomes = []
        else:
            self.pending += 1
            self.metrics.pending.set(self.pending)
            try:
                outcomes = await self._outcomes(work, req, deadline, pin=pin)
            finally:
                self.pending -= 1
                self.metrics.pending.set(self.pending)
        if blocked:
            by_ref = {id(o.ref): o for o in (*blocked, *outcomes)}
            outcomes = [by_ref[id(r)] for r in refs]
        if pin:
            warnings = [
                f"modelreg: {o.label()}: not pinned: {o.error}" for o in outcomes if o.error
            ]
            return mutation_response(req.uid, build_patch(outcomes, req), warnings)
        return validation_response(req.uid, outcomes)

    def _shed(self, arrival: float, deadline: float, *, joins: bool) -> str | None:
        """Why a review needing registry work is refused at once (None: admit it).
        A review that only waits for decisions already being computed (``joins``) adds
        no work: the queue's bound does not apply to it, its deadline does."""
        now = self._clock()
        if now >= deadline:
            self.metrics.shed.inc(reason="late")
            return (
                f"overloaded: the review waited {now - arrival:.1f}s before it could be "
                f"handled, past the {self.budget:g}s budget"
            )
        if self.pending >= self.max_pending and not joins:
            self.metrics.shed.inc(reason="overloaded")
            return (
                f"overloaded: {self.pending} reviews already wait on registries (the "
                f"admission queue holds {self.max_pending}); denied at once instead of "
                "queued past the API server's timeout, retry"
            )
        return None

    async def _outcomes(
        self, refs: Sequence[ModelRef], request: AdmissionRequest, deadline: float, *, pin: bool
    ) -> list[RefOutcome]:
        engine = self.engine
        submit = engine.submit_pins if pin else engine.submit
        futures = submit(refs, deadline=deadline, dry_run=request.dry_run)
        waiting = [asyncio.wrap_future(f) for f in futures]
        await asyncio.wait(waiting, timeout=max(0.0, deadline - self._clock()))
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

    # -------------------------------------------------------------- reloading
    async def watch(self) -> None:
        """Reload the certificate and the policies when their files change, forever."""
        while True:
            await asyncio.sleep(self.reload_interval)
            try:
                self.check_reload()
            except Exception:  # never let the watcher die
                log.exception("reload check failed")

    def check_reload(self) -> None:
        tls, watcher, metrics = self.tls, self.policy_watcher, self.metrics
        if tls is not None and tls.changed():
            ok = tls.maybe_reload()
            metrics.cert_reloads.inc(result="ok" if ok else "rejected")
        if watcher is not None:
            before = watcher.failures
            old = self.engine.policies.digest
            if watcher.check():
                metrics.policy_reloads.inc(result="ok")
                metrics.policy_info.set(0, digest=old)
                metrics.policy_info.set(1, digest=self.engine.policies.digest)
            elif watcher.failures != before:
                metrics.policy_reloads.inc(result="rejected")


# ------------------------------------------------------------------------ serving
def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop when installed (its TLS and transports are compiled; asyncio's are Python
    and were a third of the server's CPU in the issue 20 profile), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _run(
    engine: Engine,
    config: ServerConfig,
    stop: asyncio.Event,
    on_started: Callable[[Webhook, HttpServer], None] | None = None,
) -> None:
    """Serve until ``stop`` is set, then drain and shut down."""
    tls = ReloadingTLS(config.cert_file, config.key_file)
    watcher = PolicyWatcher(config.policy_paths, engine) if config.policy_paths else None
    hook = Webhook(
        engine,
        max_pending=config.max_pending,
        tls=tls,
        policy_watcher=watcher,
        reload_interval=config.reload_interval,
    )
    limits = HttpLimits(max_body=config.max_body, keepalive_timeout=config.keepalive_timeout)
    server = HttpServer(hook.handle, limits)
    await server.start(config.host, config.port, tls.context)
    hook.started = True
    if on_started is not None:
        on_started(hook, server)
    watching = asyncio.get_running_loop().create_task(hook.watch())
    try:
        await stop.wait()
        hook.draining = True
        if config.drain_seconds > 0:
            log.info("draining: unready, still answering for %gs", config.drain_seconds)
            await asyncio.sleep(config.drain_seconds)
        await server.shutdown(timeout=hook.budget + 1.0)
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching


def serve(engine: Engine, config: ServerConfig) -> None:
    """Run the webhook until SIGINT/SIGTERM (then drain, see the module notes)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def started(hook: Webhook, server: HttpServer) -> None:
            log.info("listening on https://%s:%d", config.host, server.port)

        await _run(engine, config, stop, started)

    # Everything loaded so far (policies, modules) lives as long as the process: keep it
    # out of the collector's scans, which otherwise show up as latency spikes.
    gc.collect()
    gc.freeze()
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
    finally:
        engine.close()


class BackgroundServer:
    """Run the webhook in a background thread (tests, benchmarks, embedding)::

    with BackgroundServer(engine, config) as server:
        httpx.post(server.url + "/validate", ...)
    """

    def __init__(
        self,
        engine: Engine,
        config: ServerConfig,
        *,
        startup_timeout: float = 15.0,
        drain_seconds: float = 0.0,
    ) -> None:
        self.engine = engine
        # nothing routes to a test server: no need to stay up unready before stopping
        self.config = dataclasses.replace(config, drain_seconds=drain_seconds)
        self.hook: Webhook | None = None
        self._timeout = startup_timeout
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="webhook", daemon=True)

    @property
    def url(self) -> str:
        return f"https://{self.config.host}:{self.config.port}"

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def started(hook: Webhook, server: HttpServer) -> None:
                self.hook = hook
                self._started.set()

            await _run(self.engine, self.config, self._stop, started)

        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(main())
        except BaseException as exc:  # reported by start()
            self._error = exc

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self._timeout
        while not self._started.wait(0.02):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"webhook did not start on {self.url}: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        self.engine.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
