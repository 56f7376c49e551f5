"""RemoteOptions.timeout reaches the registry client: a stuck registry gives up early."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from modelreg.client import Client, RemoteOptions
from modelreg.errors import InvalidInputError, ModelRegError
from tests.listeners import silent_listener


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback listener that accepts connections and never answers."""
    with silent_listener() as port:
        yield f"127.0.0.1:{port}"


def test_timeout_bounds_a_stuck_registry(silent_server: str) -> None:
    with Client(RemoteOptions(plain_http=True, timeout=0.2)) as client:
        assert client.registry(silent_server).timeout == 0.2
        start = time.monotonic()
        with pytest.raises(ModelRegError) as info:
            client.inspect(f"{silent_server}/team/llm:v1")
        elapsed = time.monotonic() - start
    assert "did not answer in time" in str(info.value)
    # retries included, far below the 60 s default a stuck registry used to cost
    assert elapsed < 15, elapsed


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_timeout_must_be_positive(bad: float) -> None:
    with pytest.raises(InvalidInputError, match="timeout must be a positive number"):
        RemoteOptions(timeout=bad)


def test_cli_reads_modelreg_timeout(
    silent_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    from modelreg_cli.main import app
    from typer.testing import CliRunner

    monkeypatch.setenv("MODELREG_HOME", str(tmp_path))
    runner = CliRunner()
    monkeypatch.setenv("MODELREG_TIMEOUT", "soon")
    bad = runner.invoke(app, ["inspect", f"{silent_server}/team/llm:v1"])
    assert bad.exit_code != 0
    assert "MODELREG_TIMEOUT='soon' is not a positive number of seconds" in bad.output
    monkeypatch.setenv("MODELREG_TIMEOUT", "0.2")
    start = time.monotonic()
    stuck = runner.invoke(app, ["inspect", f"{silent_server}/team/llm:v1", "--plain-http"])
    assert stuck.exit_code != 0
    assert "did not answer in time" in stuck.output
    assert time.monotonic() - start < 15
