"""Each test runs against its own modelreg home and docker config, without proxies.

Called from each test module's autouse fixture (with what that module adds), so
nothing of the machine running the tests leaks in: no stored credentials, no
store or cache shared between tests, no proxy in front of the loopback registry.
"""

from __future__ import annotations

from pathlib import Path

import pytest

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")


def isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, fsync: bool = False) -> None:
    """A fresh ``MODELREG_HOME`` and ``DOCKER_CONFIG`` under ``tmp_path``, no proxies,
    the default cache mode, and ``MODELREG_FSYNC=0`` (faster; durability is tested
    where it matters) unless ``fsync``, which leaves modelreg's default on."""
    monkeypatch.setenv("MODELREG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-empty"))
    if fsync:
        monkeypatch.delenv("MODELREG_FSYNC", raising=False)
    else:
        monkeypatch.setenv("MODELREG_FSYNC", "0")
    for var in (*PROXY_VARS, "MODELREG_CACHE_MODE"):
        monkeypatch.delenv(var, raising=False)
