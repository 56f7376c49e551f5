"""What every test gets, whatever module it is in.

* **Its own modelreg home, docker config and no proxies** (:func:`tests.isolation.isolate`),
  so no test reads what another left or what the machine's user has configured.
* **A clock that looks freshly booted.** ``time.monotonic()`` counts from the boot of the
  machine; a CI machine booted a minute ago reads ~60, a developer's laptop reads days. A
  test that mixes a fake clock starting at 1000 with real monotonic deadlines passes on the
  laptop and fails on CI. Here ``time.monotonic`` starts near 1 s for every test session,
  so that class of bug fails everywhere, not only on fresh machines.
* **Loopback only.** A connection or name lookup for anything but a loopback address
  fails the way it does on a machine without network: tests must never depend on (or leak
  to) the outside, and this makes a test that does fail on the developer's machine too.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.isolation import isolate

_REAL_MONOTONIC = time.monotonic
_BOOT_OFFSET = _REAL_MONOTONIC() - 1.0


def _freshly_booted_monotonic() -> float:
    return _REAL_MONOTONIC() - _BOOT_OFFSET


time.monotonic = _freshly_booted_monotonic


def _is_loopback(host: object) -> bool:
    if not isinstance(host, str):
        return False
    if host in ("localhost", "localhost.", ""):
        return True
    name = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(name).is_loopback or ipaddress.ip_address(name).is_unspecified
    except ValueError:
        return name.endswith(".localhost")


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _check(sock: socket.socket, address: Any) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
        raise ConnectionRefusedError(f"tests reach only loopback, not {address[0]!r}")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check(self, address)
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check(self, address)
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if host is not None and not _is_loopback(host.decode() if isinstance(host, bytes) else host):
        raise socket.gaierror(socket.EAI_NONAME, f"tests resolve only loopback, not {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
socket.getaddrinfo = _guarded_getaddrinfo


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    isolate(tmp_path, monkeypatch)
    yield


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The test's ``MODELREG_HOME`` (already set by the autouse isolation)."""
    return tmp_path / "home"
