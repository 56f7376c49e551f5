"""camel_fields (JSON keys from attribute names) and object_list (a capped list of objects)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from modelreg._json import camel_fields, object_list
from modelreg.errors import FormatError


@dataclass(frozen=True)
class _Result:
    digest: str
    bundle_digest: str
    size_a: int
    authorities_satisfied: int


def test_keys_are_camel_case_in_the_order_given() -> None:
    r = _Result("sha256:1", "sha256:2", 3, 4)
    out = camel_fields(r, "size_a", "digest", "authorities_satisfied", "bundle_digest")
    assert list(out.items()) == [
        ("sizeA", 3),
        ("digest", "sha256:1"),
        ("authoritiesSatisfied", 4),
        ("bundleDigest", "sha256:2"),
    ]


def test_values_are_not_converted() -> None:
    @dataclass
    class _Holder:
        items: tuple[int, ...]

    assert camel_fields(_Holder((1, 2)), "items") == {"items": (1, 2)}


def test_object_list_returns_the_objects() -> None:
    doc = {"subject": [{"name": "a"}, {"name": "b"}]}
    assert object_list(doc, "subject", what="stmt", limit=2, counted="lists {} subjects") == [
        {"name": "a"},
        {"name": "b"},
    ]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "stmt: subject must be a non-empty list"),
        ({"subject": []}, "stmt: subject must be a non-empty list"),
        ({"subject": {"name": "a"}}, "stmt: subject must be a non-empty list"),
        ({"subject": [{}, {}, {}]}, r"stmt lists 3 subjects \(limit 2\)"),
        ({"subject": [{}, "x"]}, r"stmt: subject\[1\] must be an object"),
    ],
)
def test_object_list_refusals_name_the_document_and_key(
    doc: dict[str, object], message: str
) -> None:
    with pytest.raises(FormatError, match=message):
        object_list(doc, "subject", what="stmt", limit=2, counted="lists {} subjects")
