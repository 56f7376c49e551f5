"""AdmissionReview documents shaped exactly like the ones the API server sends (v1)."""

from __future__ import annotations

import copy
import uuid
from typing import Any

RESOURCES = {
    "Pod": ("", "v1", "pods"),
    "Deployment": ("apps", "v1", "deployments"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "DaemonSet": ("apps", "v1", "daemonsets"),
    "ReplicaSet": ("apps", "v1", "replicasets"),
    "Job": ("batch", "v1", "jobs"),
    "CronJob": ("batch", "v1", "cronjobs"),
}


def pod_spec(
    images: list[str],
    *,
    init: list[str] = (),  # type: ignore[assignment]
    ephemeral: list[str] = (),  # type: ignore[assignment]
    volumes: list[str] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": f"c{i}",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "volumeMounts": [
                    {"name": f"model{j}", "mountPath": f"/models/{j}", "readOnly": True}
                    for j in range(len(volumes))
                ],
            }
            for i, image in enumerate(images)
        ],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "securityContext": {},
        "schedulerName": "default-scheduler",
    }
    if init:
        spec["initContainers"] = [{"name": f"init{i}", "image": im} for i, im in enumerate(init)]
    if ephemeral:
        spec["ephemeralContainers"] = [
            {"name": f"debug{i}", "image": im, "targetContainerName": "c0"}
            for i, im in enumerate(ephemeral)
        ]
    if volumes:
        spec["volumes"] = [
            {"name": f"model{j}", "image": {"reference": ref, "pullPolicy": "IfNotPresent"}}
            for j, ref in enumerate(volumes)
        ]
    return spec


def workload(
    kind: str,
    spec: dict[str, Any],
    *,
    name: str = "llm",
    namespace: str = "ml",
    annotations: dict[str, str] | None = None,
    template_annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    group, version, _ = RESOURCES[kind]
    api = f"{group}/{version}" if group else version
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels or {"app": name}}
    if annotations:
        meta["annotations"] = annotations
    template = {
        "metadata": {"labels": labels or {"app": name}, "creationTimestamp": None},
        "spec": spec,
    }
    if template_annotations:
        template["metadata"]["annotations"] = template_annotations
    if kind == "Pod":
        body: dict[str, Any] = {"spec": spec, "status": {}}
    elif kind == "CronJob":
        body = {
            "spec": {
                "schedule": "*/5 * * * *",
                "concurrencyPolicy": "Allow",
                "jobTemplate": {
                    "metadata": {"creationTimestamp": None},
                    "spec": {"template": template},
                },
            }
        }
    elif kind == "Job":
        template["spec"] = {**spec, "restartPolicy": "Never"}
        body = {"spec": {"backoffLimit": 6, "template": template}}
    else:
        body = {
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": template,
            }
        }
        if kind == "StatefulSet":
            body["spec"]["serviceName"] = name
    return {"apiVersion": api, "kind": kind, "metadata": meta, **body}


def review(
    obj: dict[str, Any],
    *,
    operation: str = "CREATE",
    dry_run: bool = False,
    sub_resource: str | None = None,
    old: dict[str, Any] | None = None,
    uid: str | None = None,
) -> dict[str, Any]:
    kind = obj["kind"]
    group, version, resource = RESOURCES[kind]
    gvk = {"group": group, "version": version, "kind": kind}
    gvr = {"group": group, "version": version, "resource": resource}
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": obj["metadata"]["name"],
        "namespace": obj["metadata"]["namespace"],
        "operation": operation,
        "userInfo": {
            "username": "kubernetes-admin",
            "uid": "aaaa-bbbb",
            "groups": ["kubeadm:cluster-admins", "system:authenticated"],
        },
        "object": copy.deepcopy(obj),
        "oldObject": copy.deepcopy(old) if old is not None else None,
        "dryRun": dry_run,
        "options": {
            "apiVersion": "meta.k8s.io/v1",
            "kind": "CreateOptions" if operation == "CREATE" else "UpdateOptions",
            "fieldManager": "kubectl-client-side-apply",
            "fieldValidation": "Strict",
        },
    }
    if sub_resource:
        request["subResource"] = sub_resource
        request["requestSubResource"] = sub_resource
    return {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request}
