"""camel_fields: the JSON key is the attribute's name in camelCase, in the order given."""

from __future__ import annotations

from dataclasses import dataclass

from modelreg._json import camel_fields


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
