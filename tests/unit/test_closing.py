"""Closing: ``with`` returns the object and closes it however the block ends."""

from __future__ import annotations

import pytest

from modelreg._closing import Closing


class _Resource(Closing):
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_with_returns_the_object_and_closes_it() -> None:
    resource = _Resource()
    with resource as entered:
        assert entered is resource
        assert resource.closed == 0
    assert resource.closed == 1


def test_an_error_in_the_block_still_closes_and_propagates() -> None:
    resource = _Resource()
    with pytest.raises(KeyError), resource:
        raise KeyError("x")
    assert resource.closed == 1
