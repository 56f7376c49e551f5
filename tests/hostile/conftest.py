"""Fixtures the hostile tests share.

The isolation (own home, no proxies) comes from the root ``tests/conftest.py``; a module
that needs a registry with content already in it defines its own ``registry``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hostile.crafted import CraftedRegistry


@pytest.fixture
def registry() -> Iterator[CraftedRegistry]:
    """An empty crafted registry: each test puts in what its attack needs."""
    with CraftedRegistry() as server:
        yield server
