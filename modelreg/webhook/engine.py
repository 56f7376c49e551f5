"""The webhook's I/O side: resolve tags, gather facts, evaluate, cache, within a budget.

The pure parts (what a workload references, what to answer) live in
:mod:`modelreg.webhook.admission`; the policy evaluation is the pure
:func:`modelreg.policy.evaluate`. This module is the only one that talks to registries.

* Tags are resolved once per ``tag_ttl`` to a descriptor; everything after works on
  the digest (and the mutating endpoint pins it into the workload).
* Decisions are cached under ``(repository, digest, digest of the applicable
  policies)`` for ``cache_ttl`` (allowed) or ``negative_ttl`` (denied); decisions that
  could not be made (a step failed) are never cached. ``dryRun`` reviews read the caches
  but write nothing.
* Concurrent cold lookups of the same key share one computation.
* Work that cannot finish before the deadline is answered as a denial (fail closed).
  The deadline is the caller's: the server sets it from the request's *arrival*
  (:mod:`modelreg.webhook.server`), so time spent queued counts against the budget.
* A per-registry circuit breaker (:mod:`modelreg.webhook.breaker`) sits in front of the
  first request of every decision: after repeated connection failures, decisions needing
  that registry are denied without contacting it (:meth:`Engine.blocked` answers them on
  the event loop, before any thread is taken); cached decisions keep serving.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from modelreg.errors import ModelRegError, NetworkError
from modelreg.oci.descriptor import Descriptor
from modelreg.policy import (
    Decision,
    NoMatch,
    Policy,
    PolicySet,
    StepError,
    Verifier,
    evaluate,
    gather_facts,
)
from modelreg.webhook.admission import (
    AdmissionRequest,
    ModelRef,
    RefOutcome,
    extract_references,
    select_models,
)
from modelreg.webhook.breaker import BreakerConfig, Breakers
from modelreg.webhook.cache import TTLCache, policies_digest
from modelreg.webhook.metrics import Metrics

__all__ = ["Engine", "EngineConfig"]

Unmatched = NoMatch


@dataclass(frozen=True)
class EngineConfig:
    budget: float = 8.0
    """Seconds a review may take; keep it below the webhook's ``timeoutSeconds``."""
    cache_ttl: float = 300.0
    negative_ttl: float = 15.0
    tag_ttl: float = 30.0
    unmatched_models: Unmatched = "deny"
    """What to do with an annotation-named model that no policy covers."""
    unmatched_images: Unmatched = "allow"
    """What to do with a container image or image volume that no policy matches (by its
    canonical name): ``allow`` (the default: such images are not models and are not
    checked), ``warn`` (admit with a warning) or ``deny`` (every image must be governed;
    what sigstore's policy-controller calls its no-match policy)."""
    require_pinned: bool = False
    """Deny governed references that are not pinned to a digest (use with the mutating
    endpoint, or when workloads must pin themselves)."""
    max_workers: int = 16
    max_entries: int = 10_000
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    """When a registry's circuit opens and is probed again."""


@runtime_checkable
class _Closable(Protocol):
    """A client holding connections (the real one); test doubles may have none."""

    def close(self) -> None: ...


class Engine:
    """Thread-safe; one per webhook process."""

    def __init__(
        self,
        policies: PolicySet,
        client: Any,
        config: EngineConfig | None = None,
        metrics: Metrics | None = None,
        *,
        verifier: Verifier | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policies = policies
        self.client = client
        self.config = config or EngineConfig()
        self.metrics = metrics or Metrics()
        self.verifier = verifier
        self._clock = clock
        self.decisions: TTLCache[tuple[str, str, str], Decision] = TTLCache(
            self.config.cache_ttl, self.config.max_entries, clock
        )
        self.tags: TTLCache[str, Descriptor] = TTLCache(
            self.config.tag_ttl, self.config.max_entries, clock
        )
        self.breakers = Breakers(self.config.breaker, self.metrics, clock)
        self._pool = cf.ThreadPoolExecutor(self.config.max_workers, thread_name_prefix="decide")
        self._inflight: dict[tuple[str, str, str], cf.Future[Decision]] = {}
        self._matching: dict[str, tuple[PolicySet, tuple[Policy, ...], str]] = {}
        self._lock = threading.Lock()
        self._contacting: set[int] = set()
        """ids of the references whose first registry request is under way."""

    def close(self) -> None:
        """Stop the workers and close the registry client (its connections)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if isinstance(self.client, _Closable):
            self.client.close()

    def replace_policies(self, policies: PolicySet) -> None:
        """Switch to new policies (atomically for readers). Decisions cached under the old
        ones are not reused: their key holds the old policies' digest."""
        self.policies = policies

    # ------------------------------------------------------------ selection
    def _match(self, name: str) -> tuple[tuple[Policy, ...], str]:
        """Policies applying to ``name`` and their digest, memoised per policy set."""
        policies = self.policies
        hit = self._matching.get(name)
        if hit is not None and hit[0] is policies:
            return hit[1], hit[2]
        matching = policies.matching(name)
        digest = policies_digest(matching)
        if len(self._matching) >= self.config.max_entries:
            self._matching.clear()
        self._matching[name] = (policies, matching, digest)
        return matching, digest

    def key(self, name: str, digest: str) -> tuple[str, str, str]:
        """The decision cache key: (repository, digest, digest of the applicable policies)."""
        return (name, digest, self._match(name)[1])

    def governed(self, name: str) -> bool:
        return bool(self._match(name)[0])

    def models(self, request: AdmissionRequest) -> list[ModelRef]:
        """The references to decide on: governed ones, annotation models, references that
        cannot be canonicalised, and, unless unmatched images are allowed, every image."""
        refs = extract_references(request)
        if self.config.unmatched_images != "allow":
            return refs
        return select_models(refs, self.governed)

    # ------------------------------------------------------------ fast path
    def _static(self, ref: ModelRef) -> RefOutcome | None:
        """An outcome needing no I/O at all (parse error, unmatched, unpinned)."""
        if ref.reference is None:
            return RefOutcome(ref, error=f"invalid reference: {ref.error}")
        if not self.governed(ref.name):
            setting = (
                self.config.unmatched_models
                if ref.origin == "annotation"
                else self.config.unmatched_images
            )
            return RefOutcome(ref, unmatched=setting)
        if self.config.require_pinned and not ref.pinned:
            return RefOutcome(
                ref,
                error="not pinned to a digest (this webhook requires name:tag@sha256:...; "
                "install the mutating webhook to pin tags automatically)",
            )
        return None

    def _known_descriptor_digest(self, ref: ModelRef) -> str | None:
        assert ref.reference is not None
        if ref.reference.digest is not None:
            return str(ref.reference.digest)
        desc = self.tags.get(str(ref.reference))
        return str(desc.digest) if desc is not None else None

    def cached(self, refs: Sequence[ModelRef]) -> list[RefOutcome] | None:
        """Outcomes for every reference from the caches alone, or None if any needs I/O."""
        out = []
        for ref in refs:
            static = self._static(ref)
            if static is not None:
                out.append(static)
                continue
            digest = self._known_descriptor_digest(ref)
            if digest is None:
                return None
            key = self.key(ref.name, digest)
            decision = self.decisions.get(key)
            if decision is None:
                return None
            out.append(RefOutcome(ref, decision=decision, digest=digest, cached=True))
        hits = sum(1 for o in out if o.cached)
        if hits:
            self.metrics.cache_hits.inc(hits)
        return out

    def blocked(self, refs: Sequence[ModelRef]) -> list[RefOutcome] | None:
        """Denials for the references that need a registry whose circuit is open, or None
        when none does. Runs on the event loop before any work is queued, so a dead
        registry costs a review milliseconds even when every decision thread is busy.
        References answered by the caches are not blocked: they need no registry."""
        out = []
        for ref in refs:
            if self._static(ref) is not None or ref.reference is None:
                continue
            registry = ref.reference.registry or ""
            if self.breakers.state(registry) == "closed":
                continue
            digest = self._known_descriptor_digest(ref)
            if digest is not None and self.decisions.get(self.key(ref.name, digest)) is not None:
                continue
            reason = self.breakers.blocked(registry, probe=False)
            if reason is not None:
                out.append(RefOutcome(ref, error=reason))
        return out or None

    def joins_in_flight(self, refs: Sequence[ModelRef]) -> bool:
        """True when every reference that needs work names a decision being computed now
        (same repository, digest and policies): such a review adds no verification, it
        waits for one, so the admission queue does not refuse it (a rollout of many pods
        of one model, or a cached decision that just expired under load)."""
        waits = False
        for ref in refs:
            if self._static(ref) is not None:
                continue
            digest = self._known_descriptor_digest(ref)
            if digest is None:
                return False
            key = self.key(ref.name, digest)
            if self.decisions.get(key) is not None:
                continue
            with self._lock:
                if key not in self._inflight:
                    return False
            waits = True
        return waits

    # ------------------------------------------------------------- cold path
    def submit(
        self, refs: Sequence[ModelRef], *, deadline: float, dry_run: bool
    ) -> list[cf.Future[RefOutcome]]:
        return [self._pool.submit(self._decide_one, ref, deadline, dry_run) for ref in refs]

    def submit_pins(
        self, refs: Sequence[ModelRef], *, deadline: float, dry_run: bool
    ) -> list[cf.Future[RefOutcome]]:
        return [self._pool.submit(self._pin_one, ref, deadline, dry_run) for ref in refs]

    def decide(
        self, refs: Sequence[ModelRef], *, deadline: float, dry_run: bool = False
    ) -> list[RefOutcome]:
        """Synchronous form (CLI, tests): every reference, bounded by ``deadline``."""
        cached = self.cached(refs)
        if cached is not None:
            return cached
        futures = self.submit(refs, deadline=deadline, dry_run=dry_run)
        return self.collect(refs, futures, deadline)

    def collect(
        self, refs: Sequence[ModelRef], futures: Sequence[cf.Future[RefOutcome]], deadline: float
    ) -> list[RefOutcome]:
        cf.wait(futures, timeout=max(0.0, deadline - self._clock()))
        out = []
        for ref, fut in zip(refs, futures, strict=True):
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                out.append(fut.result())
            elif fut.done() and fut.exception() is not None:
                exc = fut.exception()
                out.append(RefOutcome(ref, error=f"internal error: {type(exc).__name__}: {exc}"))
            else:
                out.append(self.timed_out(ref))
        return out

    def timed_out(self, ref: ModelRef) -> RefOutcome:
        """The denial of a reference not decided by the deadline. If its registry had not
        answered even the first request by then, that counts as a connection failure for
        the circuit breaker now: the request's own error may come much later (the client
        serialises first contact with a host), and a hung registry must open its circuit
        after a few budgets, not after a few budgets per decision thread."""
        self.metrics.timeouts.inc()
        registry = ref.reference.registry if ref.reference is not None else None
        with self._lock:
            unanswered = id(ref) in self._contacting
        if unanswered and registry:
            self.breakers.failure(registry)
        return RefOutcome(
            ref,
            error=f"registry slow: no decision within the {self.config.budget:g}s budget "
            f"(counted from the review's arrival; {registry or 'the registry'} did not "
            "answer in time)",
        )

    def _resolve(self, ref: ModelRef, dry_run: bool) -> Descriptor:
        """The descriptor a reference names: from the tag cache, or from its registry
        through the circuit breaker (the first request of a decision is its probe)."""
        assert ref.reference is not None
        key = str(ref.reference)
        if ref.reference.digest is None:
            desc = self.tags.get(key)
            if desc is not None:
                return desc
        registry = ref.reference.registry or ""
        reason = self.breakers.blocked(registry)
        if reason is not None:
            raise _CircuitOpen(reason)
        with self._lock:
            self._contacting.add(id(ref))
        try:
            resolved: Descriptor = self.client.resolve(ref.reference)[2]
            desc = resolved
        except NetworkError:
            self.metrics.registry_errors.inc(step="resolve")
            self.breakers.failure(registry)
            raise
        except ModelRegError:
            # any other error (not found, denied, a bad manifest) is a live registry's answer
            self.metrics.registry_errors.inc(step="resolve")
            self.breakers.success(registry)
            raise
        except Exception:
            self.metrics.registry_errors.inc(step="resolve")
            raise
        finally:
            with self._lock:
                self._contacting.discard(id(ref))
        self.breakers.success(registry)
        if ref.reference.digest is None and not dry_run:
            self.tags.put(key, desc)
        return desc

    def _resolved(self, ref: ModelRef, dry_run: bool) -> Descriptor | RefOutcome:
        """``ref``'s descriptor, or the outcome that says why it could not be had: pinning
        and deciding must refuse in the same words."""
        try:
            return self._resolve(ref, dry_run)
        except _CircuitOpen as exc:
            return RefOutcome(ref, error=str(exc))
        except ModelRegError as exc:
            return RefOutcome(ref, error=f"resolve could not run: {exc.message}")
        except Exception as exc:
            return RefOutcome(ref, error=f"resolve could not run: {type(exc).__name__}: {exc}")

    def _pin_one(self, ref: ModelRef, deadline: float, dry_run: bool) -> RefOutcome:
        static = self._static(ref)
        if ref.reference is None or ref.pinned or (static is not None and static.error):
            return static or RefOutcome(ref)
        if self._clock() > deadline:
            return self.timed_out(ref)
        desc = self._resolved(ref, dry_run)
        if isinstance(desc, RefOutcome):
            return desc
        return RefOutcome(ref, digest=str(desc.digest))

    def _decide_one(self, ref: ModelRef, deadline: float, dry_run: bool) -> RefOutcome:
        static = self._static(ref)
        if static is not None:
            return static
        assert ref.reference is not None
        if self._clock() > deadline:
            return self.timed_out(ref)
        desc = self._resolved(ref, dry_run)
        if isinstance(desc, RefOutcome):
            return desc
        digest = str(desc.digest)
        # one lookup for both: policies and key must come from the same policy set
        matching, policies_key = self._match(ref.name)
        key = (ref.name, digest, policies_key)
        decision = self.decisions.get(key)
        if decision is not None:
            self.metrics.cache_hits.inc()
            return RefOutcome(ref, decision=decision, digest=digest, cached=True)
        self.metrics.cache_misses.inc()
        with self._lock:
            shared = self._inflight.get(key)
            owner = shared is None
            if owner:
                shared = cf.Future()
                self._inflight[key] = shared
        assert shared is not None
        if not owner:
            try:
                decision = shared.result(timeout=max(0.0, deadline - self._clock()))
            except cf.TimeoutError:
                return self.timed_out(ref)
            return RefOutcome(ref, decision=decision, digest=digest)
        try:
            decision = self._compute(ref, desc, matching, deadline)
            shared.set_result(decision)
        except BaseException as exc:
            shared.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)
        if decision.status in ("pass", "fail", "unmatched") and not dry_run:
            ttl = self.config.cache_ttl if decision.allowed else self.config.negative_ttl
            self.decisions.put(key, decision, ttl)
        return RefOutcome(ref, decision=decision, digest=digest)

    def _compute(
        self, ref: ModelRef, desc: Descriptor, matching: Sequence[Any], deadline: float
    ) -> Decision:
        assert ref.reference is not None
        facts = gather_facts(
            self.client,
            str(ref.reference),
            matching,
            verifier=self.verifier,
            deadline=deadline,
            resolved=desc,
        )
        for err in facts.errors:
            self.metrics.registry_errors.inc(step=err.step)
        for outcome in facts.verifications.values():
            if isinstance(outcome, StepError):
                self.metrics.registry_errors.inc(step=outcome.step)
        return evaluate(matching, facts)


class _CircuitOpen(Exception):
    """The reference's registry is not to be contacted now; the message says why."""
