"""Loading: valid documents parse; invalid ones are refused with file, line and reason."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from modelreg.errors import PolicyError
from modelreg.policy import PolicyLoadError, load_policies, load_policy_file, parse_policies
from tests.unit.policy.fakes import policy_doc as doc

PUB = (Path(__file__).parents[3] / "policies" / "keys" / "example-release.pub").read_text()


ARTIFACT = "artifact:\n  noPickle: true\n"


def error_of(text: str) -> PolicyLoadError:
    with pytest.raises(PolicyLoadError) as info:
        parse_policies(text, "p.yaml")
    assert isinstance(info.value, PolicyError)
    assert info.value.exit_code == 9
    return info.value


def test_minimal_policy_loads() -> None:
    (policy,) = parse_policies(doc(ARTIFACT), "p.yaml")
    assert policy.name == "p"
    assert policy.mode == "enforce"
    assert [r.id for r in policy.require.rules] == ["artifact.noPickle"]
    assert policy.digest.startswith("sha256:")
    assert policy.applies_to("registry.example.com/models/llm")
    assert policy.applies_to("registry.example.com/models/team/llm")
    assert not policy.applies_to("registry.example.com/other/llm")
    assert not policy.applies_to("evil.example.com/models/llm")


def test_glob_single_star_stays_in_one_segment() -> None:
    (policy,) = parse_policies(doc(ARTIFACT, match='["reg.io/models/*"]'), "p.yaml")
    assert policy.applies_to("reg.io/models/llm")
    assert not policy.applies_to("reg.io/models/team/llm")


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("store:team/**", "team/llm", True),
        ("store:team/**", "reg.io/team/llm", False),
        ("store:*", "llm", True),
        ("store:*", "team/llm", False),
        ("reg.io/team/**", "team/llm", False),
        ("localhost/team/*", "localhost/team/llm", True),
        ("oci:/srv/models/**", "oci:/srv/models/a/b", True),
        ("oci:/srv/models/**", "srv/models/a", False),
        ("store:srv/**", "oci:srv/models", False),
    ],
)
def test_globs_name_the_registry_the_store_or_a_layout(
    pattern: str, name: str, expected: bool
) -> None:
    (policy,) = parse_policies(doc(ARTIFACT, match=f'["{pattern}"]'), "p.yaml")
    assert policy.applies_to(name) is expected


def test_several_documents_in_one_file() -> None:
    text = doc(ARTIFACT, name="a") + "---\n" + doc(ARTIFACT, name="b")
    assert [p.name for p in parse_policies(text, "p.yaml")] == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (doc(ARTIFACT).replace("v1alpha1", "v9"), 1, "unsupported 'modelreg.dev/v9'"),
        (doc(ARTIFACT).replace("kind: ModelPolicy", "kind: Pod"), 2, "unsupported 'Pod'"),
        (doc(ARTIFACT).replace("  mode: enforce", "  mode: audit"), 6, "must be enforce or warn"),
        (doc(ARTIFACT).replace("require:", "requier:"), 9, "spec.requier: unknown field"),
        (doc("artifact:\n  noPickel: true\n"), 11, "spec.require.artifact.noPickel: unknown field"),
        (doc("artifact:\n  noPickle: false\n"), 11, "requires nothing"),
        (doc("{}\n").replace("require:\n    {}", "require: {}"), 9, "requires nothing"),
        (doc(ARTIFACT, match="[]"), 8, "non-empty list"),
        (doc(ARTIFACT, match='["models/**"]'), 8, "must be REGISTRY/REPOSITORY"),
        (doc(ARTIFACT, match='["store:"]'), 8, "store:REPOSITORY for the embedded local store"),
        (doc(ARTIFACT, match='["store:reg.io/m/**"]'), 8, "must be REGISTRY/REPOSITORY"),
        (doc(ARTIFACT, match='["oci:"]'), 8, "oci:PATH for a layout directory"),
        (doc("artifact:\n  maxSizeBytes: -1\n"), 11, "integer >= 1"),
        (doc("artifact:\n  maxSizeBytes: '10G'\n"), 11, "integer >= 1"),
        (doc(ARTIFACT, name="Bad_Name"), 4, "not a DNS-style name"),
    ],
)
def test_invalid_documents_name_line_and_reason(text: str, line: int, reason: str) -> None:
    err = error_of(text)
    assert err.line == line, err.message
    assert reason in err.reason
    assert err.message.startswith(f"invalid policy p.yaml:{line}: ")


def test_yaml_syntax_error_has_a_line() -> None:
    err = error_of(doc(ARTIFACT) + "  bad: [unclosed\n")
    assert err.line is not None and err.line >= 12
    assert "YAML syntax error" in err.reason


def test_duplicate_keys_are_refused() -> None:
    err = error_of(doc("artifact:\n  noPickle: true\n  noPickle: false\n"))
    assert err.line == 12
    assert "duplicate key 'noPickle' (first on line 11)" in err.reason


def test_alias_bomb_is_bounded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    err = error_of("\n".join(lines) + "\n")
    assert "YAML nodes" in err.reason


def sig(authority: str) -> str:
    lines = authority.splitlines(keepends=True)
    body = "    - " + lines[0] + "".join("      " + x for x in lines[1:])
    return "signatures:\n  authorities:\n" + body


PEM_SIG = sig("key:\n  pem: |\n" + textwrap.indent(PUB, "    "))


def test_keyless_authorities() -> None:
    text = doc(
        "signatures:\n"
        "  threshold: 2\n"
        "  authorities:\n"
        "    - name: a\n"
        "      keyless: {issuer: https://issuer, identity: me@example.com}\n"
        "    - keyless: {issuer: https://issuer, identityRegexp: 'ci-[0-9]+'}\n"
    )
    (policy,) = parse_policies(text, "p.yaml")
    assert policy.signatures is not None
    assert policy.signatures.threshold == 2
    a, b = policy.signatures.authorities
    assert a.name == "a" and b.name == "keyless-1"
    assert b.anchored_regexp == "^(?:ci-[0-9]+)$"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("authority", "reason"),
    [
        ("keyless: {issuer: https://i}\n", "exactly one of 'identity' or 'identityRegexp'"),
        ("keyless: {identity: me}\n", "missing required field 'issuer'"),
        (
            "keyless: {issuer: https://i, identityRegexp: '(unclosed'}\n",
            "invalid regular expression",
        ),
        ("key: {pem: 'not a key'}\n", "not a PEM public key"),
        ("key: {path: nowhere.pub}\n", "cannot read"),
        ("key: {}\n", "exactly one of 'path' or 'pem'"),
        ("name: x\n", "exactly one of 'key' or 'keyless'"),
    ],
)
def test_invalid_authorities(authority: str, reason: str) -> None:
    err = error_of(doc(sig(authority)))
    assert reason in err.reason
    assert err.line is not None and err.line >= 11


def test_private_key_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "k.pem").write_bytes(pem)
    (tmp_path / "p.yaml").write_text(doc(sig("key: {path: k.pem}\n")))
    with pytest.raises(PolicyLoadError) as info:
        load_policy_file(tmp_path / "p.yaml")
    assert "private key" in info.value.reason
    assert "BEGIN" not in str(info.value)  # the key material is never echoed


def test_threshold_above_authority_count() -> None:
    text = doc(PEM_SIG + "  threshold: 2\n")
    err = error_of(text)
    assert "threshold 2 is more than the 1 authorities" in err.reason


def test_attestations_need_authorities() -> None:
    err = error_of(doc("attestations:\n  - predicateType: https://slsa.dev/provenance/v1\n"))
    assert "attestations are trusted only when signed" in err.reason
    assert err.line == 11


def key_policy(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "k.pub").write_text(PUB)
    body = sig("key: {path: k.pub}\n") + extra
    (tmp_path / "p.yaml").write_text(doc(body))
    return tmp_path / "p.yaml"


def test_condition_errors_have_lines(tmp_path: Path) -> None:
    base = PEM_SIG
    bad_conditions = [
        ("  - predicateType: t\n    conditions:\n      - field: a\n", "exactly one of equals"),
        (
            "  - predicateType: t\n    conditions:\n      - field: a\n"
            "        equals: 1\n        in: [1]\n",
            "exactly one of equals",
        ),
        (
            "  - predicateType: t\n    conditions:\n      - field: a\n        in: []\n",
            "non-empty list",
        ),
        (
            "  - predicateType: t\n    conditions:\n      - field: a\n        matches: '('\n",
            "invalid regular",
        ),
        ("  - predicateType: t\n    conditions:\n      - anyOf: []\n", "non-empty list"),
        (
            "  - predicateType: t\n    conditions:\n      - field: a\n        exist: true\n",
            "unknown field",
        ),
    ]
    for cond, reason in bad_conditions:
        err = error_of(doc(base + "attestations:\n" + cond))
        assert reason in err.reason, (cond, err)
        assert err.line is not None and err.line > 15


def test_rego_errors_point_into_the_module() -> None:
    base = PEM_SIG
    rego = (
        "attestations:\n"
        "  - predicateType: t\n"
        "    rego: |\n"
        "      package x\n"
        "      import rego.v1\n"
        "      deny contains m if {{ bad\n"
    )
    text = doc(base + rego)
    err = error_of(text)
    assert "Rego" in err.reason
    expected = text.splitlines().index("          deny contains m if {{ bad") + 1
    assert err.line == expected


def test_rego_without_deny_and_impure_builtins_are_refused() -> None:
    base = PEM_SIG
    no_deny = (
        "attestations:\n  - predicateType: t\n    rego: |\n      package x\n      allow := true\n"
    )
    assert "must define a 'deny' set" in error_of(doc(base + no_deny)).reason
    impure = (
        "attestations:\n  - predicateType: t\n    rego: |\n      package x\n      import rego.v1\n"
        '      deny contains m if { r := http.send({}); m := "x" }\n'
    )
    assert "http.send is not allowed" in error_of(doc(base + impure)).reason


def test_digest_covers_key_file_content(tmp_path: Path) -> None:
    path = key_policy(tmp_path)
    (first,) = load_policy_file(path)
    (again,) = load_policy_file(path)
    assert first.digest == again.digest
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "k.pub").write_bytes(other)
    (changed,) = load_policy_file(path)
    assert changed.digest != first.digest  # same YAML, other key: another policy


def test_digest_changes_with_any_edit() -> None:
    (a,) = parse_policies(doc(ARTIFACT), "a.yaml")
    (b,) = parse_policies(doc(ARTIFACT, mode="warn"), "a.yaml")
    (c,) = parse_policies(doc(ARTIFACT), "elsewhere.yaml")
    assert a.digest != b.digest
    assert a.digest == c.digest  # where the file lives does not change what it means


def test_policy_set_names_unique_and_digest(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(doc(ARTIFACT, name="a"))
    (tmp_path / "b.yml").write_text(doc(ARTIFACT, name="b"))
    (tmp_path / "README.md").write_text("not a policy")
    ps = load_policies([tmp_path])
    assert [p.name for p in ps] == ["a", "b"]
    (tmp_path / "c.yaml").write_text(doc(ARTIFACT, name="a"))
    with pytest.raises(PolicyLoadError, match="already used"):
        load_policies([tmp_path])
    (tmp_path / "c.yaml").unlink()
    before = ps.digest
    (tmp_path / "b.yml").write_text(doc(ARTIFACT, name="b", mode="warn"))
    assert load_policies([tmp_path]).digest != before


def test_shipped_policies_load() -> None:
    root = Path(__file__).parents[3] / "policies"
    ps = load_policies([root])
    assert len(ps) >= 6
    for p in ps:
        assert p.description
