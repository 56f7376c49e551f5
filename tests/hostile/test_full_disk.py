"""A full disk under the output directory or ``MODELREG_HOME`` (a classified error).

A real filesystem that runs out of space: a 1 MiB tmpfs. The suite runs as root in
CI; if the mount is refused these tests fail (they do not skip), because a skipped
test would hide the defence going away.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelreg import Client, RemoteOptions
from modelreg.errors import LocalStorageError
from tests.hostile.crafted import CraftedRegistry

WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
TITLE = "org.opencontainers.image.title"
BIG = 2 * 1024 * 1024


@pytest.fixture
def registry() -> Iterator[CraftedRegistry]:
    with CraftedRegistry() as server:
        server.model("m", "v1", [(WEIGHT, bytes(range(256)) * (BIG // 256), {TITLE: "w.bin"})])
        yield server


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: too small for the 2 MiB model."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _leftovers(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.timeout(60)
def test_full_output_disk_is_a_storage_error(registry: CraftedRegistry, small_disk: Path) -> None:
    out = small_disk / "out"
    with (
        Client(RemoteOptions()) as client,
        pytest.raises(LocalStorageError) as info,
    ):
        client.pull(f"{registry.host}/m:v1", out, cache=False)
    error = info.value
    assert error.exit_code == 14
    assert str(out) in error.message and "full" in error.message
    assert error.needed == BIG and str(BIG) in error.message
    assert error.hint and "modelreg cache prune" in error.hint
    assert _leftovers(small_disk) == []  # no staging, no half-written file


@pytest.mark.timeout(60)
def test_full_store_disk_is_a_storage_error(
    registry: CraftedRegistry,
    small_disk: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELREG_HOME", str(small_disk / "home"))
    out = tmp_path / "out"
    with (
        Client(RemoteOptions()) as client,
        pytest.raises(LocalStorageError) as info,
    ):
        client.pull(f"{registry.host}/m:v1", out, cache=True, cache_mode="copy")
    assert str(small_disk / "home") in info.value.path
    assert info.value.exit_code == 14
    ingest = small_disk / "home" / "store" / "ingest"
    assert not ingest.exists() or _leftovers(ingest) == []
    assert not out.exists() or _leftovers(out) == []
