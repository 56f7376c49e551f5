"""SLSA provenance v1, training lineage and model-scan predicates."""

from __future__ import annotations

import collections
import json
import os
import pickle

import pytest

from modelreg.errors import InvalidInputError
from modelreg.lazy.chunkindex import CHUNK_INDEX_ARTIFACT_TYPE
from modelreg.sign import (
    MODEL_SCAN_PREDICATE,
    TRAINING_LINEAGE_PREDICATE,
    KeySigner,
    attest,
    model_scan,
    scan_findings,
    slsa_provenance,
    training_lineage,
    validate_training_lineage,
)
from modelreg.verify import verify_artifact
from tests.unit.signing_fixtures import key_policy, write_model

GITHUB_ENV = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "acme/models",
    "GITHUB_REPOSITORY_ID": "123",
    "GITHUB_REPOSITORY_OWNER_ID": "456",
    "GITHUB_WORKFLOW_REF": "acme/models/.github/workflows/release.yml@refs/tags/v1",
    "GITHUB_REF": "refs/tags/v1",
    "GITHUB_SHA": "a" * 40,
    "GITHUB_EVENT_NAME": "push",
    "GITHUB_RUN_ID": "99",
    "GITHUB_RUN_ATTEMPT": "2",
    "RUNNER_ENVIRONMENT": "github-hosted",
    "GITHUB_TOKEN": "ghs_secret_token_value",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "another-secret",
}
GITLAB_ENV = {
    "GITLAB_CI": "true",
    "CI_SERVER_URL": "https://gitlab.example.com",
    "CI_PROJECT_PATH": "ml/models",
    "CI_PROJECT_URL": "https://gitlab.example.com/ml/models",
    "CI_COMMIT_REF_NAME": "main",
    "CI_COMMIT_SHA": "b" * 40,
    "CI_JOB_NAME": "publish",
    "CI_JOB_ID": "7",
    "CI_JOB_URL": "https://gitlab.example.com/ml/models/-/jobs/7",
    "CI_RUNNER_ID": "3",
    "CI_PIPELINE_SOURCE": "push",
    "CI_JOB_TOKEN": "glcbt-secret",
    "CI_REGISTRY_PASSWORD": "registry-secret",
}


def test_slsa_github_actions():
    p = slsa_provenance(
        environ=GITHUB_ENV, started_on="2025-01-01T00:00:00Z", finished_on="2025-01-01T00:05:00Z"
    )
    assert p["buildDefinition"]["buildType"] == "https://actions.github.io/buildtypes/workflow/v1"
    assert p["buildDefinition"]["externalParameters"]["workflow"] == {
        "ref": "refs/tags/v1",
        "repository": "https://github.com/acme/models",
        "path": ".github/workflows/release.yml",
    }
    assert p["buildDefinition"]["resolvedDependencies"][0] == {
        "uri": "git+https://github.com/acme/models@refs/tags/v1",
        "digest": {"gitCommit": "a" * 40},
    }
    assert p["runDetails"]["builder"]["id"] == "https://github.com/actions/runner/github-hosted"
    assert p["runDetails"]["metadata"] == {
        "invocationId": "https://github.com/acme/models/actions/runs/99/attempts/2",
        "startedOn": "2025-01-01T00:00:00Z",
        "finishedOn": "2025-01-01T00:05:00Z",
    }
    assert "secret" not in json.dumps(p)


def test_slsa_gitlab_ci():
    p = slsa_provenance(environ=GITLAB_ENV)
    assert (
        p["buildDefinition"]["externalParameters"]["source"]
        == "https://gitlab.example.com/ml/models"
    )
    assert p["buildDefinition"]["resolvedDependencies"][0]["digest"] == {"gitCommit": "b" * 40}
    assert p["runDetails"]["builder"]["id"] == "https://gitlab.example.com/ml/models/-/runners/3"
    assert (
        p["runDetails"]["metadata"]["invocationId"]
        == "https://gitlab.example.com/ml/models/-/jobs/7"
    )
    assert "secret" not in json.dumps(p)


def test_slsa_local_machine():
    p = slsa_provenance(environ={"MODELREG_PASSWORD": "nope"}, source="oci:/x@sha256:" + "0" * 64)
    assert p["buildDefinition"]["buildType"] == "https://modelreg.dev/buildtypes/local/v1"
    assert p["buildDefinition"]["externalParameters"] == {"source": "oci:/x@sha256:" + "0" * 64}
    assert p["runDetails"]["builder"]["id"].startswith("https://modelreg.dev/builders/local/")
    assert p["runDetails"]["metadata"]["invocationId"].startswith("urn:uuid:")
    assert "nope" not in json.dumps(p)


def test_training_lineage_builder_and_validation():
    p = training_lineage(
        base_model={"name": "llama-3-8b", "digest": {"sha256": "c" * 64}},
        datasets=[{"name": "wiki", "uri": "hf://datasets/wiki", "digest": {"sha256": "d" * 64}}],
        hyperparameters={"lr": 2e-5, "epochs": 3},
        evaluations=[{"name": "mmlu", "metrics": {"accuracy": 0.61}}],
    )
    assert validate_training_lineage(p) == p
    for bad in (
        {},
        {"datasets": [{"uri": "x"}]},
        {"baseModel": {"digest": {"sha256": "xyz"}}},
        {"baseModel": {"name": "no digest nor uri"}},
        {"datasets": [{"name": "d"}], "evaluations": [{"name": "e", "metrics": {"acc": "high"}}]},
        {"datasets": [{"name": "d"}], "surprise": 1},
    ):
        with pytest.raises(InvalidInputError):
            validate_training_lineage(bad)


def test_lineage_attestation_is_validated_before_signing(stored, key):
    with pytest.raises(InvalidInputError):
        attest(stored.target, stored.desc, KeySigner(key), TRAINING_LINEAGE_PREDICATE, {"oops": 1})
    attached = stored.target.referrers(stored.desc)
    assert [r for r in attached if r.artifact_type != CHUNK_INDEX_ARTIFACT_TYPE] == []


def test_scan_findings_flag_pickles_and_attest(client, tmp_path, key):
    model = write_model(
        tmp_path / "pickled",
        {
            "model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + b"\x00" * 16,
            "pytorch_model.bin": pickle.dumps(
                {"w": [1, 2, 3], "cls": collections.OrderedDict, "f": os.system}, protocol=4
            ),
            "config.json": b"{}",
        },
    )
    client.push(model, "team/pickled:v1")
    _, target, desc = client.resolve("team/pickled:v1")
    findings = scan_findings(target, desc)
    assert [f.path for f in findings] == ["pytorch_model.bin"]
    assert findings[0].severity == "high" and findings[0].digest.startswith("sha256:")
    assert any("system" in name for name in findings[0].imports)
    predicate = model_scan(findings, scanned_on="2025-01-01T00:00:00Z")
    assert predicate["result"] == "failed"
    attest(target, desc, KeySigner(key), MODEL_SCAN_PREDICATE, predicate)
    result = verify_artifact(target, desc, key_policy(key, required=(MODEL_SCAN_PREDICATE,)))
    # required attestation is present, but nothing *signed* the manifest itself
    assert not result.ok and result.attestations[0].predicate["result"] == "failed"
    assert model_scan([])["result"] == "passed"
