from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.wasm.example import Example, build_example


@pytest.fixture(scope="session")
def example(tmp_path_factory: pytest.TempPathFactory) -> Example:
    return build_example(Path(tmp_path_factory.mktemp("wasm-mlp")))
