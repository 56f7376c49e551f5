"""Pure admission logic: parsing, extraction from every workload kind, responses, JSONPatch."""

from __future__ import annotations

import base64
import json

import pytest

from modelreg.policy import Decision, PolicyResult, RuleResult
from modelreg.webhook.admission import (
    MODEL_ANNOTATION,
    RefOutcome,
    ReviewError,
    build_patch,
    extract_references,
    json_pointer,
    mutation_response,
    normalize_image,
    parse_review,
    review_response,
    select_models,
    validation_response,
)
from tests.unit.webhook.reviews import pod_spec, review, workload

REG = "reg.example.com"
MODEL = f"{REG}/models/llm:v1"
DIGEST = "sha256:" + "a" * 64


def parsed(doc: dict) -> object:  # type: ignore[type-arg]
    return parse_review(json.dumps(doc).encode())


def _v1_body(request: object = None, *, kind: str = "AdmissionReview") -> bytes:
    """A v1 document of ``kind``, with ``request`` when one is given."""
    doc: dict[str, object] = {"apiVersion": "admission.k8s.io/v1", "kind": kind}
    if request is not None:
        doc["request"] = request
    return json.dumps(doc).encode()


def _pod_create(**fields: object) -> dict[str, object]:
    """A Pod CREATE request with ``fields`` added (the part a malformed case spoils)."""
    return {"uid": "u", "kind": {"kind": "Pod"}, "operation": "CREATE", **fields}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
        (
            json.dumps(
                {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}
            ).encode(),
            "expected apiVersion admission.k8s.io/v1",
        ),
        (_v1_body(kind="Pod"), "kind AdmissionReview"),
        (_v1_body(), "no request"),
        (_v1_body({"uid": ""}), "uid"),
        (_v1_body({"uid": "u", "kind": "Pod"}), "request.kind.kind"),
        (_v1_body(_pod_create(object=[])), "request.object"),
        (_v1_body(_pod_create(dryRun="yes")), "dryRun"),
    ],
)
def test_malformed_reviews_are_400(body: bytes, fragment: str) -> None:
    with pytest.raises(ReviewError) as info:
        parse_review(body)
    assert info.value.status == 400
    assert fragment in info.value.message


def test_parse_review_fields() -> None:
    doc = review(workload("Deployment", pod_spec([MODEL])), dry_run=True, uid="u-1")
    req = parse_review(json.dumps(doc).encode())
    assert (req.uid, req.kind, req.group, req.operation, req.namespace, req.name, req.dry_run) == (
        "u-1",
        "Deployment",
        "apps",
        "CREATE",
        "ml",
        "llm",
        True,
    )
    assert req.user == "kubernetes-admin"


KINDS_PATHS = {
    "Pod": "spec",
    "Deployment": "spec.template.spec",
    "StatefulSet": "spec.template.spec",
    "DaemonSet": "spec.template.spec",
    "ReplicaSet": "spec.template.spec",
    "Job": "spec.template.spec",
    "CronJob": "spec.jobTemplate.spec.template.spec",
}


@pytest.mark.parametrize("kind", sorted(KINDS_PATHS))
def test_every_kind_every_place(kind: str) -> None:
    spec = pod_spec(
        ["nginx:1.27", f"{REG}/models/server:v2"],
        init=[f"{REG}/models/fetch:v1"],
        ephemeral=[f"{REG}/tools/debug:v1"],
        volumes=[MODEL, f"{REG}/models/tokenizer@{DIGEST}"],
    )
    obj = workload(kind, spec, template_annotations={MODEL_ANNOTATION: f"{REG}/models/extra:v3"})
    refs = extract_references(parsed(review(obj)))  # type: ignore[arg-type]
    base = KINDS_PATHS[kind]
    fields = {r.field: (r.origin, r.raw) for r in refs}
    assert fields[f"{base}.containers[0].image"] == ("container", "nginx:1.27")
    assert fields[f"{base}.containers[1].image"] == ("container", f"{REG}/models/server:v2")
    assert fields[f"{base}.initContainers[0].image"] == ("initContainer", f"{REG}/models/fetch:v1")
    assert fields[f"{base}.ephemeralContainers[0].image"] == (
        "ephemeralContainer",
        f"{REG}/tools/debug:v1",
    )
    assert fields[f"{base}.volumes[0].image.reference"] == ("imageVolume", MODEL)
    assert fields[f"{base}.volumes[1].image.reference"] == (
        "imageVolume",
        f"{REG}/models/tokenizer@{DIGEST}",
    )
    if kind != "Pod":
        meta = base.rsplit(".spec", 1)[0] + ".metadata"
        assert fields[f"{meta}.annotations[{MODEL_ANNOTATION}]"] == (
            "annotation",
            f"{REG}/models/extra:v3",
        )
    pointers = {r.pointer for r in refs}
    assert "/" + base.replace(".", "/") + "/volumes/0/image/reference" in pointers
    nginx = next(r for r in refs if r.raw == "nginx:1.27")
    assert nginx.reference is not None and nginx.name == "docker.io/library/nginx"


def test_pod_annotation_with_several_models() -> None:
    obj = workload(
        "Pod",
        pod_spec(["busybox"]),
        annotations={MODEL_ANNOTATION: f"{REG}/a/b:v1, {REG}/c/d@{DIGEST}  {REG}/e/f"},
    )
    refs = [r for r in extract_references(parsed(review(obj))) if r.origin == "annotation"]  # type: ignore[arg-type]
    assert [r.raw for r in refs] == [f"{REG}/a/b:v1", f"{REG}/c/d@{DIGEST}", f"{REG}/e/f"]
    assert [r.index for r in refs] == [0, 1, 2]
    assert refs[0].pointer == "/metadata/annotations/modelreg.dev~1model"
    assert refs[1].pinned and not refs[0].pinned


def test_unparseable_references_are_kept_to_be_denied() -> None:
    obj = workload(
        "Pod",
        pod_spec(["Reg.Example.com/UPPER/case:v1"]),
        annotations={MODEL_ANNOTATION: "oci:/tmp/layout:v1"},
    )
    refs = extract_references(parsed(review(obj)))  # type: ignore[arg-type]
    assert all(r.reference is None and r.error for r in refs)
    models = select_models(refs, lambda name: False)
    assert len(models) == 2  # not governed, but unparseable: checked (and denied)


def test_select_models_keeps_governed_images_and_all_annotations() -> None:
    obj = workload(
        "Pod",
        pod_spec(["nginx", f"{REG}/models/x:v1"], volumes=["docker.io/library/busybox"]),
        annotations={MODEL_ANNOTATION: "other.example.com/m/n:v1"},
    )
    refs = extract_references(parsed(review(obj)))  # type: ignore[arg-type]
    models = select_models(refs, lambda name: name.startswith(f"{REG}/models/"))
    assert [m.raw for m in models] == ["other.example.com/m/n:v1", f"{REG}/models/x:v1"]


def test_unknown_kind_and_missing_object() -> None:
    doc = review(workload("Pod", pod_spec([MODEL])))
    doc["request"]["kind"]["kind"] = "ConfigMap"
    assert extract_references(parsed(doc)) == []  # type: ignore[arg-type]
    doc = review(workload("Pod", pod_spec([MODEL])), operation="DELETE")
    doc["request"]["object"] = None
    assert extract_references(parsed(doc)) == []  # type: ignore[arg-type]


def test_normalize_image() -> None:
    assert normalize_image("nginx") == "docker.io/library/nginx"
    assert normalize_image("me/app:1") == "docker.io/me/app:1"
    assert normalize_image("localhost/x") == "localhost/x"
    assert normalize_image("127.0.0.1:5000/x") == "127.0.0.1:5000/x"
    assert normalize_image("reg.io/a/b") == "reg.io/a/b"


def test_json_pointer_escapes() -> None:
    assert (
        json_pointer("metadata", "annotations", "modelreg.dev/model")
        == "/metadata/annotations/modelreg.dev~1model"
    )
    assert json_pointer("a~b", 0) == "/a~0b/0"


def decision(allowed: bool, *, warn: bool = False) -> Decision:
    rule = RuleResult(
        "signatures",
        "passed" if allowed else "failed",
        "ok" if allowed else "no signature from release-key",
        12,
    )
    return Decision(
        "r",
        "n",
        DIGEST,
        (PolicyResult("p", "p.yaml", "sha256:x", "warn" if warn else "enforce", (rule,)),),
    )


def refs_of(obj: dict) -> list:  # type: ignore[type-arg]
    return extract_references(parsed(review(obj)))  # type: ignore[arg-type]


def test_deny_message_lists_every_failing_reference_and_rule() -> None:
    a, b, c = refs_of(
        workload("Pod", pod_spec([f"{REG}/m/a:v1", f"{REG}/m/b:v1", f"{REG}/m/c:v1"]))
    )
    outcomes = [
        RefOutcome(a, decision=decision(False), digest=DIGEST),
        RefOutcome(b, decision=decision(True), digest=DIGEST),
        RefOutcome(c, error="resolve could not run: connection refused"),
    ]
    resp = validation_response("uid-1", outcomes)
    assert resp["uid"] == "uid-1" and resp["allowed"] is False
    msg = resp["status"]["message"]
    assert resp["status"]["code"] == 403
    assert "denied 2 of 3" in msg
    assert f"spec.containers[0].image {REG}/m/a:v1 ({DIGEST})" in msg
    assert "policy p: signatures: no signature from release-key" in msg
    assert "spec.containers[2].image" in msg and "connection refused" in msg
    assert "containers[1]" not in msg


def test_warn_mode_answers_warnings_and_allows() -> None:
    (a,) = refs_of(workload("Pod", pod_spec([f"{REG}/m/a:v1"])))
    resp = validation_response(
        "u", [RefOutcome(a, decision=decision(False, warn=True), digest=DIGEST)]
    )
    assert resp["allowed"] is True and "status" not in resp
    assert resp["warnings"] == [
        f"modelreg: spec.containers[0].image {REG}/m/a:v1 ({DIGEST}): policy p: signatures: "
        "no signature from release-key"
    ]


def test_unmatched_annotation_models() -> None:
    obj = workload("Pod", pod_spec(["busybox"]), annotations={MODEL_ANNOTATION: f"{REG}/x/y:v1"})
    (ref,) = [r for r in refs_of(obj) if r.origin == "annotation"]
    assert validation_response("u", [RefOutcome(ref, unmatched="deny")])["allowed"] is False
    warned = validation_response("u", [RefOutcome(ref, unmatched="warn")])
    assert warned["allowed"] is True and "no policy applies" in warned["warnings"][0]
    assert validation_response("u", [RefOutcome(ref, unmatched="allow")])["allowed"] is True


def test_patch_pins_tags_in_place() -> None:
    obj = workload(
        "Deployment",
        pod_spec([f"{REG}/m/a:v1", f"{REG}/m/b@{DIGEST}", "nginx"], volumes=[f"{REG}/m/vol"]),
        template_annotations={MODEL_ANNOTATION: f"{REG}/m/x:v1,{REG}/m/y@{DIGEST}"},
    )
    refs = refs_of(obj)
    req = parsed(review(obj))
    d2 = "sha256:" + "2" * 64
    outcomes = [RefOutcome(r, digest=d2) for r in refs if r.raw != "nginx"]
    ops = build_patch(outcomes, req)  # type: ignore[arg-type]
    assert {
        "op": "replace",
        "path": "/spec/template/spec/containers/0/image",
        "value": f"{REG}/m/a:v1@{d2}",
    } in ops
    assert {
        "op": "replace",
        "path": "/spec/template/spec/volumes/0/image/reference",
        "value": f"{REG}/m/vol@{d2}",
    } in ops
    assert {
        "op": "replace",
        "path": "/spec/template/metadata/annotations/modelreg.dev~1model",
        "value": f"{REG}/m/x:v1@{d2},{REG}/m/y@{DIGEST}",
    } in ops
    assert not any("containers/1" in op["path"] or "containers/2" in op["path"] for op in ops)
    resp = mutation_response("u", ops)
    assert resp["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(resp["patch"])) == ops
    # applying the patch gives a document whose references are all pinned
    doc = json.loads(json.dumps(obj))
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node = doc
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[parts[-1]] = op["value"]
    repinned = parsed(review(doc))
    for r in extract_references(repinned):  # type: ignore[arg-type]
        if r.raw != "nginx":
            assert r.pinned, r


def test_no_patch_when_nothing_to_pin() -> None:
    assert "patch" not in mutation_response("u", [])


def test_review_envelope() -> None:
    env = review_response({"uid": "u", "allowed": True})
    assert env == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "u", "allowed": True},
    }


def test_legacy_ephemeral_containers_kind() -> None:
    doc = review(
        workload("Pod", pod_spec([MODEL])), operation="UPDATE", sub_resource="ephemeralcontainers"
    )
    doc["request"]["kind"] = {"group": "", "version": "v1", "kind": "EphemeralContainers"}
    doc["request"]["object"] = {
        "apiVersion": "v1",
        "kind": "EphemeralContainers",
        "metadata": {"name": "llm", "namespace": "ml"},
        "ephemeralContainers": [{"name": "debug", "image": f"{REG}/tools/debug:v1"}],
    }
    (ref,) = extract_references(parsed(doc))  # type: ignore[arg-type]
    assert (ref.origin, ref.field, ref.pointer) == (
        "ephemeralContainer",
        "ephemeralContainers[0].image",
        "/ephemeralContainers/0/image",
    )
