"""Fixtures shared with the other signing test folders: see ``tests/unit/signing_fixtures.py``."""

from tests.unit.signing_fixtures import *  # noqa: F403
