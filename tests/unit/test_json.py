"""The strict JSON reader and the canonical writer."""

from __future__ import annotations

import pytest

from modelreg._json import canonical_json, loads_strict
from modelreg.errors import FormatError, SizeLimitError


def test_reads_plain_json_from_bytes_or_text() -> None:
    assert loads_strict(b'{"a": [1, 2.5, "\xc3\xa9"]}', what="doc") == {"a": [1, 2.5, "é"]}
    assert loads_strict("[true, null]", what="doc") == [True, None]


def test_duplicate_key_is_refused_naming_the_document_and_key() -> None:
    with pytest.raises(FormatError, match=r"manifest sha256:ab has the key 'a' more than once"):
        loads_strict(b'{"x": {"a": 1, "a": 2}}', what="manifest sha256:ab")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_constants_are_refused(token: str) -> None:
    with pytest.raises(FormatError, match=f"config is not valid JSON: .*{token}"):
        loads_strict(f'{{"v": {token}}}', what="config")


def test_bad_utf8_bad_syntax_and_deep_nesting_are_format_errors_with_the_hint() -> None:
    with pytest.raises(FormatError, match="not valid UTF-8") as info:
        loads_strict(b'{"a": "\xff"}', what="index", hint="re-download it")
    assert info.value.hint == "re-download it"
    with pytest.raises(FormatError, match="index is not valid JSON"):
        loads_strict(b'{"a": ', what="index")
    with pytest.raises(FormatError, match="not valid JSON"):
        loads_strict("[" * 100_000 + "]" * 100_000, what="index")


def test_size_cap_is_checked_before_parsing() -> None:
    assert loads_strict(b"[1]", what="doc", max_bytes=3) == [1]
    with pytest.raises(SizeLimitError, match="doc is 4 bytes, over the 3-byte limit"):
        loads_strict(b"[1 ]", what="doc", max_bytes=3)


def test_canonical_json_is_compact_utf8_and_keeps_or_sorts_key_order() -> None:
    doc = {"b": 1, "a": ["é", {"d": None, "c": True}]}
    assert canonical_json(doc) == '{"b":1,"a":["é",{"d":null,"c":true}]}'.encode()
    assert canonical_json(doc, sort_keys=True) == '{"a":["é",{"c":true,"d":null}],"b":1}'.encode()
    assert loads_strict(canonical_json(doc), what="round trip") == doc


def test_manifests_are_read_with_the_strict_reader() -> None:
    from modelreg.oci.manifest import MAX_MANIFEST_BYTES, parse_manifest_or_index

    doc = b'{"schemaVersion": 2, "schemaVersion": 2, "layers": []}'
    with pytest.raises(FormatError, match="manifest x has the key 'schemaVersion' more than once"):
        parse_manifest_or_index(doc, None, "manifest x")
    with pytest.raises(SizeLimitError, match="this is not a manifest"):
        parse_manifest_or_index(b" " * (MAX_MANIFEST_BYTES + 1), None, "manifest x")
