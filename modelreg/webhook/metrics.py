"""Prometheus metrics in the text exposition format (0.0.4), written here: counters and
histograms with labels are all the webhook needs, and no global registry is involved."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from typing import Final

__all__ = ["CONTENT_TYPE", "Counter", "Gauge", "Histogram", "Metrics", "Registry"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt_labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Labelled:
    """Values by label set, exposed as one Prometheus metric of ``kind``."""

    kind = "untyped"

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self._values: dict[Labels, float] = {}
        self._lock = threading.Lock()

    def _add(self, amount: float, labels: dict[str, str]) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(tuple(sorted(labels.items())), 0.0)

    def expose(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        with self._lock:
            for labels, value in sorted(self._values.items()):
                lines.append(f"{self.name}{_fmt_labels(labels)} {_num(value)}")
        return lines


class Counter(_Labelled):
    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self._add(amount, labels)


class Gauge(_Labelled):
    """A value that goes up and down (a state, a queue length), by labels."""

    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = value

    def add(self, amount: float, **labels: str) -> None:
        self._add(amount, labels)


class Histogram:
    def __init__(
        self, name: str, help_text: str, buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> None:
        self.name = name
        self.help = help_text
        self.buckets = tuple(sorted(buckets))
        self._series: dict[Labels, tuple[list[int], list[float]]] = {}
        self._lock = threading.Lock()

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        index = bisect.bisect_left(self.buckets, value)
        with self._lock:
            counts, sums = self._series.setdefault(key, ([0] * (len(self.buckets) + 1), [0.0]))
            counts[index] += 1
            sums[0] += value

    def count(self, **labels: str) -> int:
        with self._lock:
            series = self._series.get(tuple(sorted(labels.items())))
            return sum(series[0]) if series else 0

    def expose(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            for labels, (counts, sums) in sorted(self._series.items()):
                cumulative = 0
                for bound, n in zip((*self.buckets, float("inf")), counts, strict=True):
                    cumulative += n
                    le = f'le="{_num(bound)}"'
                    lines.append(f"{self.name}_bucket{_fmt_labels(labels, le)} {cumulative}")
                lines.append(f"{self.name}_sum{_fmt_labels(labels)} {_num(sums[0])}")
                lines.append(f"{self.name}_count{_fmt_labels(labels)} {cumulative}")
        return lines


class Registry:
    def __init__(self) -> None:
        self._metrics: list[Counter | Gauge | Histogram] = []

    def counter(self, name: str, help_text: str) -> Counter:
        metric = Counter(name, help_text)
        self._metrics.append(metric)
        return metric

    def gauge(self, name: str, help_text: str) -> Gauge:
        metric = Gauge(name, help_text)
        self._metrics.append(metric)
        return metric

    def histogram(self, name: str, help_text: str) -> Histogram:
        metric = Histogram(name, help_text)
        self._metrics.append(metric)
        return metric

    def expose(self) -> str:
        lines: list[str] = []
        for metric in self._metrics:
            lines.extend(metric.expose())
        return "\n".join(lines) + "\n"


class Metrics:
    """The webhook's metrics."""

    def __init__(self) -> None:
        self.registry = Registry()
        r = self.registry
        self.requests = r.counter(
            "modelreg_webhook_requests_total", "HTTP requests by endpoint and status code."
        )
        self.decisions = r.counter(
            "modelreg_webhook_decisions_total",
            "Admission answers by endpoint and result (allowed, denied, error), dry_run.",
        )
        self.latency = r.histogram(
            "modelreg_webhook_decision_seconds", "Time to answer an AdmissionReview, by endpoint."
        )
        self.cache_hits = r.counter(
            "modelreg_webhook_cache_hits_total", "Reference decisions served from the cache."
        )
        self.cache_misses = r.counter(
            "modelreg_webhook_cache_misses_total", "Reference decisions computed (cache miss)."
        )
        self.registry_errors = r.counter(
            "modelreg_webhook_registry_errors_total",
            "Steps that could not run (resolve, inspect, verify) by step.",
        )
        self.timeouts = r.counter(
            "modelreg_webhook_budget_exceeded_total",
            "Reviews denied because no decision was reached within the budget.",
        )
        self.cert_reloads = r.counter(
            "modelreg_webhook_cert_reloads_total", "Serving certificate reloads by result."
        )
        self.policy_reloads = r.counter(
            "modelreg_webhook_policy_reloads_total", "Policy reloads by result (ok, rejected)."
        )
        self.shed = r.counter(
            "modelreg_webhook_shed_total",
            "Reviews denied at once, without deciding, by reason: overloaded (the admission "
            "queue was full) or late (the budget was spent before the review was read).",
        )
        self.pending = r.gauge(
            "modelreg_webhook_pending_reviews",
            "Reviews waiting on registry work now (the admission queue).",
        )
        self.breaker_state = r.gauge(
            "modelreg_webhook_breaker_state",
            "Circuit breaker per registry: 0 closed, 1 open, 2 half-open.",
        )
        self.breaker_transitions = r.counter(
            "modelreg_webhook_breaker_transitions_total",
            "Circuit breaker state changes by registry and new state.",
        )
        self.breaker_denials = r.counter(
            "modelreg_webhook_breaker_denials_total",
            "Reference decisions denied without contacting their registry (circuit open).",
        )
        self.policy_info = r.gauge(
            "modelreg_webhook_policy_info",
            "1 for the digest of the policies in force (compare replicas during a rollout).",
        )

    def expose(self) -> str:
        return self.registry.expose()
