"""The Kubernetes admission webhook: only verified models run.

* :mod:`~modelreg.webhook.admission`: pure functions (parse a review, find model
  references in any workload kind, build the answer and the JSONPatch);
* :mod:`~modelreg.webhook.engine`: resolve, verify, evaluate, cache, within a budget;
* :mod:`~modelreg.webhook.server`: routes, admission queue, readiness, draining;
* :mod:`~modelreg.webhook.http`: the HTTP/1.1 server (httptools, uvloop, TLS);
* :mod:`~modelreg.webhook.breaker`: per-registry circuit breakers;
* :mod:`~modelreg.webhook.certs`: a CA and serving certificate for ``svc.ns.svc``.
"""

from modelreg.webhook.admission import (
    MODEL_ANNOTATION,
    AdmissionRequest,
    ModelRef,
    RefOutcome,
    ReviewError,
    build_patch,
    extract_references,
    parse_review,
    select_models,
    validation_response,
)
from modelreg.webhook.cache import TTLCache, decision_key
from modelreg.webhook.engine import Engine, EngineConfig

__all__ = [
    "MODEL_ANNOTATION",
    "AdmissionRequest",
    "Engine",
    "EngineConfig",
    "ModelRef",
    "RefOutcome",
    "ReviewError",
    "TTLCache",
    "build_patch",
    "decision_key",
    "extract_references",
    "parse_review",
    "select_models",
    "validation_response",
]
