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


def deployment() -> dict[str, Any]:
    return next(d for d in docs("deployment.yaml") if d["kind"] == "Deployment")


def serve_args() -> dict[str, str]:
    (container,) = deployment()["spec"]["template"]["spec"]["containers"]
    return dict(a.split("=", 1) for a in container["args"] if a.startswith("--"))


ANSWER_SLACK = 2.0
"""Seconds between the budget and ``timeoutSeconds`` (deploy/README.md, "Budget"): an
answer written at the deadline still reaches the API server before it gives up."""


def test_budget_and_timeout_agree() -> None:
    timeouts = {h["timeoutSeconds"] for c in docs("webhooks.yaml") for h in c["webhooks"]}
    assert len(timeouts) == 1  # both webhooks: one budget serves them
    (timeout,) = timeouts
    assert float(serve_args()["--budget"]) + ANSWER_SLACK <= timeout
    readme = (DEPLOY / "README.md").read_text()
    assert f"`timeoutSeconds: {timeout}`" in readme
    assert f"--budget {float(serve_args()['--budget']):g}" in readme


def test_replicas_spread_disruption_budget_and_rollout() -> None:
    d = deployment()
    spec = d["spec"]
    assert spec["replicas"] >= 2
    rolling = spec["strategy"]["rollingUpdate"]
    assert spec["strategy"]["type"] == "RollingUpdate" and rolling["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()
    (pdb,) = [x for x in docs("deployment.yaml") if x["kind"] == "PodDisruptionBudget"]
    assert pdb["spec"]["minAvailable"] == 1 < spec["replicas"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # SIGTERM: drain, then the answers in flight (at most the budget), inside the grace
    args = serve_args()
    drain = float(args["--drain-seconds"])
    assert drain + float(args["--budget"]) < pod["terminationGracePeriodSeconds"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert int(args["--max-pending"]) >= 1 and int(args["--breaker-failures"]) >= 1


def test_deployment_probes_and_hardening() -> None:
    deployment_ = deployment()
    (container,) = deployment_["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert deployment_["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    kinds = {d["kind"] for name in ("namespace.yaml", "deployment.yaml") for d in docs(name)}
    assert {"Namespace", "ServiceAccount", "Deployment", "Service", "PodDisruptionBudget"} <= kinds


def test_deploy_policies_load() -> None:
    from modelreg.policy import load_policies

    assert len(load_policies([DEPLOY / "policies"])) == 1
