"""Predicates modelreg builds: SLSA provenance v1, training lineage, model scan.

SLSA provenance v1 (``https://slsa.dev/provenance/v1``)
    ``buildDefinition`` and ``runDetails`` from the CI environment when there is
    one (GitHub Actions, GitLab CI), else from the local machine. Only named,
    non-secret variables are read: tokens and passwords never enter a predicate.

Training lineage (``https://modelreg.dev/attestations/training-lineage/v1``)
    Where a model comes from. Schema (JSON; every field optional unless marked)::

        {
          "baseModel":       {"name": str, "uri": str, "digest": {"sha256": hex}},
          "datasets":       [{"name": str (required), "uri": str,
                              "digest": {"sha256": hex, ...}, "split": str}],
          "hyperparameters": {str: str | number | bool | null | list | object},
          "evaluations":    [{"name": str (required), "dataset": str,
                              "metrics": {str: number} (required)}],
          "training":        {"framework": str, "frameworkVersion": str,
                              "startedOn": RFC 3339, "finishedOn": RFC 3339,
                              "hardware": str}
        }

    ``digest`` maps are in-toto DigestSets (algorithm -> lowercase hex). At
    least one of ``baseModel`` or ``datasets`` must be present.

Model scan (``https://modelreg.dev/attestations/model-scan/v1``)
    The unsafe-format findings of packaging (pickle-based files run code when
    loaded)::

        {
          "scanner":   {"uri": "https://modelreg.dev/scanner", "version": str},
          "scannedOn": RFC 3339,
          "result":    "passed" | "failed",
          "findings": [{"path": str, "digest": "sha256:<hex>", "format": str,
                        "severity": "high" | "info", "reason": str,
                        "imports": [str, ...]}]
        }

    ``result`` is ``failed`` when any finding has severity ``high``.
"""

from __future__ import annotations

import datetime as dt
import getpass
import platform
import re
import socket
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from modelreg._json import camel_fields
from modelreg._version import __version__
from modelreg.errors import InvalidInputError
from modelreg.settings import ci_environ

__all__ = [
    "MODEL_SCAN_PREDICATE",
    "SLSA_PROVENANCE_V1",
    "TRAINING_LINEAGE_PREDICATE",
    "ScanFinding",
    "model_scan",
    "slsa_provenance",
    "training_lineage",
    "validate_training_lineage",
]

SLSA_PROVENANCE_V1: Final = "https://slsa.dev/provenance/v1"
TRAINING_LINEAGE_PREDICATE: Final = "https://modelreg.dev/attestations/training-lineage/v1"
MODEL_SCAN_PREDICATE: Final = "https://modelreg.dev/attestations/model-scan/v1"

LOCAL_BUILD_TYPE: Final = "https://modelreg.dev/buildtypes/local/v1"
GITHUB_BUILD_TYPE: Final = "https://actions.github.io/buildtypes/workflow/v1"
GITLAB_BUILD_TYPE: Final = "https://modelreg.dev/buildtypes/gitlab-ci/v1"
SCANNER_URI: Final = "https://modelreg.dev/scanner"

_HEX_RE: Final = re.compile(r"^[0-9a-f]+$")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -------------------------------------------------------------- SLSA provenance


def _predicate(
    build_type: str,
    external: dict[str, Any],
    internal: dict[str, Any],
    dependencies: list[dict[str, Any]],
    builder: str,
    invocation: str,
    started: str,
    finished: str,
) -> dict[str, Any]:
    """The SLSA v1 provenance predicate every builder below fills in (keys in the order
    the specification lists them)."""
    return {
        "buildDefinition": {
            "buildType": build_type,
            "externalParameters": external,
            "internalParameters": internal,
            "resolvedDependencies": dependencies,
        },
        "runDetails": {
            "builder": {"id": builder},
            "metadata": {"invocationId": invocation, "startedOn": started, "finishedOn": finished},
        },
    }


def _git_source(repository: str, ref: str, commit: str) -> list[dict[str, Any]]:
    """The checked-out repository, the one resolved dependency of a CI build."""
    return [{"uri": f"git+{repository}@{ref}", "digest": {"gitCommit": commit}}]


def _github(env: Mapping[str, str], started: str, finished: str) -> dict[str, Any]:
    server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    repo = env["GITHUB_REPOSITORY"]
    workflow_ref = env.get("GITHUB_WORKFLOW_REF", "")  # owner/repo/.github/workflows/x.yml@ref
    path = workflow_ref.split("@", 1)[0]
    if path.startswith(repo + "/"):
        path = path[len(repo) + 1 :]
    ref = env.get("GITHUB_REF", "")
    hosted = env.get("RUNNER_ENVIRONMENT", "github-hosted")
    run = f"{server}/{repo}/actions/runs/{env.get('GITHUB_RUN_ID', '')}"
    return _predicate(
        GITHUB_BUILD_TYPE,
        {"workflow": {"ref": ref, "repository": f"{server}/{repo}", "path": path}},
        {
            "github": {
                "event_name": env.get("GITHUB_EVENT_NAME", ""),
                "repository_id": env.get("GITHUB_REPOSITORY_ID", ""),
                "repository_owner_id": env.get("GITHUB_REPOSITORY_OWNER_ID", ""),
                "runner_environment": hosted,
            }
        },
        _git_source(f"{server}/{repo}", ref, env.get("GITHUB_SHA", "")),
        f"https://github.com/actions/runner/{hosted}",
        f"{run}/attempts/{env.get('GITHUB_RUN_ATTEMPT', '1')}",
        started,
        finished,
    )


def _gitlab(env: Mapping[str, str], started: str, finished: str) -> dict[str, Any]:
    server = env.get("CI_SERVER_URL", "https://gitlab.com").rstrip("/")
    project = env.get("CI_PROJECT_PATH", "")
    project_url = env.get("CI_PROJECT_URL", f"{server}/{project}")
    job_url = env.get("CI_JOB_URL", f"{project_url}/-/jobs/{env.get('CI_JOB_ID', '')}")
    ref = env.get("CI_COMMIT_REF_NAME", "")
    return _predicate(
        GITLAB_BUILD_TYPE,
        {
            "source": project_url,
            "ref": ref,
            "entryPoint": env.get("CI_JOB_NAME", ""),
            "pipelineSource": env.get("CI_PIPELINE_SOURCE", ""),
        },
        {
            "gitlab": {
                "project_id": env.get("CI_PROJECT_ID", ""),
                "runner_version": env.get("CI_RUNNER_VERSION", ""),
                "runner_description": env.get("CI_RUNNER_DESCRIPTION", ""),
            }
        },
        _git_source(project_url, ref, env.get("CI_COMMIT_SHA", "")),
        f"{server}/{project}/-/runners/{env.get('CI_RUNNER_ID', '')}",
        job_url,
        env.get("CI_JOB_STARTED_AT", started),
        finished,
    )


def _local(started: str, finished: str, source: str | None) -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    host = socket.gethostname()
    external: dict[str, Any] = {}
    if source:
        external["source"] = source
    return _predicate(
        LOCAL_BUILD_TYPE,
        external,
        {
            "tool": f"modelreg/{__version__}",
            "platform": f"{platform.system().lower()}/{platform.machine()}",
            "python": platform.python_version(),
        },
        [],
        f"https://modelreg.dev/builders/local/{user}@{host}",
        f"urn:uuid:{uuid.uuid4()}",
        started,
        finished,
    )


def slsa_provenance(
    *,
    environ: Mapping[str, str] | None = None,
    started_on: str | None = None,
    finished_on: str | None = None,
    source: str | None = None,
    extra_dependencies: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A SLSA provenance v1 predicate for "this model was published here, now"."""
    env = ci_environ(environ)
    finished = finished_on or _now()
    started = started_on or finished
    if env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_REPOSITORY"):
        predicate = _github(env, started, finished)
    elif env.get("GITLAB_CI") == "true" and env.get("CI_PROJECT_PATH"):
        predicate = _gitlab(env, started, finished)
    else:
        predicate = _local(started, finished, source)
    deps = predicate["buildDefinition"]["resolvedDependencies"]
    deps.extend(dict(d) for d in extra_dependencies)
    return predicate


# --------------------------------------------------------------- training lineage


def _check_digest_set(value: Any, where: str) -> None:
    if not isinstance(value, dict) or not value:
        raise InvalidInputError(f"{where} must be a digest map like {{'sha256': '<hex>'}}")
    for alg, hex_value in value.items():
        ok = isinstance(alg, str) and isinstance(hex_value, str) and _HEX_RE.match(hex_value)
        if not ok:
            raise InvalidInputError(f"{where}: {alg!r} must map to lowercase hex")
        if alg == "sha256" and len(hex_value) != 64:
            raise InvalidInputError(f"{where}: a sha256 digest is 64 hex characters")


def _opt_str(obj: Mapping[str, Any], key: str, where: str) -> None:
    if key in obj and not isinstance(obj[key], str):
        raise InvalidInputError(f"{where}.{key} must be a string")


def _named_objects(
    predicate: Mapping[str, Any], key: str, where: str
) -> Iterator[tuple[Mapping[str, Any], str]]:
    """``predicate[key]``, a list (absent: empty) of objects each with a string ``name``:
    each with its path for messages (``training lineage.datasets[0]``), checked as it is
    reached, so the first bad one is what is reported."""
    items = predicate.get(key, [])
    if not isinstance(items, list):
        raise InvalidInputError(f"{where}.{key} must be a list")
    for i, item in enumerate(items):
        w = f"{where}.{key}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInputError(f"{w} must be an object with a name")
        yield item, w


def validate_training_lineage(predicate: Any) -> dict[str, Any]:
    """Check a training-lineage predicate against the schema in the module docstring."""
    where = "training lineage"
    if not isinstance(predicate, dict):
        raise InvalidInputError(f"{where} must be a JSON object")
    known = {"baseModel", "datasets", "hyperparameters", "evaluations", "training"}
    unknown = set(predicate) - known
    if unknown:
        raise InvalidInputError(
            f"{where} has unknown fields {sorted(unknown)}", hint=f"allowed: {sorted(known)}"
        )
    if "baseModel" not in predicate and not predicate.get("datasets"):
        raise InvalidInputError(f"{where} needs a baseModel or at least one dataset")
    base = predicate.get("baseModel")
    if base is not None:
        if not isinstance(base, dict):
            raise InvalidInputError(f"{where}.baseModel must be an object")
        for key in ("name", "uri"):
            _opt_str(base, key, f"{where}.baseModel")
        if "digest" in base:
            _check_digest_set(base["digest"], f"{where}.baseModel.digest")
        if not base.get("digest") and not base.get("uri"):
            raise InvalidInputError(f"{where}.baseModel needs a digest or a uri")
    for ds, w in _named_objects(predicate, "datasets", where):
        for key in ("uri", "split"):
            _opt_str(ds, key, w)
        if "digest" in ds:
            _check_digest_set(ds["digest"], f"{w}.digest")
    hyper = predicate.get("hyperparameters", {})
    if not isinstance(hyper, dict):
        raise InvalidInputError(f"{where}.hyperparameters must be an object")
    for ev, w in _named_objects(predicate, "evaluations", where):
        _opt_str(ev, "dataset", w)
        metrics = ev.get("metrics")
        if not isinstance(metrics, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
            for k, v in metrics.items()
        ):
            raise InvalidInputError(f"{w}.metrics must map names to numbers")
    training = predicate.get("training", {})
    if not isinstance(training, dict):
        raise InvalidInputError(f"{where}.training must be an object")
    for key in ("framework", "frameworkVersion", "startedOn", "finishedOn", "hardware"):
        _opt_str(training, key, f"{where}.training")
    return predicate


def training_lineage(
    *,
    base_model: Mapping[str, Any] | None = None,
    datasets: Sequence[Mapping[str, Any]] = (),
    hyperparameters: Mapping[str, Any] | None = None,
    evaluations: Sequence[Mapping[str, Any]] = (),
    training: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build and validate a training-lineage predicate."""
    predicate: dict[str, Any] = {}
    if base_model is not None:
        predicate["baseModel"] = dict(base_model)
    if datasets:
        predicate["datasets"] = [dict(d) for d in datasets]
    if hyperparameters:
        predicate["hyperparameters"] = dict(hyperparameters)
    if evaluations:
        predicate["evaluations"] = [dict(e) for e in evaluations]
    if training:
        predicate["training"] = dict(training)
    return validate_training_lineage(predicate)


# ------------------------------------------------------------------- model scan


@dataclass(frozen=True)
class ScanFinding:
    path: str
    digest: str
    format: str
    severity: str
    reason: str
    imports: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        out = camel_fields(self, "path", "digest", "format", "severity", "reason")
        if self.imports:
            out["imports"] = list(self.imports)
        return out


def model_scan(findings: Sequence[ScanFinding], *, scanned_on: str | None = None) -> dict[str, Any]:
    """A model-scan predicate from findings (see the module docstring)."""
    failed = any(f.severity == "high" for f in findings)
    return {
        "scanner": {"uri": SCANNER_URI, "version": __version__},
        "scannedOn": scanned_on or _now(),
        "result": "failed" if failed else "passed",
        "findings": [f.to_dict() for f in findings],
    }
