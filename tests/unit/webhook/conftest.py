"""The fake registry the webhook's unit tests decide against."""

from __future__ import annotations

import pytest

from tests.unit.webhook.fakeregistry import FakeClient

REG = "reg.example.com"


@pytest.fixture
def client() -> FakeClient:
    """Three models at ``v1``: ``good`` and ``other`` hold safetensors, ``pickled`` a
    pickle (what a no-pickle rule refuses)."""
    c = FakeClient()
    c.push_model(f"{REG}/models/good", "v1", {"model.safetensors": b"weights"})
    c.push_model(f"{REG}/models/other", "v1", {"model.safetensors": b"more weights"})
    c.push_model(f"{REG}/models/pickled", "v1", {"model.bin": b"pickle"})
    return c
