"""Documentation blocks that name ``localhost:5000`` run against the integration
suite's loopback Distribution registry, those that name ``localhost:5443`` against a
fresh basic-auth TLS one: their fixtures, imported from there."""

from __future__ import annotations

from tests.integration.conftest import (  # noqa: F401  (fixtures)
    registry_factory,
    registry_plain,
)
