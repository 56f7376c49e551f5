"""A hostile mirror (SECURITY.md case 1 through a mirror): a mirror is untrusted.

The upstream and the mirror are both :class:`CraftedRegistry` servers, configured only
through a ``hosts.toml``. What the mirror serves is verified exactly like what the
upstream serves: a tampered blob is refused with nothing written; a tampered manifest
or a blob whose length lies is skipped, reported, and read from the upstream instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelreg import Client, RemoteOptions
from modelreg.errors import IntegrityError
from tests.hostile.crafted import CraftedRegistry, Reply, Seen, sha256

WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
TITLE = "org.opencontainers.image.title"
GOOD = b"weights" * 1000


@pytest.fixture
def pair() -> Iterator[tuple[CraftedRegistry, CraftedRegistry]]:
    """(upstream, mirror), both serving the same model ``m:v1``."""
    with CraftedRegistry() as upstream, CraftedRegistry() as mirror:
        for server in (upstream, mirror):
            server.model("m", "v1", [(WEIGHT, GOOD, {TITLE: "w.bin"})])
        yield upstream, mirror


def _pull(
    upstream: CraftedRegistry, mirror: CraftedRegistry, tmp_path: Path, warnings: list[str]
) -> object:
    hosts = tmp_path / "certs.d" / upstream.host
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(
        f'server = "http://{upstream.host}"\n'
        f'[host."http://{mirror.host}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    options = RemoteOptions(hosts_dirs=(str(tmp_path / "certs.d"),), on_warning=warnings.append)
    with Client(options) as client:
        return client.pull(f"{upstream.host}/m:v1", tmp_path / "out", cache=False)


def _nothing_written(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


def test_tampered_blob_from_the_mirror_is_refused_and_nothing_written(
    pair: tuple[CraftedRegistry, CraftedRegistry], tmp_path: Path
) -> None:
    upstream, mirror = pair
    tampered = b"WEIGHTS" + GOOD[7:]  # same size: only the digest can tell
    mirror.blob("m", tampered, digest=sha256(GOOD))
    with pytest.raises(IntegrityError) as info:
        _pull(upstream, mirror, tmp_path, [])
    assert mirror.host in info.value.message  # the error names the lying host
    assert _nothing_written(tmp_path / "out")


def test_tampered_manifest_from_the_mirror_is_skipped_and_read_from_upstream(
    pair: tuple[CraftedRegistry, CraftedRegistry], tmp_path: Path
) -> None:
    upstream, mirror = pair
    manifest_digest = upstream.model("m", "v1", [(WEIGHT, GOOD, {TITLE: "w.bin"})])
    mirror.manifest("m", b'{"schemaVersion": 2, "layers": []}', digest=manifest_digest)
    warnings: list[str] = []
    _pull(upstream, mirror, tmp_path, warnings)
    assert (tmp_path / "out" / "w.bin").read_bytes() == GOOD
    assert any(mirror.host in w and "not used again" in w for w in warnings), warnings
    # distrusted: the blob was read from the upstream, not from the lying mirror
    assert mirror.count("GET", r"/v2/m/blobs/.*") == 0
    assert upstream.count("GET", r"/v2/m/blobs/.*") >= 1


def test_blob_with_a_lying_length_is_skipped(
    pair: tuple[CraftedRegistry, CraftedRegistry], tmp_path: Path
) -> None:
    upstream, mirror = pair

    def lie(_: Seen) -> Reply:
        return Reply(200, {"Content-Length": str(len(GOOD) + 5)}, GOOD + b"extra")

    mirror.route("GET", rf"/v2/m/blobs/{sha256(GOOD)}(\?.*)?", lie)
    warnings: list[str] = []
    _pull(upstream, mirror, tmp_path, warnings)
    assert (tmp_path / "out" / "w.bin").read_bytes() == GOOD
    assert any(mirror.host in w for w in warnings), warnings
