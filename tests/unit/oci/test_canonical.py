"""The canonicaliser: one spelling per repository, the way Docker/containerd/kubelet read it."""

from __future__ import annotations

import pytest

from modelreg.errors import InvalidReferenceError
from modelreg.oci.canonical import canonical_host, canonical_pattern, canonical_reference
from modelreg.policy import Glob, PolicyLoadError, parse_policies

DIGEST = "sha256:" + "c" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Registry.Example.com/models/llm:v1", "registry.example.com/models/llm:v1"),
        ("registry.example.com:443/models/llm:v1", "registry.example.com/models/llm:v1"),
        ("registry.example.com:0443/models/llm", "registry.example.com/models/llm"),
        ("registry.example.com:80/models/llm", "registry.example.com:80/models/llm"),
        ("registry.example.com:05000/m", "registry.example.com:5000/m"),
        ("index.docker.io/acme/m:v1", "docker.io/acme/m:v1"),
        ("registry-1.docker.io/acme/m", "docker.io/acme/m"),
        ("Registry.Hub.Docker.com:443/llm", "docker.io/library/llm"),
        ("docker.io/llm:v1", "docker.io/library/llm:v1"),
        ("docker.io:5000/llm", "docker.io:5000/llm"),
        ("[0:0:0:0:0:0:0:1]:5000/x", "[::1]:5000/x"),
        ("[FE80::A]/x", "[fe80::a]/x"),
        ("[::1]:443/x", "[::1]/x"),
        ("LOCALHOST:5000/x", "localhost:5000/x"),
        ("127.0.0.1:5000/x", "127.0.0.1:5000/x"),
        (f"r.io/a:t@{DIGEST}", f"r.io/a:t@{DIGEST}"),
        ("team/llm:v1", "team/llm:v1"),  # CLI grammar: the local store
        ("oci:/srv/m:v1", "oci:/srv/m:v1"),
    ],
)
def test_store_grammar(text: str, expected: str) -> None:
    assert str(canonical_reference(text)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("llm", "docker.io/library/llm"),
        ("llm:v1", "docker.io/library/llm:v1"),
        ("acme/m:v1", "docker.io/acme/m:v1"),
        ("localhost:5000", "docker.io/library/localhost:5000"),  # no "/": a Hub repo and tag
        ("localhost/x", "localhost/x"),
        ("LOCALHOST/x", "localhost/x"),
        (f"llm@{DIGEST}", f"docker.io/library/llm@{DIGEST}"),
    ],
)
def test_kubelet_grammar(text: str, expected: str) -> None:
    assert str(canonical_reference(text, hostless="docker.io")) == expected


def test_tag_and_digest_keeps_both_and_resolves_by_digest() -> None:
    ref = canonical_reference(f"Index.Docker.io/acme/m:v1@{DIGEST}")
    assert ref.tag == "v1" and str(ref.digest) == DIGEST and ref.reference == DIGEST


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("r.io/Models/llm:v1", "repository names are lowercase"),
        ("Acme/m:v1", "single-label registry host"),
        ("127.1/x", "'127.1'"),
        ("0177.0.0.1/x", "'0177.0.0.1'"),
        ("127.000.000.001/x", "'127.000.000.001'"),
        ("[1:2:3]/x", "not an IPv6 address"),
        ("oci:/srv/m", "kubelet"),
        ("registry.example.com./x", "registry host"),
    ],
)
def test_refused_with_reason_quoting_the_input(text: str, why: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        canonical_reference(text, hostless="docker.io")
    assert repr(text) in info.value.message and why in info.value.message
    assert info.value.hint


def test_canonical_host() -> None:
    assert canonical_host("Index.Docker.IO:443") == "docker.io"
    assert canonical_host("[::FFFF:127.0.0.1]:5000") == "[::ffff:7f00:1]:5000"
    with pytest.raises(InvalidReferenceError):
        canonical_host("r.io:0")


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("Registry.Example.com/models/**", "registry.example.com/models/**"),
        ("registry.example.com:443/models/**", "registry.example.com/models/**"),
        ("index.docker.io/acme/**", "docker.io/acme/**"),
        ("docker.io/llm", "docker.io/library/llm"),
        ("docker.io/*", "docker.io/library/*"),
        ("docker.io/**", "docker.io/**"),
        ("*.Example.com/models/**", "*.example.com/models/**"),
    ],
)
def test_patterns_are_canonicalised(pattern: str, expected: str) -> None:
    assert canonical_pattern(pattern) == expected
    assert Glob(pattern).canonical == expected
    assert Glob(pattern).pattern == pattern  # messages quote what the operator wrote


@pytest.mark.parametrize(
    "pattern", ["*.docker.io/acme/**", "registry.example.com/Models/**", "127.1/x/**"]
)
def test_bad_patterns_refused_at_load(pattern: str) -> None:
    doc = f"""\
apiVersion: modelreg.dev/v1alpha1
kind: ModelPolicy
metadata: {{name: p}}
spec:
  match: {{references: ["{pattern}"]}}
  require: {{artifact: {{noPickle: true}}}}
"""
    with pytest.raises(PolicyLoadError) as info:
        parse_policies(doc, "p.yaml")
    assert "spec.match.references" in str(info.value) and pattern in str(info.value)


def test_alias_pattern_governs_canonical_names() -> None:
    glob = Glob("Index.Docker.io/acme/**")
    assert glob.matches(canonical_reference("registry-1.docker.io/acme/m:v1").name)
    assert Glob("docker.io/llm").matches(canonical_reference("llm", hostless="docker.io").name)
