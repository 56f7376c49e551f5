"""A hostile mirror (SECURITY.md case 1 through a mirror): a mirror is untrusted.

The upstream and the mirror are both :class:`CraftedRegistry` servers, configured only
through a ``hosts.toml``. What the mirror serves is verified exactly like what the
upstream serves: a tampered blob, a tampered manifest or a blob whose length lies is
skipped, the mirror reported untrusted, and the content read from the upstream instead
(a streamed blob from byte 0, into fresh staging); nothing tampered reaches the output.
Only when the upstream lies too does the pull fail, with nothing written.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelreg import Client, RemoteOptions
from modelreg.errors import IntegrityError, MirrorIntegrityError
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


TAMPERED = b"WEIGHTS" + GOOD[7:]  # same size: only the digest can tell


def test_tampered_blob_from_the_mirror_is_skipped_and_read_from_upstream(
    pair: tuple[CraftedRegistry, CraftedRegistry], tmp_path: Path
) -> None:
    upstream, mirror = pair
    mirror.blob("m", TAMPERED, digest=sha256(GOOD))
    warnings: list[str] = []
    _pull(upstream, mirror, tmp_path, warnings)
    assert (tmp_path / "out" / "w.bin").read_bytes() == GOOD
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["w.bin"]  # no staging left
    untrusted = [w for w in warnings if mirror.host in w and "untrusted" in w]
    assert len(untrusted) == 1, warnings
    assert mirror.count("GET", rf"/v2/m/blobs/{sha256(GOOD)}.*") == 1  # never asked again
    assert upstream.count("GET", rf"/v2/m/blobs/{sha256(GOOD)}.*") == 1


def test_tampered_blob_from_the_mirror_and_the_upstream_fails_with_nothing_written(
    pair: tuple[CraftedRegistry, CraftedRegistry], tmp_path: Path
) -> None:
    upstream, mirror = pair
    for server in (upstream, mirror):
        server.blob("m", TAMPERED, digest=sha256(GOOD))
    warnings: list[str] = []
    with pytest.raises(IntegrityError) as info:
        _pull(upstream, mirror, tmp_path, warnings)
    # the last source's failure: a plain integrity error naming the upstream
    assert not isinstance(info.value, MirrorIntegrityError)
    assert upstream.host in info.value.message
    assert any(mirror.host in w and "untrusted" in w for w in warnings), warnings
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
