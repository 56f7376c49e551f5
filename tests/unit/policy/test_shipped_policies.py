"""Each policy shipped in policies/ allows what it should and refuses what it guards against."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelreg.policy import Policy, evaluate, load_policy_file
from tests.unit.policy.fakes import Att, Result, Sig, artifact, facts, modelpack_config

ROOT = Path(__file__).parents[3] / "policies"
GHA = "https://token.actions.githubusercontent.com"
WORKFLOW = "https://github.com/acme/models/.github/workflows/release.yml"


def shipped(name: str) -> list[Policy]:
    return load_policy_file(ROOT / name)


def test_every_shipped_policy_is_covered_here() -> None:
    covered = {
        "signed-by-key.yaml",
        "keyless-ci-identity.yaml",
        "slsa-provenance.yaml",
        "no-pickle.yaml",
        "license-allowlist.yaml",
        "warn-rollout.yaml",
    }
    assert {p.name for p in ROOT.glob("*.yaml")} == covered
    for name in covered:
        text = (ROOT / name).read_text()
        assert text.startswith("# "), f"{name} must open with a comment"
        assert "Guards against" in text, f"{name} must say what it guards against"


def test_signed_by_key() -> None:
    ps = shipped("signed-by-key.yaml")
    name = "registry.example.com/models/llm"
    ok = facts(name, policies=ps, result=Result(signatures=(Sig("release-key"),)))
    assert evaluate(ps, ok).allowed
    unsigned = facts(name, policies=ps, result=Result(ok=False, failures=("no signature found",)))
    d = evaluate(ps, unsigned)
    assert not d.allowed and "no signature found" in d.problems[0]
    wrong = facts(name, policies=ps, result=Result(ok=False, signatures=(Sig("other-key"),)))
    assert not evaluate(ps, wrong).allowed


@pytest.mark.parametrize(
    ("identity", "issuer", "ok"),
    [
        (f"{WORKFLOW}@refs/heads/main", GHA, True),
        (f"{WORKFLOW}@refs/tags/v1.2.3", GHA, True),
        (f"{WORKFLOW}@refs/tags/v1.2.3-rc", GHA, False),
        (f"{WORKFLOW}@refs/heads/feature", GHA, False),
        (
            "https://github.com/evil/models/.github/workflows/release.yml@refs/heads/main",
            GHA,
            False,
        ),
        (f"{WORKFLOW}@refs/heads/main", "https://accounts.google.com", False),
    ],
)
def test_keyless_from_ci(identity: str, issuer: str, ok: bool) -> None:
    ps = shipped("keyless-ci-identity.yaml")
    result = Result(signatures=(Sig("?", kind="keyless", signer=identity, issuer=issuer),))
    d = evaluate(ps, facts("ghcr.io/acme/models/llm", policies=ps, result=result))
    assert d.allowed is ok, d.problems


def provenance(
    repo: str = "https://github.com/acme/models",
    ref: str = "refs/heads/main",
    builder: str = "https://github.com/actions/runner/github-hosted",
) -> Att:
    return Att(
        "https://slsa.dev/provenance/v1",
        {
            "buildDefinition": {
                "buildType": "https://actions.github.io/buildtypes/workflow/v1",
                "externalParameters": {"workflow": {"repository": repo, "ref": ref, "path": "x"}},
            },
            "runDetails": {"builder": {"id": builder}},
        },
    )


@pytest.mark.parametrize(
    ("att", "ok", "why"),
    [
        (provenance(), True, ""),
        (provenance(ref="refs/tags/v2.0.0"), True, ""),
        (provenance(repo="https://github.com/evil/models"), False, "repository"),
        (provenance(ref="refs/heads/dev"), False, "built from refs/heads/dev"),
        (provenance(builder="https://laptop.local/"), False, "builder.id"),
        (None, False, "no verified attestation"),
    ],
)
def test_slsa_provenance(att: Att | None, ok: bool, why: str) -> None:
    ps = shipped("slsa-provenance.yaml")
    signer = f"{WORKFLOW}@refs/heads/main"
    result = Result(
        signatures=(Sig("ci", kind="keyless", signer=signer, issuer=GHA),),
        attestations=(att,) if att else (),
    )
    d = evaluate(ps, facts("ghcr.io/acme/models/llm", policies=ps, result=result))
    assert d.allowed is ok, d.problems
    if why:
        assert why in " ".join(d.problems)


def test_no_pickle() -> None:
    ps = shipped("no-pickle.yaml")
    name = "registry.example.com/team/llm"
    assert evaluate(ps, facts(name, policies=ps)).allowed
    gguf = artifact(files=[("m.gguf", 9)], config=modelpack_config(fmt="gguf"))
    assert evaluate(ps, facts(name, policies=ps, art=gguf)).allowed
    torch = artifact(files=[("pytorch_model.bin", 9)], config=modelpack_config(fmt="pytorch"))
    d = evaluate(ps, facts(name, policies=ps, art=torch))
    assert not d.allowed
    assert any("pytorch_model.bin" in p for p in d.problems)
    assert any("format pytorch" in p for p in d.problems)
    # a container image (not a ModelPack artifact) is not this policy's business
    image = artifact(artifact_type="application/vnd.oci.image.config.v1+json", files=[("x.bin", 1)])
    assert not evaluate(ps, facts(name, policies=ps, art=image)).matched


def test_license_allowlist() -> None:
    ps = shipped("license-allowlist.yaml")
    name = "registry.example.com/models/llm"
    assert evaluate(ps, facts(name, policies=ps)).allowed
    gpl = artifact(config=modelpack_config(licenses=["GPL-3.0-only"]))
    d = evaluate(ps, facts(name, policies=ps, art=gpl))
    assert not d.allowed and "GPL-3.0-only not in the allow-list" in d.problems[0]
    anonymous = artifact(config=modelpack_config(licenses=["MIT"], name=None, version=None))
    assert not evaluate(ps, facts(name, policies=ps, art=anonymous)).allowed
    huge = artifact(files=[("model.safetensors", 50 * 1024**3)])
    assert not evaluate(ps, facts(name, policies=ps, art=huge)).allowed


def test_warn_rollout_admits_with_warnings() -> None:
    ps = shipped("warn-rollout.yaml")
    name = "registry.example.com/staging/llm"
    clean = facts(name, policies=ps, result=Result(signatures=(Sig("release-key"),)))
    d = evaluate(ps, clean)
    assert d.allowed and not d.warnings
    unsigned = facts(
        name,
        policies=ps,
        result=Result(ok=False, failures=("unsigned",)),
        art=artifact(files=[("m.pkl", 3)]),
    )
    d = evaluate(ps, unsigned)
    assert d.allowed, "warn mode never denies"
    assert len(d.warnings) == 2
    assert d.status == "pass"


def test_deploy_cluster_policy() -> None:
    ps = load_policy_file(ROOT.parent / "deploy" / "policies" / "models.yaml")
    name = "registry.example.com/models/llm"
    signed = facts(name, policies=ps, result=Result(signatures=(Sig("release-key"),)))
    assert evaluate(ps, signed).allowed
    pickled = facts(
        name,
        policies=ps,
        result=Result(signatures=(Sig("release-key"),)),
        art=artifact(files=[("model.ckpt", 1)]),
    )
    assert not evaluate(ps, pickled).allowed
    unsigned = facts(name, policies=ps, result=Result(ok=False, failures=("no signature",)))
    assert not evaluate(ps, unsigned).allowed
