"""Each test runs against its own modelreg home, docker config and registry hosts
configuration, without proxies.

Called for every test by the root ``tests/conftest.py`` (a module that needs more, such
as fsync on, calls it again from its own fixture), so nothing of the machine running
the tests leaks in: no ``MODELREG_*`` setting (``MODELREG_TEST_*`` are the suite's
own), no stored credentials or passwords, no store, cache or sigstore TUF cache shared
between tests, no proxy in front of the loopback registry.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")
SECRETS = ("COSIGN_PASSWORD", "SIGSTORE_ID_TOKEN")


def isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, fsync: bool = False) -> None:
    """A fresh ``MODELREG_HOME`` and ``DOCKER_CONFIG`` under ``tmp_path``, no proxies,
    the default cache mode, and ``MODELREG_FSYNC=0`` (faster; durability is tested
    where it matters) unless ``fsync``, which leaves modelreg's default on."""
    for var in list(os.environ):
        if var.startswith("MODELREG_") and not var.startswith("MODELREG_TEST_"):
            monkeypatch.delenv(var)
    for var in (*PROXY_VARS, *SECRETS):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MODELREG_HOME", str(tmp_path / "home"))
    # sigstore-python keeps its TUF cache in the XDG directories: not the user's
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-empty"))
    # per-host registry configuration: never the machine's /etc/containerd/certs.d,
    # ~/.config or /etc/containers/registries.conf (a test writes its own hosts dir)
    monkeypatch.setenv("MODELREG_HOSTS_DIR", str(tmp_path / "hosts.d"))
    monkeypatch.setenv("MODELREG_REGISTRIES_CONF", "")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    if fsync:
        monkeypatch.delenv("MODELREG_FSYNC", raising=False)
    else:
        monkeypatch.setenv("MODELREG_FSYNC", "0")
