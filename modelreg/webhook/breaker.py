"""Per-registry circuit breakers: a dead registry costs milliseconds, not the budget.

Without one, every review naming a model on an unreachable registry spends its whole
budget in connection attempts and retries (4 s each at ``--budget 4``, measured in issue
20), and holds a decision thread while doing so. With one:

* **closed** (normal): every decision may contact the registry. ``failures`` connection
  failures in a row (:class:`~modelreg.errors.NetworkError` from the first request of a
  decision: refused, reset, TLS, timeout) open the circuit. Any answer from the registry,
  even a 404 or a 401, is a success: the registry is there.
* **open**: decisions that need that registry are denied at once, without contacting
  it, with a message naming the registry and when it is tried again. Cached decisions
  (allow or deny, within their TTL) are still served: they need no registry.
* **half-open**: after ``reset_after`` seconds, *one* decision is let through as a probe;
  the others keep being denied. The probe's success closes the circuit, its failure
  opens it for another ``reset_after``. A probe that never reports (a hung thread) is
  replaced by a new one after ``probe_timeout``.

Keyed by registry host (``host[:port]`` as in the canonical reference): one dead mirror
or registry does not slow decisions on the others. Thread-safe: decisions run on worker
threads, the fast path on the event loop. Transitions are logged and counted
(:class:`~modelreg.webhook.metrics.Metrics`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from modelreg.webhook.metrics import Metrics

__all__ = ["STATE_VALUES", "BreakerConfig", "Breakers", "State"]

log = logging.getLogger("modelreg.webhook")

State = Literal["closed", "open", "half-open"]
STATE_VALUES: Final[dict[State, int]] = {"closed": 0, "open": 1, "half-open": 2}
"""The ``modelreg_webhook_breaker_state`` gauge's values."""


@dataclass(frozen=True)
class BreakerConfig:
    failures: int = 5
    """Connection failures in a row that open a registry's circuit (0: never open)."""
    reset_after: float = 10.0
    """Seconds an open circuit denies before one probe is let through."""
    probe_timeout: float = 30.0
    """Seconds after which a probe that never reported is replaced by another."""


@dataclass
class _Breaker:
    """One registry's circuit (changed under the lock of :class:`Breakers`)."""

    state: State = "closed"
    failures: int = 0
    opened_at: float = 0.0
    probe_started: float = 0.0


class Breakers:
    def __init__(
        self,
        config: BreakerConfig,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._clock = clock
        self._breakers: dict[str, _Breaker] = {}
        self._lock = threading.Lock()

    def state(self, registry: str) -> State:
        with self._lock:
            b = self._breakers.get(registry)
            return b.state if b is not None else "closed"

    def blocked(self, registry: str, *, probe: bool = True) -> str | None:
        """Why a decision needing ``registry`` must not contact it now (None: go ahead).

        With ``probe`` (the decision is about to contact the registry), the first caller
        after the open window becomes the half-open probe and gets None; it must report
        with :meth:`success` or :meth:`failure`. Without ``probe`` (a look from the event
        loop before queueing work) nothing changes: a review that could be the probe is
        let through to the decision threads, where one of them takes it."""
        now = self._clock()
        with self._lock:
            b = self._breakers.get(registry)
            if b is None or b.state == "closed":
                return None
            window_over = b.state == "open" and now - b.opened_at >= self.config.reset_after
            probe_lost = (
                b.state == "half-open" and now - b.probe_started >= self.config.probe_timeout
            )
            if window_over or probe_lost:
                if not probe:
                    return None
                if window_over:
                    self._move(registry, b, "half-open")
                b.probe_started = now
                return None
            retry = max(0.0, b.opened_at + self.config.reset_after - now)
            failures = b.failures
        self.metrics.breaker_denials.inc(registry=registry)
        when = f"in {retry:.0f}s" if retry >= 1 else "now, by one probe"
        return (
            f"registry {registry} unreachable: circuit open after {failures} connection "
            f"failures in a row; denied without contacting it (tried again {when})"
        )

    def success(self, registry: str) -> None:
        with self._lock:
            b = self._breakers.get(registry)
            if b is None:
                return
            b.failures = 0
            if b.state != "closed":
                self._move(registry, b, "closed")

    def failure(self, registry: str) -> None:
        if self.config.failures <= 0:
            return
        now = self._clock()
        with self._lock:
            b = self._breakers.setdefault(registry, _Breaker())
            b.failures += 1
            if b.state == "half-open" or (
                b.state == "closed" and b.failures >= self.config.failures
            ):
                b.opened_at = now
                self._move(registry, b, "open")

    def _move(self, registry: str, b: _Breaker, state: State) -> None:
        """Change state (lock held): gauge, counter, one log line."""
        b.state = state
        self.metrics.breaker_state.set(STATE_VALUES[state], registry=registry)
        self.metrics.breaker_transitions.inc(registry=registry, state=state)
        if state == "open":
            log.warning(
                "registry %s: circuit open after %d connection failures in a row; "
                "decisions needing it are denied for %gs",
                registry,
                b.failures,
                self.config.reset_after,
            )
        elif state == "half-open":
            log.info("registry %s: circuit half-open, one probe decision let through", registry)
        else:
            log.info("registry %s: circuit closed, the registry answers again", registry)
