"""Issue 19 item 3: which `verify` arguments are directories (`directory_argument`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelreg.verify import directory_argument


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "llm").mkdir()
    (tmp_path / "team" / "llm:v1").mkdir(parents=True)
    return tmp_path


@pytest.mark.parametrize("arg", ["./llm", "../x", "/abs/x", ".", "..", "./team/llm:v1"])
def test_spelled_as_a_path_is_a_path_existing_or_not(cwd: Path, arg: str) -> None:
    assert directory_argument(arg) == Path(arg)


def test_a_bare_name_that_exists_as_a_directory_wins(cwd: Path) -> None:
    assert directory_argument("llm") == Path("llm")
    assert directory_argument("team") == Path("team")


@pytest.mark.parametrize(
    "arg", ["team/llm:v1", "llm:v1", "llm@sha256:" + "a" * 64, "oci:llm", "nothere", "a/b"]
)
def test_references_and_missing_bare_names_are_references(cwd: Path, arg: str) -> None:
    assert directory_argument(arg) is None
