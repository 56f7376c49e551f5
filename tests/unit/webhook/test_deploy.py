"""The Kubernetes manifests in deploy/ say what deploy/README.md promises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).parents[3] / "deploy"


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def test_webhook_configurations() -> None:
    configs = docs("webhooks.yaml")
    assert {c["kind"] for c in configs} == {
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    }
    for config in configs:
        (hook,) = config["webhooks"]
        assert hook["failurePolicy"] == "Fail"
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert 1 <= hook["timeoutSeconds"] <= 30
        (expr,) = hook["namespaceSelector"]["matchExpressions"]
        assert expr["operator"] == "NotIn"
        assert {"kube-system", "modelreg-system"} <= set(expr["values"])
        resources = {r for rule in hook["rules"] for r in rule["resources"]}
        assert resources == {
            "pods",
            "pods/ephemeralcontainers",
            "deployments",
            "statefulsets",
            "daemonsets",
            "replicasets",
            "jobs",
            "cronjobs",
        }
        path = hook["clientConfig"]["service"]["path"]
        assert path == ("/mutate" if config["kind"].startswith("Mutating") else "/validate")


def test_deployment_budget_below_timeout_and_probes() -> None:
    timeout = min(h["timeoutSeconds"] for c in docs("webhooks.yaml") for h in c["webhooks"])
    deployment = next(d for d in docs("deployment.yaml") if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = dict(a.split("=", 1) for a in container["args"] if a.startswith("--"))
    assert float(args["--budget"]) < timeout
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    kinds = {d["kind"] for name in ("namespace.yaml", "deployment.yaml") for d in docs(name)}
    assert {"Namespace", "ServiceAccount", "Deployment", "Service", "PodDisruptionBudget"} <= kinds


def test_deploy_policies_load() -> None:
    from modelreg.policy import load_policies

    assert len(load_policies([DEPLOY / "policies"])) == 1
