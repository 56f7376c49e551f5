import pytest

from modelreg.errors import InvalidReferenceError
from modelreg.oci import Digest, Reference

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "kind", "registry", "repository", "tag", "digest"),
    [
        ("localhost:5000/team/llm:v1", "registry", "localhost:5000", "team/llm", "v1", None),
        ("localhost/llm", "registry", "localhost", "llm", None, None),
        ("ghcr.io/org/a/b/c:1.0", "registry", "ghcr.io", "org/a/b/c", "1.0", None),
        (f"registry.example.com/x@{D}", "registry", "registry.example.com", "x", None, D),
        (f"r.io:443/x:t@{D}", "registry", "r.io:443", "x", "t", D),
        ("[::1]:5000/x:y", "registry", "[::1]:5000", "x", "y", None),
        ("llm:v1", "store", None, "llm", "v1", None),
        ("team/llm", "store", None, "team/llm", None, None),
        (f"team/llm@{D}", "store", None, "team/llm", None, D),
        ("a__b-c/d.e", "store", None, "a__b-c/d.e", None, None),
    ],
)
def test_parse_round_trips(text, kind, registry, repository, tag, digest):
    ref = Reference.parse(text)
    assert (ref.kind, ref.registry, ref.repository, ref.tag) == (kind, registry, repository, tag)
    assert (str(ref.digest) if ref.digest else None) == digest
    assert str(ref) == text


@pytest.mark.parametrize(
    ("text", "path", "tag", "digest"),
    [
        ("oci:/tmp/layout", "/tmp/layout", None, None),
        ("oci:/tmp/layout:v1", "/tmp/layout", "v1", None),
        ("oci:rel/dir", "rel/dir", None, None),
        (f"oci:./x@{D}", "./x", None, D),
    ],
)
def test_layout_references(text, path, tag, digest):
    ref = Reference.parse(text)
    assert ref.kind == "layout"
    assert ref.path == path
    assert ref.tag == tag
    assert (str(ref.digest) if ref.digest else None) == digest


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        (" llm:v1", "whitespace"),
        ("LLM:v1", "lowercase"),
        ("llm:", "empty tag"),
        ("llm:-bad", "bad tag"),
        ("localhost:5000", "repository"),
        ("a//b", "bad repository"),
        ("host.io/x@sha256:abc", "sha256"),
        ("host.io/x@md5:" + "a" * 32, "md5"),
        ("bad ref", "bad repository"),
        ("h.io:99999/x", "port"),
        ("x" * 300, "longer than"),
        ("a\nb", "control"),
        ("oci:", "missing layout"),
    ],
)
def test_invalid_references_quote_input_and_explain(text, fragment):
    with pytest.raises(InvalidReferenceError) as info:
        Reference.parse(text)
    message = str(info.value)
    assert fragment in message
    assert repr(text)[:20].strip("'") in message or text == ""
    assert info.value.hint and "reference looks like" in info.value.hint


def test_reference_prefers_digest_for_api_path():
    ref = Reference.parse(f"h.io/x:t@{D}")
    assert ref.reference == D
    assert Reference.parse("h.io/x:t").reference == "t"
    assert Reference.parse("h.io/x").reference is None
    assert ref.with_digest(Digest.parse("sha256:" + "b" * 64)).digest.hex == "b" * 64
    assert ref.name == "h.io/x"
