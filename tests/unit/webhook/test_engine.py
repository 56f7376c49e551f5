"""The engine with an in-memory registry: caching, budget, dryRun, fail closed."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from modelreg.policy import Policy, PolicySet, StepError, parse_policies
from modelreg.webhook.admission import MODEL_ANNOTATION, parse_review, validation_response
from modelreg.webhook.cache import TTLCache, decision_key
from modelreg.webhook.engine import Engine, EngineConfig
from tests.unit.policy.fakes import Result, Sig
from tests.unit.policy.test_evaluate import policy
from tests.unit.webhook.fakeregistry import FakeClient
from tests.unit.webhook.reviews import pod_spec, review, workload

REG = "reg.example.com"


def policies(
    text: str = "artifact: {noPickle: true}\n", *, name: str = "p", mode: str = "enforce"
) -> PolicySet:
    """One policy over ``REG/models/**`` requiring ``text``, as the engine loads it."""
    doc = policy(text, name=name, mode=mode, match=f"{REG}/models/**")
    return PolicySet(tuple(parse_policies(doc, f"{name}.yaml")))


_SIGNED_BY_RELEASE_KEY = (
    "signatures:\n  authorities:\n    - name: k\n      key:\n        pem: |\n"
    + textwrap.indent(
        (Path(__file__).parents[3] / "policies/keys/example-release.pub").read_text(), "          "
    )
)
"""A requirement the fake verifiers answer: signed by the shipped example release key."""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(images: list[str], **kw: Any) -> Any:
    obj = workload(
        "Pod", pod_spec(images), **{k: v for k, v in kw.items() if k in ("annotations", "labels")}
    )
    doc = review(obj, dry_run=kw.get("dry_run", False))
    return parse_review(json.dumps(doc).encode())


def decide(engine: Engine, req: Any) -> dict[str, Any]:
    refs = engine.models(req)
    out = engine.decide(refs, deadline=time.monotonic() + engine.config.budget, dry_run=req.dry_run)
    return validation_response(req.uid, out)


def test_allow_and_deny(client: FakeClient) -> None:
    engine = Engine(policies(), client)
    assert decide(engine, request([f"{REG}/models/good:v1", "nginx"]))["allowed"] is True
    resp = decide(engine, request([f"{REG}/models/pickled:v1"]))
    assert resp["allowed"] is False
    assert "pickle-based files: model.bin" in resp["status"]["message"]


def test_cached_path_needs_no_registry(client: FakeClient) -> None:
    engine = Engine(policies(), client)
    req = request([f"{REG}/models/good:v1"])
    refs = engine.models(req)
    assert engine.cached(refs) is None
    decide(engine, req)
    calls = client.resolves
    cached = engine.cached(refs)
    assert cached is not None and cached[0].cached and cached[0].allowed
    assert client.resolves == calls
    assert engine.metrics.cache_hits.value() == 1


def test_policy_change_invalidates_cached_decisions(client: FakeClient) -> None:
    """SECURITY 24: the cache key includes the digest of the applicable policies."""
    loose = Engine(policies("artifact: {maxSizeBytes: 1000000}\n"), client)
    req = request([f"{REG}/models/pickled:v1"])
    assert decide(loose, req)["allowed"] is True
    strict_policies = policies("artifact: {noPickle: true}\n")
    # the same cache (as if the webhook reloaded its policies but kept its cache)
    strict = Engine(strict_policies, client)
    strict.decisions = loose.decisions
    strict.tags = loose.tags
    refs = strict.models(req)
    assert strict.cached(refs) is None  # nothing cached under the new policy digest
    assert decide(strict, req)["allowed"] is False


def test_decision_key_includes_policy_digest() -> None:
    a = list(policies("artifact: {noPickle: true}\n"))
    b = list(policies("artifact: {noPickle: true}\n", mode="warn"))
    assert decision_key("n", "d", a) != decision_key("n", "d", b)
    assert decision_key("n", "d", a) == decision_key(
        "n", "d", list(policies("artifact: {noPickle: true}\n"))
    )
    assert decision_key("n", "d", a) != decision_key("m", "d", a)


def test_dry_run_writes_no_cache(client: FakeClient) -> None:
    """SECURITY 25: dryRun reviews are evaluated without side effects."""
    engine = Engine(policies(), client)
    dry = request([f"{REG}/models/good:v1"], dry_run=True)
    assert decide(engine, dry)["allowed"] is True
    assert len(engine.decisions) == 0 and len(engine.tags) == 0
    resp = decide(engine, request([f"{REG}/models/pickled:v1"], dry_run=True))
    assert resp["allowed"] is False  # same answer as a real request
    assert len(engine.decisions) == 0


def test_registry_unreachable_denies_with_reason(client: FakeClient) -> None:
    engine = Engine(policies(), client)
    client.down = True
    resp = decide(engine, request([f"{REG}/models/good:v1"]))
    assert resp["allowed"] is False
    assert "cannot connect" in resp["status"]["message"]
    assert "fail closed" in resp["status"]["message"]
    assert len(engine.decisions) == 0  # errors are never cached
    assert engine.metrics.registry_errors.value(step="resolve") == 1


def test_slow_registry_denied_within_budget(client: FakeClient) -> None:
    """SECURITY 23: a slow registry gives a denial inside the budget."""
    engine = Engine(policies(), client, EngineConfig(budget=0.3))
    client.delay = 2.0
    start = time.monotonic()
    resp = decide(engine, request([f"{REG}/models/good:v1"]))
    assert time.monotonic() - start < 2.0
    assert resp["allowed"] is False
    assert "no decision within the 0.3s budget" in resp["status"]["message"]
    engine.close()


def test_ttls(client: FakeClient) -> None:
    clock = Clock()
    engine = Engine(
        policies(), client, EngineConfig(cache_ttl=60, negative_ttl=5, tag_ttl=10), clock=clock
    )
    good = engine.models(request([f"{REG}/models/good:v1"]))
    bad = engine.models(request([f"{REG}/models/pickled:v1"]))
    # deadlines are on the engine's clock: a real monotonic deadline against the fake
    # clock (1000) would already be over on a machine booted less than 1000 s ago
    engine.decide(good, deadline=clock.now + 5)
    engine.decide(bad, deadline=clock.now + 5)
    clock.now += 6
    assert engine.cached(bad) is None  # negative TTL over (and tag TTL still on)
    assert engine.cached(good) is not None
    clock.now += 5
    assert engine.cached(good) is None  # tag resolution expired: resolve again


def test_tag_move_is_seen_after_tag_ttl(client: FakeClient) -> None:
    clock = Clock()
    engine = Engine(policies(), client, EngineConfig(tag_ttl=10), clock=clock)
    refs = engine.models(request([f"{REG}/models/good:v1"]))
    first = engine.decide(refs, deadline=clock.now + 5)[0].digest
    new = client.push_model(f"{REG}/models/good", "v1", {"model.bin": b"now a pickle"})
    clock.now += 11
    out = engine.decide(refs, deadline=clock.now + 5)
    assert out[0].digest == str(new.digest) != first
    assert out[0].allowed is False


def test_concurrent_cold_lookups_share_one_computation(client: FakeClient) -> None:
    calls = []

    def verifier(target: Any, desc: Any, policy: Policy) -> Result:
        calls.append(1)
        time.sleep(0.2)
        return Result(digest=str(desc.digest), signatures=(Sig("k"),))

    engine = Engine(policies(_SIGNED_BY_RELEASE_KEY), client, verifier=verifier)
    refs = engine.models(request([f"{REG}/models/good:v1"]))
    results: list[Any] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(engine.decide(refs, deadline=time.monotonic() + 5))
        )
        for _ in range(5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r[0].allowed for r in results)
    assert len(calls) == 1


def test_verification_that_cannot_run_denies(client: FakeClient) -> None:
    def verifier(target: Any, desc: Any, policy: Policy) -> StepError:
        raise RuntimeError("sigstore exploded")

    engine = Engine(policies(_SIGNED_BY_RELEASE_KEY), client, verifier=verifier)
    resp = decide(engine, request([f"{REG}/models/good:v1"]))
    assert resp["allowed"] is False
    assert "verify could not run: RuntimeError: sigstore exploded" in resp["status"]["message"]
    assert len(engine.decisions) == 0


LOOSENERS = {
    "modelreg.dev/mode": "warn",
    "modelreg.dev/skip": "true",
    "modelreg.dev/policy": "none",
    "modelreg.dev/allow-unsigned": "true",
    "admission.modelreg.dev/ignore": "true",
    "sidecar.istio.io/inject": "false",
}


def test_nothing_in_the_workload_loosens_a_policy(client: FakeClient) -> None:
    engine = Engine(policies(), client)
    obj = workload(
        "Deployment",
        pod_spec([f"{REG}/models/pickled:v1"]),
        annotations=LOOSENERS,
        template_annotations=LOOSENERS,
        labels={"modelreg.dev/exempt": "true", "policy": "off", "app": "x"},
    )
    for dry in (False, True):
        req = parse_review(json.dumps(review(obj, dry_run=dry)).encode())
        assert decide(engine, req)["allowed"] is False
    # the model annotation can only add references: a good model named there does not
    # excuse the pickled container
    obj = workload(
        "Pod",
        pod_spec([f"{REG}/models/pickled:v1"]),
        annotations={MODEL_ANNOTATION: f"{REG}/models/good:v1"},
    )
    req = parse_review(json.dumps(review(obj)).encode())
    resp = decide(engine, req)
    assert resp["allowed"] is False
    assert "denied 1 of 2" in resp["status"]["message"]


def test_unmatched_annotation_models_default_deny(client: FakeClient) -> None:
    engine = Engine(policies(), client)
    obj = workload(
        "Pod", pod_spec(["busybox"]), annotations={MODEL_ANNOTATION: "other.example.com/x/y:v1"}
    )
    req = parse_review(json.dumps(review(obj)).encode())
    assert decide(engine, req)["allowed"] is False
    allow = Engine(policies(), client, EngineConfig(unmatched_models="allow"))
    assert decide(allow, req)["allowed"] is True


def test_require_pinned(client: FakeClient) -> None:
    engine = Engine(policies(), client, EngineConfig(require_pinned=True))
    resp = decide(engine, request([f"{REG}/models/good:v1"]))
    assert resp["allowed"] is False and "not pinned" in resp["status"]["message"]
    digest = client.repo(f"{REG}/models/good").resolve("v1").digest
    assert decide(engine, request([f"{REG}/models/good:v1@{digest}"]))["allowed"] is True


def test_ttl_cache_lru() -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(10, max_entries=2, clock=clock)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)  # evicts b (least recently used)
    assert cache.get("b") is None and cache.get("a") == 1
    cache.put("z", 9, ttl=0)
    assert cache.get("z") is None
    clock.now += 11
    assert cache.get("a") is None


def test_engine_key_is_the_decision_key_and_follows_policy_replacement(client: FakeClient) -> None:
    first = policies("artifact: {noPickle: true}\n")
    engine = Engine(first, client)
    name = f"{REG}/models/good"
    assert engine.key(name, "sha256:x") == decision_key(name, "sha256:x", first.matching(name))
    second = policies("artifact: {noPickle: true}\n", mode="warn")
    engine.replace_policies(second)
    assert engine.key(name, "sha256:x") == decision_key(name, "sha256:x", second.matching(name))
    assert engine.key(name, "sha256:x") != decision_key(name, "sha256:x", first.matching(name))


def test_images_outside_the_artifact_types_are_admitted_and_cached(client: FakeClient) -> None:
    doc = textwrap.dedent(
        f"""\
        apiVersion: modelreg.dev/v1alpha1
        kind: ModelPolicy
        metadata: {{name: narrowed}}
        spec:
          match:
            references: ["{REG}/models/**"]
            artifactTypes: [application/x-other]
          require: {{artifact: {{noPickle: true}}}}
        """
    )
    engine = Engine(PolicySet(tuple(parse_policies(doc, "n.yaml"))), client)
    req = request([f"{REG}/models/pickled:v1"])
    assert decide(engine, req)["allowed"] is True  # not a type this policy governs
    calls = client.resolves
    assert engine.cached(engine.models(req)) is not None
    assert client.resolves == calls
