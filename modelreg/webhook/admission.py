"""Pure admission logic: parse an AdmissionReview, find the model references in a
workload, build the response (allow, deny with every reason, warnings, JSONPatch).

No I/O here: :mod:`modelreg.webhook.engine` resolves and verifies, this module only
reads and writes documents. Nothing in the workload can loosen a policy: annotations
and labels are never read for options; the one documented annotation
(:data:`MODEL_ANNOTATION`) can only *add* references to check.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from modelreg.errors import InvalidReferenceError
from modelreg.oci.canonical import Hostless, canonical_reference
from modelreg.oci.reference import Reference
from modelreg.policy import Decision

__all__ = [
    "ADMISSION_API_VERSION",
    "MAX_MESSAGE_CHARS",
    "MAX_REFERENCES",
    "MODEL_ANNOTATION",
    "POD_SPEC_PATHS",
    "AdmissionRequest",
    "ModelRef",
    "RefOutcome",
    "ReviewError",
    "build_patch",
    "deny_all",
    "extract_references",
    "json_pointer",
    "mutation_response",
    "normalize_image",
    "parse_review",
    "review_response",
    "select_models",
    "validation_response",
]

ADMISSION_API_VERSION: Final = "admission.k8s.io/v1"
MODEL_ANNOTATION: Final = "modelreg.dev/model"
"""Pod (or pod template) annotation naming model references, comma or space separated."""
MAX_REFERENCES: Final = 512
MAX_MESSAGE_CHARS: Final = 12_000
MAX_WARNING_CHARS: Final = 256
"""The API server may truncate longer warnings."""
MAX_WARNINGS: Final = 32

POD_SPEC_PATHS: Final[Mapping[str, tuple[str, ...]]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "PodTemplate": ("template", "spec"),
    # Kubernetes before 1.22 sent the pods/ephemeralcontainers subresource as this kind,
    # with ``ephemeralContainers`` at the top of the object
    "EphemeralContainers": (),
}
"""Where each workload kind keeps its pod spec."""

Origin = Literal["container", "initContainer", "ephemeralContainer", "imageVolume", "annotation"]

_CONTAINER_LISTS: Final = (
    ("containers", "container"),
    ("initContainers", "initContainer"),
    ("ephemeralContainers", "ephemeralContainer"),
)


class ReviewError(Exception):
    """The request is not an AdmissionReview we can answer: a 4xx, never a crash."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    uid: str
    kind: str
    group: str
    operation: str
    namespace: str
    name: str
    sub_resource: str
    dry_run: bool
    object: Mapping[str, Any] | None
    user: str = ""


def parse_review(body: bytes) -> AdmissionRequest:
    """Validate an AdmissionReview v1 body. Raises :class:`ReviewError` (400)."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReviewError(400, f"body is not JSON: {str(exc)[:200]}") from exc
    except RecursionError as exc:
        raise ReviewError(400, "body nests too deeply to be an AdmissionReview") from exc
    if not isinstance(doc, dict):
        raise ReviewError(400, "AdmissionReview must be a JSON object")
    if doc.get("apiVersion") != ADMISSION_API_VERSION or doc.get("kind") != "AdmissionReview":
        raise ReviewError(
            400,
            f"expected apiVersion {ADMISSION_API_VERSION} kind AdmissionReview, got "
            f"{str(doc.get('apiVersion'))[:60]!r} {str(doc.get('kind'))[:60]!r} "
            "(set admissionReviewVersions: [v1] in the webhook configuration)",
        )
    req = doc.get("request")
    if not isinstance(req, dict):
        raise ReviewError(400, "AdmissionReview has no request object")
    uid = req.get("uid")
    if not isinstance(uid, str) or not uid or len(uid) > 256:
        raise ReviewError(400, "request.uid must be a non-empty string")
    kind = req.get("kind")
    if not isinstance(kind, dict) or not isinstance(kind.get("kind"), str):
        raise ReviewError(400, "request.kind.kind must be a string")
    operation = req.get("operation")
    if not isinstance(operation, str):
        raise ReviewError(400, "request.operation must be a string")
    obj = req.get("object")
    if obj is not None and not isinstance(obj, dict):
        raise ReviewError(400, "request.object must be an object or null")
    dry_run = req.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise ReviewError(400, "request.dryRun must be a boolean")
    user = req.get("userInfo")
    username = user.get("username", "") if isinstance(user, dict) else ""

    def text(key: str) -> str:
        value = req.get(key)
        return value if isinstance(value, str) else ""

    return AdmissionRequest(
        uid=uid,
        kind=kind["kind"],
        group=str(kind.get("group") or ""),
        operation=operation,
        namespace=text("namespace"),
        name=text("name"),
        sub_resource=text("subResource"),
        dry_run=dry_run,
        object=obj,
        user=username if isinstance(username, str) else "",
    )


# ---------------------------------------------------------------- references
@dataclass(frozen=True, slots=True)
class ModelRef:
    """One reference found in a workload, and where (for messages and patches)."""

    origin: Origin
    field: str
    """Human path, e.g. ``spec.template.spec.containers[0].image``."""
    pointer: str
    """JSON pointer of the value to patch, e.g. ``/spec/template/spec/containers/0/image``."""
    raw: str
    """The reference as written in the workload."""
    reference: Reference | None
    """The canonical reference (:mod:`modelreg.oci.canonical`, kubelet semantics): what
    policies are matched on and what is resolved; None when it cannot be canonicalised."""
    error: str | None = None
    index: int = 0
    """Position inside a multi-reference annotation value."""

    @property
    def name(self) -> str:
        return self.reference.name if self.reference is not None else self.raw

    @property
    def pinned(self) -> bool:
        return self.reference is not None and self.reference.digest is not None


def normalize_image(image: str) -> str:
    """The canonical spelling of a Pod image, as the kubelet resolves it
    (``nginx`` -> ``docker.io/library/nginx``, ``Index.Docker.io/me/x`` -> ``docker.io/me/x``).
    Raises InvalidReferenceError when it cannot be canonicalised."""
    return str(canonical_reference(image, hostless="docker.io"))


@functools.lru_cache(maxsize=4096)
def _parse(raw: str, hostless: Hostless) -> tuple[Reference | None, str | None]:
    """Canonicalise a workload reference once, before any policy sees it; memoised (the
    same images recur in every review; References are frozen). One that cannot be
    canonicalised gets the reason and is denied.

    Images and image volumes are read as the kubelet reads them (``hostless="docker.io"``:
    no registry host means Docker Hub). The model annotation is modelreg's own grammar,
    where no host means the local store, which a cluster does not have: refused."""
    if raw.startswith("oci:"):
        return None, "local layout references cannot be used by a cluster"
    try:
        ref = canonical_reference(raw, hostless=hostless)
    except InvalidReferenceError as exc:
        return None, exc.message
    if ref.kind != "registry":
        return None, "a model reference in a workload must name a registry"
    return ref, None


def json_pointer(*parts: str | int) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _get(obj: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _annotation_refs(meta: Any, base: Sequence[str]) -> Iterator[ModelRef]:
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    if not isinstance(annotations, Mapping):
        return
    value = annotations.get(MODEL_ANNOTATION)
    if value is None:
        return
    human = ".".join(base) + f".annotations[{MODEL_ANNOTATION}]"
    pointer = json_pointer(*base, "annotations", MODEL_ANNOTATION)
    if not isinstance(value, str):
        yield ModelRef(
            "annotation", human, pointer, str(value), None, "annotation value must be a string"
        )
        return
    items = [x for x in value.replace(",", " ").split() if x]
    if not items:
        yield ModelRef("annotation", human, pointer, value, None, "annotation names no reference")
    for i, raw in enumerate(items):
        ref, err = _parse(raw, "store")
        yield ModelRef("annotation", human, pointer, raw, ref, err, index=i)


def _pod_spec_refs(spec: Any, base: Sequence[str]) -> Iterator[ModelRef]:
    if not isinstance(spec, Mapping):
        return
    dotted = ".".join(base)
    prefix = f"{dotted}." if dotted else ""
    for key, origin in _CONTAINER_LISTS:
        containers = spec.get(key)
        if not isinstance(containers, list):
            continue
        for i, container in enumerate(containers):
            image = container.get("image") if isinstance(container, Mapping) else None
            if not isinstance(image, str) or not image:
                continue
            ref, err = _parse(image, "docker.io")
            yield ModelRef(
                origin,  # type: ignore[arg-type]
                f"{prefix}{key}[{i}].image",
                json_pointer(*base, key, i, "image"),
                image,
                ref,
                err,
            )
    volumes = spec.get("volumes")
    if isinstance(volumes, list):
        for i, volume in enumerate(volumes):
            source = volume.get("image") if isinstance(volume, Mapping) else None
            reference = source.get("reference") if isinstance(source, Mapping) else None
            if not isinstance(reference, str) or not reference:
                continue
            ref, err = _parse(reference, "docker.io")
            yield ModelRef(
                "imageVolume",
                f"{prefix}volumes[{i}].image.reference",
                json_pointer(*base, "volumes", i, "image", "reference"),
                reference,
                ref,
                err,
            )


def extract_references(request: AdmissionRequest) -> list[ModelRef]:
    """Every image, image volume and model annotation of the workload, in document order.

    Which of them are *models* is for the policies to say (see :func:`select_models`);
    this function only finds them. Unknown kinds give no reference.
    """
    obj = request.object
    path = POD_SPEC_PATHS.get(request.kind)
    if obj is None or path is None:
        return []
    refs: list[ModelRef] = []
    refs.extend(_annotation_refs(obj.get("metadata"), ("metadata",)))
    template_meta = (*path[:-1], "metadata")
    if path and template_meta != ("metadata",):
        refs.extend(_annotation_refs(_get(obj, template_meta), template_meta))
    refs.extend(_pod_spec_refs(_get(obj, path), path))
    return refs


def select_models(refs: Sequence[ModelRef], is_governed: Callable[[str], bool]) -> list[ModelRef]:
    """The references to check: every annotation reference (it names a model), and the
    images and image volumes that some policy matches. References that do not parse are
    kept (they will be denied: the kubelet would not run them either)."""
    out = []
    for ref in refs:
        if ref.origin == "annotation" or ref.reference is None or is_governed(ref.name):
            out.append(ref)
    return out


# ----------------------------------------------------------------- responses
@dataclass(frozen=True, slots=True)
class RefOutcome:
    """What the engine concluded about one reference."""

    ref: ModelRef
    decision: Decision | None = None
    error: str | None = None
    """Why no decision could be made (fail closed: denies)."""
    digest: str | None = None
    """What the tag resolved to (for pinning)."""
    cached: bool = False
    unmatched: Literal["deny", "allow", "warn"] | None = None
    """Set when no policy applies to the reference: what the webhook's no-match setting
    for its origin (annotation model, or image) says to do."""

    @property
    def allowed(self) -> bool:
        if self.error is not None:
            return False
        if self.unmatched is not None:
            return self.unmatched != "deny"
        return self.decision is not None and self.decision.allowed

    def _what(self) -> str:
        if self.ref.origin == "annotation":
            return "model reference"
        canonical = str(self.ref.reference) if self.ref.reference is not None else ""
        shown = f" ({canonical})" if canonical and canonical != self.ref.raw else ""
        return f"image{shown}"

    def label(self) -> str:
        where = f"{self.ref.field} {self.ref.raw}"
        return (
            f"{where} ({self.digest})" if self.digest and self.digest not in self.ref.raw else where
        )

    def problems(self) -> list[str]:
        if self.error is not None:
            return [f"could not decide (denied, fail closed): {self.error}"]
        if self.unmatched == "deny":
            return [f"no policy applies to this {self._what()} (nothing vouches for it)"]
        if self.decision is None:
            return ["no decision"]
        return self.decision.problems

    def warnings(self) -> list[str]:
        out = []
        if self.unmatched == "warn":
            out.append(f"no policy applies to this {self._what()}")
        if self.decision is not None:
            out.extend(self.decision.warnings)
        return out


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validation_response(uid: str, outcomes: Sequence[RefOutcome]) -> dict[str, Any]:
    """The ``response`` of a validating review: deny if any reference is not allowed,
    listing every failing reference and rule; warn-mode findings go to ``warnings``."""
    denied = [o for o in outcomes if not o.allowed]
    warnings = [
        _truncate(f"modelreg: {o.label()}: {w}", MAX_WARNING_CHARS)
        for o in outcomes
        for w in o.warnings()
    ][:MAX_WARNINGS]
    response: dict[str, Any] = {"uid": uid, "allowed": not denied}
    if denied:
        lines = [f"modelreg denied {len(denied)} of {len(outcomes)} model reference(s):"]
        for o in denied:
            lines.append(f"- {o.label()}:")
            lines.extend(f"    {p}" for p in o.problems())
        response["status"] = {
            "code": 403,
            "reason": "Forbidden",
            "message": _truncate("\n".join(lines), MAX_MESSAGE_CHARS),
        }
    if warnings:
        response["warnings"] = warnings
    return response


def build_patch(outcomes: Sequence[RefOutcome], request: AdmissionRequest) -> list[dict[str, Any]]:
    """JSONPatch pinning every resolved tag to ``tag@digest`` (same spelling + digest).

    Annotation values are rewritten whole with each of their references pinned.
    """
    ops: list[dict[str, Any]] = []
    by_annotation: dict[str, list[RefOutcome]] = {}
    for o in outcomes:
        ref = o.ref
        if ref.origin == "annotation":
            by_annotation.setdefault(ref.pointer, []).append(o)
            continue
        if ref.reference is None or ref.pinned or o.digest is None:
            continue
        ops.append({"op": "replace", "path": ref.pointer, "value": f"{ref.raw}@{o.digest}"})
    for pointer, items in by_annotation.items():
        changed = False
        values = []
        for o in sorted(items, key=lambda x: x.ref.index):
            if o.ref.reference is not None and not o.ref.pinned and o.digest is not None:
                values.append(f"{o.ref.raw}@{o.digest}")
                changed = True
            else:
                values.append(o.ref.raw)
        if changed:
            ops.append({"op": "replace", "path": pointer, "value": ",".join(values)})
    return ops


def mutation_response(
    uid: str, ops: Sequence[Mapping[str, Any]], warnings: Sequence[str] = ()
) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if ops:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(list(ops)).encode()).decode()
    if warnings:
        response["warnings"] = [_truncate(w, MAX_WARNING_CHARS) for w in warnings][:MAX_WARNINGS]
    return response


def review_response(response: Mapping[str, Any]) -> dict[str, Any]:
    """Wrap a ``response`` in the AdmissionReview envelope the API server expects."""
    return {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "AdmissionReview",
        "response": dict(response),
    }


def deny_all(uid: str, refs: Sequence[ModelRef], reason: str) -> dict[str, Any]:
    """Fail closed: deny with ``reason`` (used when no decision was reached in time)."""
    return validation_response(uid, [RefOutcome(ref=r, error=reason) for r in refs])
