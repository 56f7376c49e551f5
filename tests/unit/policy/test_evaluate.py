"""The pure evaluation: rules, combination of policies, fail-closed behaviour."""

from __future__ import annotations

import pytest

from modelreg.policy import (
    AllOf,
    AnyOf,
    EvalContext,
    Facts,
    NoPickleRule,
    StepError,
    evaluate,
    parse_policies,
)
from modelreg.policy._spdx import expression_allowed
from tests.unit.policy.fakes import (
    DIGEST,
    OTHER_DIGEST,
    Att,
    Result,
    Sig,
    artifact,
    facts,
    modelpack_config,
    policy_doc,
)

NAME = "reg.example.com/models/llm"
ISSUER = "https://token.actions.githubusercontent.com"


def policy(
    require: str, *, match: str = "reg.example.com/models/**", types: str = "", **fields: str
) -> str:
    """:func:`policy_doc` matching the one pattern ``match``; ``types`` a line of match."""
    extra = types + "\n" if types else ""
    return policy_doc(require, match=f'["{match}"]', match_extra=extra, **fields)


KEYLESS = """\
signatures:
  threshold: {threshold}
  authorities:
    - name: ci
      keyless:
        issuer: https://token.actions.githubusercontent.com
        identityRegexp: 'https://github\\.com/acme/models/.+'
    - name: release
      keyless:
        issuer: https://token.actions.githubusercontent.com
        identity: https://github.com/acme/release@refs/heads/main
"""


def load(text: str):  # type: ignore[no-untyped-def]
    return parse_policies(text, "p.yaml")


def test_unmatched_reference() -> None:
    ps = load(policy("artifact: {noPickle: true}\n"))
    d = evaluate(ps, facts("other.example.com/x/y", policies=ps))
    assert d.status == "unmatched" and not d.matched and d.allowed


def test_every_rule_gets_a_result_with_reason_and_line() -> None:
    ps = load(policy("artifact:\n  formats: [gguf]\n  noPickle: true\n  maxSizeBytes: 10\n"))
    d = evaluate(ps, facts(NAME, policies=ps))
    (res,) = d.results
    assert [(r.rule, r.status) for r in res.rules] == [
        ("artifact.formats", "failed"),
        ("artifact.noPickle", "passed"),
        ("artifact.maxSizeBytes", "failed"),
    ]
    assert all(r.reason and r.line for r in res.rules)
    assert "format safetensors is not one of gguf" in res.rules[0].reason
    assert d.status == "fail" and not d.allowed
    assert "policy p: artifact.maxSizeBytes: 1010 bytes, over 10" in d.problems


def test_keyless_threshold_counts_each_authority_once() -> None:
    ps = load(policy(KEYLESS.format(threshold=2)))
    ci = Sig(
        "x",
        kind="keyless",
        signer="https://github.com/acme/models/wf@refs/heads/main",
        issuer=ISSUER,
    )
    rel = Sig(
        "y", kind="keyless", signer="https://github.com/acme/release@refs/heads/main", issuer=ISSUER
    )
    twice = Result(signatures=(ci, ci, ci))  # the same authority three times: counts once
    assert evaluate(ps, facts(NAME, policies=ps, result=twice)).status == "fail"
    both = Result(signatures=(ci, rel))
    d = evaluate(ps, facts(NAME, policies=ps, result=both))
    assert d.status == "pass", d.problems
    assert "signed by ci, release (2 of the 2 required)" in d.results[0].rules[0].reason


@pytest.mark.parametrize(
    ("signer", "issuer", "ok"),
    [
        ("https://github.com/acme/models/x", ISSUER, True),
        ("https://github.com/acme/models/x", "https://evil.example.com", False),  # wrong issuer
        ("https://evil.com/?https://github.com/acme/models/x", ISSUER, False),  # prefix
        ("https://github.com/acme/modelsX", ISSUER, False),
        ("https://github.com/acme/models/x\n", ISSUER, False),
    ],
)
def test_keyless_identity_regex_is_anchored(signer: str, issuer: str, ok: bool) -> None:
    ps = load(policy(KEYLESS.format(threshold=1)))
    result = Result(signatures=(Sig("a", kind="keyless", signer=signer, issuer=issuer),))
    assert evaluate(ps, facts(NAME, policies=ps, result=result)).allowed is ok


def test_key_signature_must_come_from_a_listed_key() -> None:
    from tests.unit.policy.test_load import PEM_SIG

    ps = load(policy(PEM_SIG.replace("    - key:", "    - name: release\n      key:")))
    good = Result(signatures=(Sig("release"),))
    assert evaluate(ps, facts(NAME, policies=ps, result=good)).allowed
    other = Result(signatures=(Sig("someone-else"),), ok=False, failures=("no trusted signature",))
    d = evaluate(ps, facts(NAME, policies=ps, result=other))
    assert not d.allowed
    assert "no trusted signature" in d.problems[0]


def test_result_for_another_digest_is_refused() -> None:
    """A replayed verification result (for digest B) never passes digest A."""
    ps = load(policy(KEYLESS.format(threshold=1)))
    ci = Sig("x", kind="keyless", signer="https://github.com/acme/models/wf", issuer=ISSUER)
    d = evaluate(ps, facts(NAME, policies=ps, result=Result(digest=OTHER_DIGEST, signatures=(ci,))))
    assert d.status == "fail"
    assert f"verification result is for {OTHER_DIGEST}" in d.problems[0]


def test_missing_or_failed_verification_is_an_error_not_a_pass() -> None:
    ps = load(policy(KEYLESS.format(threshold=1)))
    d = evaluate(ps, facts(NAME, policies=ps, result=None))
    assert d.status == "error" and not d.allowed
    d = evaluate(ps, facts(NAME, policies=ps, result=StepError("verify", "registry timed out")))
    assert d.status == "error" and not d.allowed
    assert "verify could not run: registry timed out" in d.problems[0]


def test_step_errors_fail_every_rule_closed() -> None:
    ps = load(policy("artifact: {noPickle: true}\n"))
    f = facts(NAME, policies=ps, errors=(StepError("resolve", "connection refused"),))
    d = evaluate(ps, f)
    assert d.status == "error" and not d.allowed
    assert d.results[0].rules[0].reason == "resolve could not run: connection refused"


SLSA = (
    KEYLESS.format(threshold=1)
    + """\
attestations:
  - predicateType: https://slsa.dev/provenance/v1
    conditions:
      - field: predicate.repo
        equals: https://github.com/acme/models
      - anyOf:
          - field: predicate.builder
            in: [gha, gcb]
          - field: predicate.trusted
            exists: true
      - field: predicate.ref
        matches: 'refs/(heads/main|tags/v.+)'
    rego: |
      package t
      import rego.v1
      deny contains msg if {
        input.predicate.level < 3
        msg := sprintf("level %d", [input.predicate.level])
      }
"""
)


def slsa_result(**predicate: object) -> Result:
    base = {
        "repo": "https://github.com/acme/models",
        "builder": "gha",
        "ref": "refs/heads/main",
        "level": 3,
    }
    base.update(predicate)
    ci = Sig("x", kind="keyless", signer="https://github.com/acme/models/wf", issuer=ISSUER)
    return Result(signatures=(ci,), attestations=(Att("https://slsa.dev/provenance/v1", base),))


@pytest.mark.parametrize(
    ("predicate", "ok", "why"),
    [
        ({}, True, ""),
        (
            {"repo": "https://github.com/evil/models"},
            False,
            'want "https://github.com/acme/models"',
        ),
        ({"builder": "laptop"}, False, "none of"),
        ({"builder": "laptop", "trusted": True}, True, ""),
        ({"ref": "refs/heads/main-evil"}, False, "want a match"),
        ({"ref": "xrefs/heads/main"}, False, "want a match"),
        ({"level": 2}, False, "rego: level 2"),
    ],
)
def test_attestation_conditions(predicate: dict[str, object], ok: bool, why: str) -> None:
    ps = load(policy(SLSA))
    d = evaluate(ps, facts(NAME, policies=ps, result=slsa_result(**predicate)))
    assert d.allowed is ok, d.problems
    if why:
        assert why in d.problems[0]


def test_attestation_missing_or_of_other_type() -> None:
    ps = load(policy(SLSA))
    r = slsa_result()
    no_att = Result(signatures=r.signatures, attestations=(Att("https://other/v1", {}),))
    d = evaluate(ps, facts(NAME, policies=ps, result=no_att))
    assert "no verified attestation of type https://slsa.dev/provenance/v1" in d.problems[0]
    # the signature rule passes on its own; only the attestation rule fails
    assert [r.status for r in d.results[0].rules] == ["passed", "failed"]


def test_rego_runtime_error_is_an_error_result() -> None:
    ps = load(policy(SLSA))
    d = evaluate(ps, facts(NAME, policies=ps, result=slsa_result(level="three")))
    # comparing a string with < is not an error in Rego; a builtin on a wrong type is
    assert d.status in ("fail", "error", "pass")
    text = SLSA.replace("input.predicate.level < 3", "count(input.predicate.level) > 0")
    ps = load(policy(text))
    d = evaluate(ps, facts(NAME, policies=ps, result=slsa_result(level=3)))
    assert d.status == "error" and not d.allowed


def test_every_enforce_policy_must_pass_warn_policies_only_warn() -> None:
    ps = load(
        policy("artifact: {noPickle: true}\n", name="a")
        + "---\n"
        + policy("artifact: {formats: [gguf]}\n", name="b", mode="warn")
        + "---\n"
        + policy("artifact: {maxSizeBytes: 10}\n", name="c", match="other.example.com/**")
    )
    d = evaluate(ps, facts(NAME, policies=ps))
    assert [r.policy for r in d.results] == ["a", "b"]  # c does not match
    assert d.allowed and d.status == "pass"
    assert d.warnings == ["policy b: artifact.formats: format safetensors is not one of gguf"]
    pickled = artifact(files=[("model.bin", 5)])
    d = evaluate(ps, facts(NAME, policies=ps, art=pickled))
    assert not d.allowed and d.status == "fail"


def test_artifact_types_narrow_a_policy_but_unknown_type_applies() -> None:
    ps = load(
        policy("artifact: {noPickle: true}\n", types="    artifactTypes: [application/x-model]")
    )
    assert not evaluate(ps, facts(NAME, policies=ps)).matched  # the facts' type is ModelPack
    unknown = Facts(
        reference=NAME,
        name=NAME,
        digest=DIGEST,
        artifact=None,
        errors=(StepError("inspect", "boom"),),
    )
    d = evaluate(ps, unknown)
    assert d.matched and d.status == "error"


@pytest.mark.parametrize(
    ("files", "unsafe", "ok", "why"),
    [
        ([("model.safetensors", 1)], {}, True, ""),
        ([("weights/model.PT", 1)], {}, False, "pickle-based files: weights/model.PT"),
        (
            [("a.ckpt", 1), ("b.joblib", 1), ("c.pickle", 1), ("d.pth", 1)],
            {},
            False,
            "a.ckpt, b.joblib",
        ),
        ([("model.dat", 1)], {"model.dat": "true"}, False, "model.dat"),
        ([("model.safetensors", 1)], {"model.safetensors": "false"}, True, ""),
    ],
)
def test_no_pickle(
    files: list[tuple[str, int]], unsafe: dict[str, str], ok: bool, why: str
) -> None:
    ps = load(policy("artifact: {noPickle: true}\n"))
    d = evaluate(ps, facts(NAME, policies=ps, art=artifact(files=files, unsafe=unsafe)))
    assert d.allowed is ok
    if why:
        assert why in d.problems[0]


def test_no_pickle_refuses_archives() -> None:
    ps = load(policy("artifact: {noPickle: true}\n"))
    art = artifact(files=[("code", 10)], media_type="application/vnd.cncf.model.code.v1.tar+gzip")
    d = evaluate(ps, facts(NAME, policies=ps, art=art))
    assert not d.allowed and "archive layers" in d.problems[0]


@pytest.mark.parametrize(
    ("licenses", "ok"),
    [
        (["Apache-2.0"], True),
        (["apache-2.0"], True),
        (["MIT OR GPL-3.0-only"], True),
        (["(MIT AND GPL-3.0-only)"], False),
        (["GPL-3.0-only"], False),
        (["Apache-2.0", "GPL-3.0-only"], False),
        ([], False),
        (None, False),
        (["MIT AND"], False),
    ],
)
def test_license_allow_list(licenses: list[str] | None, ok: bool) -> None:
    ps = load(policy("artifact: {licenses: [Apache-2.0, MIT]}\n"))
    art = artifact(config=modelpack_config(licenses=licenses))
    assert evaluate(ps, facts(NAME, policies=ps, art=art)).allowed is ok


def test_spdx_with_exception() -> None:
    allowed = ["GPL-2.0-only WITH Classpath-exception-2.0"]
    assert expression_allowed("GPL-2.0-only WITH Classpath-exception-2.0", allowed)
    assert not expression_allowed("GPL-2.0-only", allowed)
    assert not expression_allowed("", allowed)


def test_required_fields_and_formats() -> None:
    ps = load(
        policy(
            "artifact:\n  requiredFields: [descriptor.name, descriptor.version, config.paramSize]\n"
            "  formats: [safetensors]\n"
        )
    )
    assert evaluate(ps, facts(NAME, policies=ps)).allowed
    art = artifact(config=modelpack_config(version=None, fmt=None))
    d = evaluate(ps, facts(NAME, policies=ps, art=art))
    assert "missing in the model config: descriptor.version" in " ".join(d.problems)
    assert "declares no format" in " ".join(d.problems)
    no_config = artifact(config={})
    assert not evaluate(ps, facts(NAME, policies=ps, art=no_config)).allowed


def test_combinators() -> None:
    ctx = EvalContext(facts=facts(NAME, art=artifact(files=[("a.bin", 1)])))
    bad, good = NoPickleRule(id="bad"), NoPickleRule(id="good")
    with pytest.raises(ValueError, match="empty AllOf"):
        AllOf(())
    with pytest.raises(ValueError, match="empty AnyOf"):
        AnyOf(())
    assert AllOf((bad,)).evaluate(ctx).status == "failed"
    ok_ctx = EvalContext(facts=facts(NAME))
    assert AnyOf((bad, good)).evaluate(ok_ctx).status == "passed"
    assert AnyOf((bad,)).evaluate(ctx).status == "failed"


def test_decision_to_dict_is_json() -> None:
    import json

    ps = load(policy("artifact: {noPickle: true}\n"))
    doc = evaluate(ps, facts(NAME, policies=ps)).to_dict()
    assert json.loads(json.dumps(doc))["policies"][0]["rules"][0]["status"] == "passed"
