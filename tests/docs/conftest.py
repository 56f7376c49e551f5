"""Documentation blocks that name ``localhost:5000`` run against the integration
suite's loopback Distribution registry: its fixture, imported from there."""

from __future__ import annotations

from tests.integration.conftest import registry_plain  # noqa: F401  (fixture)
