"""Fixtures for the lazy-reader unit tests (helpers in :mod:`tests.unit.lazy.helpers`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelreg.content.memory import MemoryTarget
from modelreg.oci.descriptor import Descriptor
from tests.unit.lazy.helpers import CountingTarget, publish, write_model


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_model(tmp_path / "model")


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELREG_HOME", str(tmp_path / "home"))


@pytest.fixture
def memory_model(model_dir: Path) -> tuple[CountingTarget, Descriptor]:
    inner = MemoryTarget()
    desc = publish(inner, model_dir)
    return CountingTarget(inner), desc
