"""safe_relpath: the one-match fast path for plain names never accepts what the full
check refuses, nor answers differently from it."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import modelreg.model.paths as paths
from modelreg.errors import UnsafeContentError
from modelreg.model.paths import safe_relpath


def _full_check(raw: str) -> str | None:
    """What safe_relpath answers with its fast path switched off (None: refused)."""
    fast = paths._PLAIN
    paths._PLAIN = re.compile(r"(?!)")  # matches nothing: every name takes the full check
    try:
        return safe_relpath(raw)
    except UnsafeContentError:
        return None
    finally:
        paths._PLAIN = fast


@pytest.mark.parametrize(
    "raw", ["a", "a/b.json", "part1/sub2/f000001.json", "a b/c", "aa:b", "v1.0/x"]
)
def test_plain_names_take_the_fast_path(raw: str) -> None:
    assert paths._PLAIN.fullmatch(raw)
    assert safe_relpath(raw) == raw


@pytest.mark.parametrize(
    "raw",
    ["", "/a", "a/", "a//b", "./a", "a/./b", "a/../b", "..", ".", "C:x", "a\\b", "a\x00b", ".b"],
)
def test_other_names_take_the_full_check(raw: str) -> None:
    assert not paths._PLAIN.fullmatch(raw)


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="ab./\\:\x00\x1f\x7f é", max_size=14))
def test_fast_path_agrees_with_the_full_check(raw: str) -> None:
    try:
        answer: str | None = safe_relpath(raw)
    except UnsafeContentError:
        answer = None
    assert answer == _full_check(raw)
