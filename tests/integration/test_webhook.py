"""The real webhook over real HTTPS, against the real registry.

The registry (CNCF Distribution) holds signed, unsigned, wrongly-signed, retagged and
tampered models, pushed with ``Client.push`` and signed with ``modelreg.sign``. The
webhook runs on a loopback port (modelreg.webhook.http) with a test CA; AdmissionReview documents
are shaped like the API server's (tests/unit/webhook/reviews.py).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import modelreg.sign as sign_api
from modelreg.client import Client, RemoteOptions
from modelreg.policy import load_policies
from modelreg.webhook import certs
from modelreg.webhook.admission import MODEL_ANNOTATION
from modelreg.webhook.engine import Engine, EngineConfig
from modelreg.webhook.server import BackgroundServer, ServerConfig
from tests.integration.helpers import module_home
from tests.listeners import silent_listener
from tests.unit.webhook.reviews import pod_spec, review, workload

SLSA = "https://slsa.dev/provenance/v1"
KINDS = ["Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_model(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


@dataclass
class Models:
    host: str
    repo: str
    signed: str
    unsigned: str
    wrong_key: str
    attested: str
    bad_provenance: str
    pickled_signed: str
    retagged: str
    digests: dict[str, str]
    key_file: Path
    policy_dir: Path


def _policy(
    directory: Path, name: str, about: str, key_file: Path, spec: str, require: str = ""
) -> None:
    """``NAME.yaml``: a ModelPolicy (``about`` its comment) that requires a signature by
    the release key ``key_file`` and ``require`` (YAML at that level), with the spec's
    ``mode`` and ``match`` in ``spec``."""
    (directory / f"{name}.yaml").write_text(
        f"""\
# test: {about}
apiVersion: modelreg.dev/v1alpha1
kind: ModelPolicy
metadata: {{name: {name}, description: test}}
spec:
{spec}  require:
    signatures:
      authorities:
        - name: release
          key: {{path: {key_file.name}}}
{require}"""
    )


def _policies(directory: Path, host: str, repo: str, key_file: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    _policy(
        directory,
        "signed",
        f"every model under {repo}/ is signed by the release key and holds no pickle",
        key_file,
        f"""\
  mode: enforce
  match:
    references: ["{host}/{repo}/**"]
""",
        """\
    artifact:
      noPickle: true
""",
    )
    _policy(
        directory,
        "provenance",
        f"models under {repo}/attested/ carry SLSA provenance from acme/models on main",
        key_file,
        f"""\
  match:
    references: ["{host}/{repo}/attested/**"]
""",
        f"""\
    attestations:
      - predicateType: {SLSA}
        conditions:
          - field: predicate.buildDefinition.externalParameters.workflow.repository
            equals: https://github.com/acme/models
        rego: |
          package modelreg.provenance
          import rego.v1
          deny contains msg if {{
            ref := input.predicate.buildDefinition.externalParameters.workflow.ref
            not startswith(ref, "refs/heads/main")
            msg := sprintf("built from %s", [ref])
          }}
""",
    )
    _policy(
        directory,
        "staging-warn",
        "staging models only warn",
        key_file,
        f"""\
  mode: warn
  match:
    references: ["{host}/staging-{repo}/**"]
""",
    )


@pytest.fixture(scope="module")
def models(registry_plain: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Models]:
    with module_home(tmp_path_factory, "webhook-models") as tmp:
        host = registry_plain.host
        repo = f"wh{os.getpid()}"
        key = sign_api.generate_private_key()
        other_key = sign_api.generate_private_key()
        key_file = tmp / "policies" / "release.pub"
        key_file.parent.mkdir(parents=True)
        key_file.write_bytes(sign_api.public_key_pem(key.public_key()))
        digests: dict[str, str] = {}
        client = Client(RemoteOptions(store=str(tmp / "store"), fsync=False))

        def push(name: str, files: dict[str, bytes], signer: Any = None) -> str:
            ref = f"{host}/{name}:v1"
            pushed = client.push(make_model(tmp / "src" / name.replace("/", "_"), files), ref)
            digests[ref] = pushed.digest
            if signer is not None:
                _, target, desc = client.resolve(ref)
                sign_api.sign(target, desc, sign_api.KeySigner(signer))
            return ref

        weights = {"model.safetensors": os.urandom(4096), "config.json": b'{"a": 1}'}
        signed = push(f"{repo}/signed", weights, key)
        unsigned = push(f"{repo}/unsigned", {"model.safetensors": os.urandom(2048)})
        wrong = push(f"{repo}/wrong-key", {"model.safetensors": os.urandom(2048)}, other_key)
        pickled = push(f"{repo}/pickled", {"model.bin": b"\x80\x04K\x01."}, key)
        # retagged: v1 was signed, then the tag moved to other (unsigned) content
        retagged = push(f"{repo}/retagged", {"model.safetensors": os.urandom(1024)}, key)
        first = digests[retagged]
        moved = client.push(
            make_model(tmp / "src" / "moved", {"model.safetensors": b"x"}), retagged
        )
        digests[retagged] = moved.digest
        digests["retagged-first"] = first

        def provenance(ref_name: str) -> dict[str, Any]:
            return sign_api.slsa_provenance(
                environ={
                    "GITHUB_ACTIONS": "true",
                    "GITHUB_REPOSITORY": "acme/models",
                    "GITHUB_REF": ref_name,
                    "GITHUB_WORKFLOW_REF": "acme/models/.github/workflows/release.yml@" + ref_name,
                    "GITHUB_SHA": "0" * 40,
                    "GITHUB_RUN_ID": "1",
                }
            )

        attested = push(f"{repo}/attested/good", {"model.safetensors": os.urandom(512)}, key)
        bad_prov = push(f"{repo}/attested/dev", {"model.safetensors": os.urandom(512)}, key)
        for ref, branch in ((attested, "refs/heads/main"), (bad_prov, "refs/heads/dev")):
            _, target, desc = client.resolve(ref)
            sign_api.attest(target, desc, sign_api.KeySigner(key), SLSA, provenance(branch))
        push(f"staging-{repo}/m", {"model.safetensors": os.urandom(256)})
        _policies(tmp / "policies", host, repo, key_file)
        client.close()
        yield Models(
            host,
            repo,
            signed,
            unsigned,
            wrong,
            attested,
            bad_prov,
            pickled,
            retagged,
            digests,
            key_file,
            tmp / "policies",
        )


@dataclass
class Hook:
    server: BackgroundServer
    engine: Engine
    http: httpx.Client
    ca_file: Path
    cert_dir: Path

    def post(self, path: str, doc: Any, **kw: Any) -> httpx.Response:
        return self.http.post(self.server.url + path, json=doc, **kw)

    def validate(self, doc: dict[str, Any]) -> dict[str, Any]:
        r = self.post("/validate", doc)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["apiVersion"] == "admission.k8s.io/v1"
        assert body["kind"] == "AdmissionReview"
        assert body["response"]["uid"] == doc["request"]["uid"]
        return dict(body["response"])


def start_hook(
    tmp: Path, policy_dir: Path, config: EngineConfig | None = None, reload_interval: float = 10.0
) -> Hook:
    made = certs.generate("modelreg-webhook", "test", extra_names=("127.0.0.1", "localhost"))
    paths = certs.write(made, tmp / "tls")
    policies = load_policies([policy_dir])
    client = Client(RemoteOptions(store=str(tmp / "hook-store"), fsync=False))
    engine = Engine(policies, client, config or EngineConfig(budget=5.0))
    server = BackgroundServer(
        engine,
        ServerConfig(
            host="127.0.0.1",
            port=free_port(),
            cert_file=paths["cert"],
            key_file=paths["key"],
            reload_interval=reload_interval,
            log_level="warning",
            policy_paths=(str(policy_dir),),
        ),
    ).start()
    ctx = ssl.create_default_context(cafile=paths["ca"])
    return Hook(
        server, engine, httpx.Client(verify=ctx, timeout=30), Path(paths["ca"]), tmp / "tls"
    )


@pytest.fixture(scope="module")
def hook(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hook]:
    h = start_hook(tmp_path_factory.mktemp("hook"), models.policy_dir)
    yield h
    h.http.close()
    h.server.stop()


# ------------------------------------------------------------------------- tests
def test_signed_allowed_unsigned_and_wrongly_signed_denied(hook: Hook, models: Models) -> None:
    ok = hook.validate(review(workload("Pod", pod_spec([models.signed, "busybox:1.36"]))))
    assert ok["allowed"] is True, ok
    for ref, why in ((models.unsigned, "release"), (models.wrong_key, "release")):
        resp = hook.validate(review(workload("Pod", pod_spec([ref]))))
        assert resp["allowed"] is False
        msg = resp["status"]["message"]
        assert resp["status"]["code"] == 403
        assert ref in msg and "policy signed: signatures" in msg and why in msg


def test_pickle_denied_even_when_signed(hook: Hook, models: Models) -> None:
    resp = hook.validate(review(workload("Pod", pod_spec([models.pickled_signed]))))
    assert resp["allowed"] is False
    assert "artifact.noPickle" in resp["status"]["message"]
    assert "model.bin" in resp["status"]["message"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_workload_kind_every_place(hook: Hook, models: Models, kind: str) -> None:
    spec = pod_spec(
        ["busybox:1.36"],
        init=[models.signed],
        ephemeral=[models.signed],
        volumes=[models.signed, models.unsigned],
    )
    obj = workload(
        kind,
        spec,
        template_annotations={MODEL_ANNOTATION: models.wrong_key},
        annotations={MODEL_ANNOTATION: models.signed},
    )
    resp = hook.validate(review(obj))
    assert resp["allowed"] is False
    msg = resp["status"]["message"]
    if kind == "Pod":
        # a Pod has no template: its own annotation is the one read
        assert "denied 1 of 5" in msg
    else:
        assert "denied 2 of 6" in msg
        assert f"annotations[{MODEL_ANNOTATION}] {models.wrong_key}" in msg
    assert f"volumes[1].image.reference {models.unsigned}" in msg
    assert "initContainers" not in msg and "ephemeralContainers" not in msg
    clean = workload(kind, pod_spec(["busybox"], init=[models.signed], volumes=[models.signed]))
    assert hook.validate(review(clean))["allowed"] is True


def test_ephemeral_container_subresource(hook: Hook, models: Models) -> None:
    pod = workload("Pod", pod_spec([models.signed], ephemeral=[models.unsigned]))
    resp = hook.validate(
        review(pod, operation="UPDATE", sub_resource="ephemeralcontainers", old=pod)
    )
    assert resp["allowed"] is False
    assert "ephemeralContainers[0].image" in resp["status"]["message"]


def test_attestation_conditions_and_rego(hook: Hook, models: Models) -> None:
    assert hook.validate(review(workload("Job", pod_spec([models.attested]))))["allowed"] is True
    resp = hook.validate(review(workload("Job", pod_spec([models.bad_provenance]))))
    assert resp["allowed"] is False
    assert "rego: built from refs/heads/dev" in resp["status"]["message"]


def test_mutate_pins_tags_then_validation_sees_digests(hook: Hook, models: Models) -> None:
    obj = workload("Deployment", pod_spec([models.signed, "busybox:1.36"], volumes=[models.signed]))
    r = hook.post("/mutate", review(obj))
    assert r.status_code == 200
    resp = r.json()["response"]
    assert resp["allowed"] is True and resp["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(resp["patch"]))
    digest = models.digests[models.signed]
    assert ops == [
        {
            "op": "replace",
            "path": "/spec/template/spec/containers/0/image",
            "value": f"{models.signed}@{digest}",
        },
        {
            "op": "replace",
            "path": "/spec/template/spec/volumes/0/image/reference",
            "value": f"{models.signed}@{digest}",
        },
    ]
    obj["spec"]["template"]["spec"]["containers"][0]["image"] = ops[0]["value"]
    obj["spec"]["template"]["spec"]["volumes"][0]["image"]["reference"] = ops[1]["value"]
    assert hook.validate(review(obj))["allowed"] is True
    # already pinned: nothing to patch
    again = hook.post("/mutate", review(obj)).json()["response"]
    assert "patch" not in again


def test_tag_moved_after_signing_is_denied(hook: Hook, models: Models) -> None:
    """SECURITY 18: the digest the tag names *now* is what gets verified and pinned."""
    resp = hook.validate(review(workload("Pod", pod_spec([models.retagged]))))
    assert resp["allowed"] is False
    assert models.digests[models.retagged] in resp["status"]["message"]
    # the first (signed) digest, pinned explicitly, is still allowed
    first = models.retagged + "@" + models.digests["retagged-first"]
    assert hook.validate(review(workload("Pod", pod_spec([first]))))["allowed"] is True
    # a digest that does not belong to the tag: the digest is what counts
    mixed = models.unsigned + "@" + models.digests[models.signed]
    resp = hook.validate(review(workload("Pod", pod_spec([mixed]))))
    assert resp["allowed"] is False


def test_warn_mode_answers_warnings(hook: Hook, models: Models) -> None:
    ref = f"{models.host}/staging-{models.repo}/m:v1"
    resp = hook.validate(review(workload("Pod", pod_spec([ref]))))
    assert resp["allowed"] is True
    assert resp["warnings"] and "policy staging-warn: signatures" in resp["warnings"][0]


def test_nothing_in_the_workload_loosens_a_policy(hook: Hook, models: Models) -> None:
    loose = {
        "modelreg.dev/mode": "warn",
        "modelreg.dev/skip": "true",
        "modelreg.dev/policy": "none",
        "modelreg.dev/verified": "true",
        "admissions.enforcer/disabled": "true",
    }
    obj = workload(
        "Deployment",
        pod_spec([models.unsigned]),
        annotations=loose,
        template_annotations=loose,
        labels={"modelreg.dev/exempt": "true", "app": "x"},
    )
    for dry in (False, True):
        assert hook.validate(review(obj, dry_run=dry))["allowed"] is False


def test_dry_run_has_no_side_effects(
    hook: Hook, models: Models, registry_plain: Any, tmp_path: Path
) -> None:
    """SECURITY 25: same answer, nothing cached, nothing written to the registry."""
    client = Client(RemoteOptions(store=str(tmp_path / "s"), fsync=False))
    ref = f"{models.host}/{models.repo}/dry:v1"
    client.push(make_model(tmp_path / "dry", {"model.safetensors": os.urandom(300)}), ref)
    tags_before = client.tags(f"{models.host}/{models.repo}/dry")
    referrers_before = client.referrers(ref)
    entries = len(hook.engine.decisions), len(hook.engine.tags)
    resp = hook.validate(review(workload("Pod", pod_spec([ref])), dry_run=True))
    assert resp["allowed"] is False
    assert (len(hook.engine.decisions), len(hook.engine.tags)) == entries
    assert client.tags(f"{models.host}/{models.repo}/dry") == tags_before
    assert client.referrers(ref) == referrers_before
    r = hook.post("/mutate", review(workload("Pod", pod_spec([ref])), dry_run=True))
    assert r.json()["response"]["allowed"] is True
    assert len(hook.engine.tags) == entries[1]
    client.close()


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"{not json", {"content-type": "application/json"}, 400),
        (b"null", {"content-type": "application/json"}, 400),
        (
            json.dumps(
                {
                    "apiVersion": "admission.k8s.io/v1beta1",
                    "kind": "AdmissionReview",
                    "request": {"uid": "x"},
                }
            ).encode(),
            {"content-type": "application/json"},
            400,
        ),
        (
            json.dumps({"apiVersion": "v1", "kind": "Pod"}).encode(),
            {"content-type": "application/json"},
            400,
        ),
        (b"{}", {"content-type": "text/plain"}, 415),
        (b"[" * 200_000 + b"]" * 200_000, {"content-type": "application/json"}, 400),
    ],
)
def test_malformed_requests_are_4xx(
    hook: Hook, body: bytes, headers: dict[str, str], status: int
) -> None:
    """SECURITY 22."""
    r = hook.http.post(hook.server.url + "/validate", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert "error" in r.json()
    assert hook.http.get(hook.server.url + "/healthz").status_code == 200


def test_huge_bodies_are_413(hook: Hook) -> None:
    big = b'{"a":"' + b"x" * (4 * 1024 * 1024) + b'"}'
    r = hook.http.post(
        hook.server.url + "/validate", content=big, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(64):
            yield b"x" * (64 * 1024)

    r = hook.http.post(
        hook.server.url + "/validate",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413
    assert hook.http.get(hook.server.url + "/validate").status_code == 405
    assert hook.http.get(hook.server.url + "/healthz").status_code == 200


def test_registry_unreachable_denies_with_reason(hook: Hook, models: Models) -> None:
    """SECURITY 23: an unreachable registry is a denial with a clear message."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    # an annotation names a model on a registry that is not there; no policy covers it
    # either, and the default for such references is deny
    ref = f"127.0.0.1:{dead}/{models.repo}/x:v1"
    resp = hook.validate(
        review(workload("Pod", pod_spec(["busybox"]), annotations={MODEL_ANNOTATION: ref}))
    )
    assert resp["allowed"] is False


def test_slow_registry_denied_within_budget(models: Models, tmp_path: Path) -> None:
    """SECURITY 23: a registry that accepts connections and never answers: deny in budget."""
    with silent_listener() as port:
        policy_dir = tmp_path / "p"
        policy_dir.mkdir()
        (policy_dir / "p.yaml").write_text(
            f"apiVersion: modelreg.dev/v1alpha1\nkind: ModelPolicy\nmetadata: {{name: slow}}\n"
            f"spec:\n  match: {{references: ['127.0.0.1:{port}/**']}}\n"
            f"  require: {{artifact: {{noPickle: true}}}}\n"
        )
        h = start_hook(tmp_path, policy_dir, EngineConfig(budget=1.5))
        try:
            start = time.monotonic()
            resp = h.validate(review(workload("Pod", pod_spec([f"127.0.0.1:{port}/m/x:v1"]))))
            elapsed = time.monotonic() - start
            assert resp["allowed"] is False
            assert "no decision within the 1.5s budget" in resp["status"]["message"]
            assert elapsed < 4.5  # well inside the API server's 10 s timeout
            metrics = h.http.get(h.server.url + "/metrics").text
            assert "modelreg_webhook_budget_exceeded_total" in metrics
        finally:
            h.http.close()
            h.server.stop()


def test_policy_change_invalidates_cached_decisions(models: Models, tmp_path: Path) -> None:
    """SECURITY 24: edit the policy on disk; the cached allow is not reused."""
    policy_dir = tmp_path / "p"
    policy_dir.mkdir()
    (policy_dir / models.key_file.name).write_bytes(models.key_file.read_bytes())
    path = policy_dir / "p.yaml"
    base = (
        "apiVersion: modelreg.dev/v1alpha1\nkind: ModelPolicy\nmetadata: {{name: p}}\n"
        "spec:\n  match: {{references: ['{host}/{repo}/**']}}\n  require:\n{req}"
    )
    loose = "    artifact: {maxSizeBytes: 100000000}\n"
    strict = "    artifact: {maxSizeBytes: 10}\n"
    path.write_text(base.format(host=models.host, repo=models.repo, req=loose))
    h = start_hook(tmp_path, policy_dir, reload_interval=0.1)
    try:
        doc = review(workload("Pod", pod_spec([models.signed])))
        assert h.validate(doc)["allowed"] is True
        assert len(h.engine.decisions) == 1
        path.write_text(base.format(host=models.host, repo=models.repo, req=strict))
        deadline = time.monotonic() + 10
        while h.engine.policies.policies[0].require.rules[0].max_bytes != 10:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "policy not reloaded"
            time.sleep(0.05)
        resp = h.validate(review(workload("Pod", pod_spec([models.signed]))))
        assert resp["allowed"] is False and "over 10" in resp["status"]["message"]
        # a broken edit keeps the strict policy in force
        path.write_text("apiVersion: modelreg.dev/v1alpha1\nkind: ModelPolicy\nspec: {\n")
        rejected = 'modelreg_webhook_policy_reloads_total{result="rejected"} 1'
        deadline = time.monotonic() + 10
        while rejected not in h.http.get(h.server.url + "/metrics").text:
            assert time.monotonic() < deadline, "broken policy edit never noticed"
            time.sleep(0.05)
        assert h.validate(review(workload("Pod", pod_spec([models.signed]))))["allowed"] is False
    finally:
        h.http.close()
        h.server.stop()


def test_health_ready_metrics(hook: Hook, models: Models) -> None:
    assert hook.http.get(hook.server.url + "/healthz").text == "ok"
    assert hook.http.get(hook.server.url + "/readyz").text.startswith("ready")
    doc = review(workload("Pod", pod_spec([models.signed])))
    hook.validate(doc)
    hook.validate(doc)  # second time from the cache
    text = hook.http.get(hook.server.url + "/metrics").text
    assert "# TYPE modelreg_webhook_decision_seconds histogram" in text
    assert (
        'modelreg_webhook_decisions_total{dry_run="false",endpoint="validate",result="allowed"}'
        in text
    )
    assert "modelreg_webhook_cache_hits_total" in text
    assert "modelreg_webhook_registry_errors_total" in text


def test_serving_certificate_reloads_without_restart(models: Models, tmp_path: Path) -> None:
    h = start_hook(tmp_path, models.policy_dir, reload_interval=0.1)
    try:
        assert h.http.get(h.server.url + "/healthz").status_code == 200
        old_ca = h.ca_file.read_bytes()
        fresh = certs.generate("modelreg-webhook", "test", extra_names=("127.0.0.1",))
        certs.write(fresh, h.cert_dir)  # key then cert, each an atomic rename
        new_ctx = ssl.create_default_context(cadata=fresh.ca_pem.decode())
        deadline = time.monotonic() + 10
        while True:
            try:
                with httpx.Client(verify=new_ctx) as c:
                    if c.get(h.server.url + "/healthz").status_code == 200:
                        break
            except httpx.ConnectError:
                pass
            assert time.monotonic() < deadline, "new certificate never served"
            time.sleep(0.1)
        old_ctx = ssl.create_default_context(cadata=old_ca.decode())
        with httpx.Client(verify=old_ctx) as c, pytest.raises(httpx.ConnectError):
            c.get(h.server.url + "/healthz")
    finally:
        h.http.close()
        h.server.stop()
