"""Unit tests of modelreg.ci: CI detection, provenance, outputs, signing pre-flight,
stage exit codes of the pre-flight checks (no registry: nothing is pushed)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from modelreg.attest.keys import private_key_pem
from modelreg.ci import (
    EXIT_CODES,
    GENERIC_BUILD_TYPE,
    CIOutputs,
    PublishError,
    SigningOptions,
    detect_ci,
    dotenv_lines,
    github_output_lines,
    prepare_signing,
    provenance,
    publish,
)
from modelreg.errors import InvalidInputError
from modelreg.sign import generate_private_key

GITHUB = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_REPOSITORY": "acme/models",
    "GITHUB_WORKFLOW_REF": "acme/models/.github/workflows/train.yml@refs/heads/main",
    "GITHUB_SHA": "c0ffee",
    "GITHUB_REF": "refs/heads/main",
    "GITHUB_RUN_ID": "42",
    "RUNNER_NAME": "runner-1",
}
GITLAB = {
    "GITLAB_CI": "true",
    "CI_PROJECT_PATH": "acme/models",
    "CI_SERVER_URL": "https://gitlab.example.com",
    "CI_COMMIT_SHA": "c0ffee",
    "CI_COMMIT_REF_NAME": "main",
    "CI_JOB_NAME": "publish",
    "CI_PIPELINE_ID": "7",
    "CI_JOB_URL": "https://gitlab.example.com/acme/models/-/jobs/9",
    "CI_RUNNER_DESCRIPTION": "shared",
}


def jwt(claims: dict[str, object]) -> str:
    def part(doc: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.c2ln"


def test_detect_github() -> None:
    ci = detect_ci(GITHUB)
    assert ci.provider == "github"
    assert ci.repository == "https://github.com/acme/models"
    assert ci.workflow == ".github/workflows/train.yml"
    assert ci.run_url == "https://github.com/acme/models/actions/runs/42"
    assert (ci.commit, ci.ref, ci.runner) == ("c0ffee", "refs/heads/main", "runner-1")


def test_detect_gitlab() -> None:
    ci = detect_ci(GITLAB)
    assert ci.provider == "gitlab"
    assert ci.repository == "https://gitlab.example.com/acme/models"
    assert (ci.workflow, ci.run_id, ci.runner) == ("publish", "7", "shared")


def test_detect_generic_and_jenkins() -> None:
    ci = detect_ci({"MODELREG_CI_REPOSITORY": "https://git/x", "GIT_URL": "ignored"})
    assert ci.provider == "generic" and ci.repository == "https://git/x"
    jenkins = detect_ci({"GIT_URL": "https://git/y", "GIT_COMMIT": "abc", "BUILD_URL": "u"})
    assert (jenkins.repository, jenkins.commit, jenkins.run_url) == ("https://git/y", "abc", "u")
    assert detect_ci({}).to_dict()["repository"] == ""


def test_provenance_per_provider() -> None:
    gh = provenance(detect_ci(GITHUB), subject="r@sha256:x", started_on="T", environ=GITHUB)
    wf = gh["buildDefinition"]["externalParameters"]["workflow"]
    assert wf == {
        "ref": "refs/heads/main",
        "repository": "https://github.com/acme/models",
        "path": ".github/workflows/train.yml",
    }
    gl = provenance(detect_ci(GITLAB), subject="r", started_on="T", environ=GITLAB)
    assert gl["buildDefinition"]["externalParameters"]["entryPoint"] == "publish"
    env = {
        "MODELREG_CI_REPOSITORY": "https://git/acme",
        "MODELREG_CI_COMMIT": "abc",
        "MODELREG_CI_REF": "main",
        "MODELREG_CI_WORKFLOW": "nightly",
        "MODELREG_CI_RUN_URL": "https://ci/run/1",
        "MODELREG_CI_RUNNER": "box",
    }
    generic = provenance(detect_ci(env), subject="r", started_on="T", environ=env)
    build = generic["buildDefinition"]
    assert build["buildType"] == GENERIC_BUILD_TYPE
    assert build["externalParameters"]["repository"] == "https://git/acme"
    assert build["externalParameters"]["workflow"] == "nightly"
    assert build["resolvedDependencies"][0] == {
        "uri": "git+https://git/acme@main",
        "digest": {"gitCommit": "abc"},
    }
    assert generic["runDetails"]["metadata"]["invocationId"] == "https://ci/run/1"
    assert generic["runDetails"]["builder"]["id"].endswith("/box")
    # no CI information at all: the signing package's local builder, untouched
    local = provenance(detect_ci({}), subject="r", started_on="T", environ={})
    assert local["buildDefinition"]["buildType"] != GENERIC_BUILD_TYPE


def test_output_formats() -> None:
    text = github_output_lines({"digest": "sha256:ab", "notes": "a\nb"})
    assert text.startswith("digest=sha256:ab\nnotes<<MODELREG_EOF_")
    delimiter = text.split("notes<<", 1)[1].split("\n", 1)[0]
    assert text.endswith(f"a\nb\n{delimiter}\n")
    assert dotenv_lines({"MODELREG_X": "a\nb"}) == "MODELREG_X=a b\n"
    with pytest.raises(ValueError):
        dotenv_lines({"bad-name": "x"})


def test_outputs_from_env(tmp_path: Path) -> None:
    out = CIOutputs.from_env({"GITLAB_CI": "true"})
    assert out.dotenv == Path("modelreg.env") and out.github_output is None
    gh = CIOutputs.from_env(
        {"GITHUB_OUTPUT": str(tmp_path / "o"), "GITHUB_STEP_SUMMARY": str(tmp_path / "s")},
        summary_json=tmp_path / "sum.json",
        dotenv=tmp_path / "d.env",
    )
    (tmp_path / "o").write_text("earlier=1\n")
    gh.write({"digest": "sha256:ab", "tag-reference": "r:t"}, {"ok": True}, "# hi\n")
    assert (tmp_path / "o").read_text() == "earlier=1\ndigest=sha256:ab\ntag-reference=r:t\n"
    assert (tmp_path / "s").read_text() == "# hi\n"
    assert (tmp_path / "d.env").read_text() == (
        "MODELREG_DIGEST=sha256:ab\nMODELREG_TAG_REFERENCE=r:t\n"
    )
    assert json.loads((tmp_path / "sum.json").read_text()) == {"ok": True}
    broken = CIOutputs(summary_json=tmp_path / "sum.json" / "not-a-dir")
    seen: list[str] = []
    broken.write({}, {}, "", warn=seen.append)
    assert seen and "could not write the JSON summary" in seen[0]


def test_prepare_signing_choices(tmp_path: Path) -> None:
    pem = private_key_pem(generate_private_key(), None).decode()
    assert prepare_signing(SigningOptions(), {"MODELREG_SIGNING_KEY": pem}).mode == "key"
    assert prepare_signing(SigningOptions(key="env://MY_KEY"), {"MY_KEY": pem}).key_source == (
        "$MY_KEY"
    )
    key_file = tmp_path / "k.pem"
    key_file.write_text(pem)
    assert prepare_signing(SigningOptions(key=str(key_file)), {}).mode == "key"
    token = jwt({"iss": "i", "sub": "s", "exp": time.time() + 600})
    prepared = prepare_signing(SigningOptions(keyless=True), {"SIGSTORE_ID_TOKEN": token})
    assert prepared.mode == "keyless" and prepared.token == token
    github = prepare_signing(
        SigningOptions(),
        {
            "GITHUB_ACTIONS": "true",
            "ACTIONS_ID_TOKEN_REQUEST_URL": "http://x/t",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "b",
        },
    )
    assert github.github_request == ("http://x/t", "b") and github.token is None


@pytest.mark.parametrize(
    ("options", "env", "message"),
    [
        (SigningOptions(key="k", keyless=True), {}, "not both"),
        (SigningOptions(key="env://NOPE"), {}, "NOPE is not set"),
        (SigningOptions(key="/does/not/exist"), {}, "cannot read the signing key"),
        (SigningOptions(keyless=True), {}, "none was found"),
        (SigningOptions(keyless=True), {"GITHUB_ACTIONS": "true"}, "id-token"),
        (SigningOptions(keyless=True), {"GITLAB_CI": "true"}, "SIGSTORE_ID_TOKEN is not set"),
        (SigningOptions(identity_token="not-a-jwt"), {}, "not a JWT"),
        (
            SigningOptions(identity_token=jwt({"exp": time.time() - 10})),
            {},
            "has expired",
        ),
    ],
)
def test_prepare_signing_refusals(
    options: SigningOptions, env: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        prepare_signing(options, env)


def test_preflight_failures_have_their_stage_exit_code(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "w.safetensors").write_bytes(b"x")
    pem = private_key_pem(generate_private_key(), None).decode()
    env = {"MODELREG_SIGNING_KEY": pem}
    out = CIOutputs(summary_json=tmp_path / "s.json")

    def fails(**kwargs: object) -> PublishError:
        with pytest.raises(PublishError) as info:
            publish(**kwargs)  # type: ignore[arg-type]
        return info.value

    err = fails(directory=tmp_path / "missing", reference="r.example/m:v1", environ=env)
    assert (err.stage, err.exit_code) == ("push", EXIT_CODES["push"]) == ("push", 10)
    err = fails(directory=model, reference="r.example/m:v1", environ={}, outputs=out)
    assert (err.stage, err.exit_code) == ("sign", 11)
    assert json.loads((tmp_path / "s.json").read_text())["failedStage"] == "sign"
    bad = tmp_path / "lineage.json"
    bad.write_text('{"datasets": "nope"}')
    err = fails(directory=model, reference="r.example/m:v1", environ=env, lineage=bad)
    assert (err.stage, err.exit_code) == ("attest", 12)
    policy = tmp_path / "p.yaml"
    policy.write_text("apiVersion: nope\n")
    err = fails(directory=model, reference="r.example/m:v1", environ=env, policies=[policy])
    assert (err.stage, err.exit_code) == ("policy", 13)
    assert [s.status for s in err.result.steps][-1] == "failed"
    assert "Model publish failed (policy)" in err.result.markdown()
