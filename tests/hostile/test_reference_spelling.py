"""Attack class: policy bypass by reference spelling (SECURITY.md case 26, issue 13).

The kubelet pulls ``REGISTRY.EXAMPLE.COM/models/llm:v1``, ``registry.example.com:443/...``,
``index.docker.io/acme/m`` or ``docker.io/llm`` from a governed repository; a policy
matched against the raw spelling would not see them, and an unsigned model would run.
Each spelling must meet the policy that governs its repository, through every path that
decides: the admission webhook, ``policy check`` and ``ci verify``.

The governed repositories hold a model with a pickle file, so a governed reference is
*denied* (the ``noPickle`` rule fails) and an ungoverned one would be *admitted*
(the webhook does not check images no policy matches): a missing canonicalisation turns
every assertion here from a denial into an admission.
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from modelreg_cli.main import app
from typer.testing import CliRunner

from modelreg.ci import verify as ci_verify
from modelreg.oci.canonical import canonical_reference
from modelreg.policy import PolicySet, parse_policies
from modelreg.webhook.admission import parse_review, validation_response
from modelreg.webhook.engine import Engine, EngineConfig
from tests.unit.webhook.fakeregistry import FakeClient
from tests.unit.webhook.reviews import pod_spec, review, workload

POLICY = textwrap.dedent(
    """\
    apiVersion: modelreg.dev/v1alpha1
    kind: ModelPolicy
    metadata: {name: no-pickle}
    spec:
      match:
        references:
          - "registry.example.com/models/**"
          - "docker.io/acme/**"
          - "docker.io/library/llm"
      require:
        artifact: {noPickle: true}
    """
)

# (spelling written by the attacker, canonical repository the kubelet pulls from)
SPELLINGS = [
    ("Registry.Example.com/models/llm:v1", "registry.example.com/models/llm"),
    ("REGISTRY.EXAMPLE.COM/models/llm:v1", "registry.example.com/models/llm"),
    ("registry.example.com:443/models/llm:v1", "registry.example.com/models/llm"),
    ("index.docker.io/acme/m:v1", "docker.io/acme/m"),
    ("registry-1.docker.io/acme/m:v1", "docker.io/acme/m"),
    ("registry.hub.docker.com/acme/m:v1", "docker.io/acme/m"),
    ("docker.io/llm:v1", "docker.io/library/llm"),
]
# spellings only the kubelet reads this way (no registry host means Docker Hub)
POD_ONLY_SPELLINGS = [
    ("llm:v1", "docker.io/library/llm"),
    ("acme/m:v1", "docker.io/acme/m"),
]


def policies() -> PolicySet:
    return PolicySet(tuple(parse_policies(POLICY, "no-pickle.yaml")))


def registry() -> FakeClient:
    client = FakeClient()
    for repo in {canonical for _, canonical in SPELLINGS + POD_ONLY_SPELLINGS}:
        client.push_model(repo, "v1", {"model.bin": b"pickled weights"})
    return client


def webhook_decision(images: list[str], **config: Any) -> dict[str, Any]:
    """The webhook's real decision path: an AdmissionReview in, the response out."""
    engine = Engine(policies(), registry(), EngineConfig(**config))
    try:
        doc = review(workload("Pod", pod_spec(images)))
        req = parse_review(json.dumps(doc).encode())
        refs = engine.models(req)
        outcomes = engine.decide(refs, deadline=time.monotonic() + 5.0, dry_run=False)
        return validation_response(req.uid, outcomes)
    finally:
        engine.close()


@pytest.mark.parametrize(("spelling", "canonical"), SPELLINGS + POD_ONLY_SPELLINGS)
def test_webhook_denies_every_spelling_of_a_governed_image(spelling: str, canonical: str) -> None:
    resp = webhook_decision([spelling])
    assert resp["allowed"] is False, f"{spelling} was admitted unchecked"
    message = resp["status"]["message"]
    assert spelling in message  # the denial names the reference as written
    assert "policy no-pickle: artifact.noPickle" in message


@pytest.mark.parametrize(("spelling", "canonical"), SPELLINGS)
def test_webhook_checks_annotation_and_image_volume_spellings(
    spelling: str, canonical: str
) -> None:
    engine = Engine(policies(), registry())
    try:
        spec = pod_spec(["busybox"], volumes=[spelling])
        doc = review(workload("Pod", spec, annotations={"modelreg.dev/model": spelling}))
        req = parse_review(json.dumps(doc).encode())
        outcomes = engine.decide(engine.models(req), deadline=time.monotonic() + 5.0)
    finally:
        engine.close()
    checked = [o for o in outcomes if o.ref.raw == spelling]
    assert len(checked) == 2  # the image volume and the annotation
    assert all(not o.allowed and o.decision is not None for o in checked)
    assert all(o.ref.name == canonical for o in checked)


def test_webhook_denies_what_cannot_be_canonicalised() -> None:
    resp = webhook_decision(["Registry.Example.com/Models/llm:v1", "Acme/m:v1", "127.1/models/x"])
    assert resp["allowed"] is False
    message = resp["status"]["message"]
    assert "modelreg denied 3 of 3" in message
    assert "repository names are lowercase" in message
    assert "'Acme'" in message and "'127.1'" in message


def test_webhook_unmatched_images_setting() -> None:
    stranger = "quay.io/someone/tool:v1"
    assert webhook_decision([stranger])["allowed"] is True  # default: allow (not a model)
    denied = webhook_decision([stranger], unmatched_images="deny")
    assert denied["allowed"] is False
    assert "no policy applies to this image" in denied["status"]["message"]
    warned = webhook_decision([stranger], unmatched_images="warn")
    assert warned["allowed"] is True
    assert "no policy applies to this image" in warned["warnings"][0]


# ------------------------------------------------------------------ policy check / ci verify
class _CliClient(FakeClient):
    """The fake registry behind ``policy check``'s ``with Client(options) as client``."""

    def __init__(self, *_: Any, **__: Any) -> None:
        super().__init__()
        for repo in {canonical for _, canonical in SPELLINGS}:
            self.push_model(repo, "v1", {"model.bin": b"pickled weights"})

    def __enter__(self) -> _CliClient:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "no-pickle.yaml"
    path.write_text(POLICY)
    return path


@pytest.mark.parametrize(("spelling", "canonical"), SPELLINGS)
def test_policy_check_refuses_every_spelling(
    spelling: str, canonical: str, policy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("modelreg.client.Client", _CliClient)
    result = CliRunner().invoke(
        app, ["policy", "check", spelling, "--policy", str(policy_file), "--json"]
    )
    doc = json.loads(result.stdout)
    assert result.exit_code == 1, result.stdout
    assert doc["name"] == canonical and doc["status"] == "fail"
    assert doc["policies"][0]["policy"] == "no-pickle"


@pytest.mark.parametrize(("spelling", "canonical"), SPELLINGS)
def test_ci_verify_refuses_every_spelling(spelling: str, canonical: str, policy_file: Path) -> None:
    gate = ci_verify(spelling, [policy_file], client=_CliClient())  # type: ignore[arg-type]
    assert gate.decision.status == "fail" and gate.exit_code == 13
    assert gate.decision.name == canonical
    assert gate.pinned is not None and gate.pinned.startswith(f"{canonical}@sha256:")


def test_policy_check_unmatched_setting(policy_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("modelreg.client.Client", _CliClient)
    base = ["policy", "check", "quay.io/someone/tool:v1", "--policy", str(policy_file)]
    assert CliRunner().invoke(app, base).exit_code == 1
    assert CliRunner().invoke(app, [*base, "--unmatched", "warn"]).exit_code == 0
    assert CliRunner().invoke(app, [*base, "--unmatched", "bogus"]).exit_code == 2


def test_ci_verify_unmatched_setting(policy_file: Path) -> None:
    ref = "quay.io/someone/tool:v1"
    client: Any = _CliClient()
    assert ci_verify(ref, [policy_file], client=client).exit_code == 13
    warned = ci_verify(ref, [policy_file], client=client, unmatched="warn")
    assert warned.exit_code == 0 and warned.warnings


# ------------------------------------------------------------------ property
_GOVERNED = [
    # (host choices that all name the same registry, repository as written, canonical name)
    (
        ["registry.example.com"],
        "models/llm",
        "registry.example.com/models/llm",
    ),
    (
        ["docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"],
        "acme/m",
        "docker.io/acme/m",
    ),
    (
        ["docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"],
        "llm",
        "docker.io/library/llm",
    ),
]


@st.composite
def spellings(draw: st.DrawFn) -> tuple[str, str]:
    hosts, repository, canonical = draw(st.sampled_from(_GOVERNED))
    host = draw(st.sampled_from(hosts))
    flips = draw(st.lists(st.booleans(), min_size=len(host), max_size=len(host)))
    host = "".join(c.upper() if f else c for c, f in zip(host, flips, strict=True))
    port = draw(st.sampled_from(["", ":443", ":0443"]))
    if repository == "llm" and draw(st.booleans()):
        repository = "library/llm"
    suffix = draw(st.sampled_from(["", ":v1", "@sha256:" + "a" * 64, ":v1@sha256:" + "b" * 64]))
    return f"{host}{port}/{repository}{suffix}", canonical


@settings(max_examples=200, deadline=None)
@given(spellings())
def test_property_every_spelling_is_one_canonical_name(case: tuple[str, str]) -> None:
    spelling, canonical = case
    pset = policies()
    for hostless in ("store", "docker.io"):
        ref = canonical_reference(spelling, hostless=hostless)  # type: ignore[arg-type]
        assert ref.name == canonical
        assert canonical_reference(str(ref)) == ref  # canonical is a fixed point
        assert [p.name for p in pset.matching(ref.name)] == ["no-pickle"]
