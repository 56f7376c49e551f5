"""The interop suite runs against the same real Distribution registries as the
integration suite: its fixtures are imported from ``tests/integration/conftest.py``
(one implementation, two suites)."""

from __future__ import annotations

from tests.integration.conftest import (  # noqa: F401  (fixtures)
    registry_factory,
    registry_plain,
)
