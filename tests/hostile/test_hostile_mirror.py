"""A hostile mirror (SECURITY.md case 1 through a mirror): a mirror is untrusted.

The upstream and the mirror are both :class:`CraftedRegistry` servers, configured only
through a ``hosts.toml``. What the mirror serves is verified exactly like what the
upstream serves: a tampered blob, a tampered manifest or a blob whose length lies is
skipped, the mirror reported untrusted, and the content read from the upstream instead
(a streamed blob from byte 0, into fresh staging); nothing tampered reaches the output.
Only when the upstream lies too does the pull fail, with nothing written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
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


# ---------------------------------------------------------------- one blob at a time

OTHER = b"other-blob" * 1000
BIG = bytes(range(256)) * 4096  # 1 MiB: streamed, not read whole with its headers
BIG_TAMPERED = BIG[:-1] + bytes([BIG[-1] ^ 0xFF])  # wrong in the part read last


def _hosts(tmp_path: Path, upstream: CraftedRegistry, *mirrors: str) -> RemoteOptions:
    hosts = tmp_path / "certs.d" / upstream.host
    hosts.mkdir(parents=True)
    tables = "".join(f'[host."{m}"]\n  capabilities = ["pull", "resolve"]\n' for m in mirrors)
    (hosts / "hosts.toml").write_text(f'server = "http://{upstream.host}"\n{tables}')
    return RemoteOptions(hosts_dirs=(str(tmp_path / "certs.d"),), on_warning=lambda _: None)


def test_a_wrong_blob_is_read_again_alone_the_others_are_not_restarted(tmp_path: Path) -> None:
    """The mirror lies about w.bin while o.bin, served honestly, is still in flight: only
    w.bin is read again (from the upstream); o.bin is read once, from the mirror."""
    other_sent = threading.Event()

    def other(_: Seen) -> Reply:
        def body() -> Iterator[bytes]:
            yield OTHER
            other_sent.set()

        return Reply(200, {"Content-Length": str(len(OTHER))}, body())

    def wrong(_: Seen) -> Reply:
        def body() -> Iterator[bytes]:
            # the lie is told once o.bin went out whole: both blobs are in flight together
            other_sent.wait(timeout=60)
            yield TAMPERED

        return Reply(200, {"Content-Length": str(len(GOOD))}, body())

    layers = [(WEIGHT, GOOD, {TITLE: "w.bin"}), (WEIGHT, OTHER, {TITLE: "o.bin"})]
    with CraftedRegistry() as upstream, CraftedRegistry() as mirror:
        for server in (upstream, mirror):
            server.model("m", "v1", layers)
        mirror.route("GET", rf"/v2/m/blobs/{sha256(GOOD)}(\?.*)?", wrong)
        mirror.route("GET", rf"/v2/m/blobs/{sha256(OTHER)}(\?.*)?", other)
        options = _hosts(tmp_path, upstream, f"http://{mirror.host}")
        with Client(options) as client:
            client.pull(f"{upstream.host}/m:v1", tmp_path / "out", cache=False)
        assert (tmp_path / "out" / "w.bin").read_bytes() == GOOD
        assert (tmp_path / "out" / "o.bin").read_bytes() == OTHER
        assert mirror.count("GET", rf"/v2/m/blobs/{sha256(OTHER)}.*") == 1
        assert upstream.count("GET", rf"/v2/m/blobs/{sha256(OTHER)}.*") == 0  # not restarted
        assert mirror.count("GET", rf"/v2/m/blobs/{sha256(GOOD)}.*") == 1
        assert upstream.count("GET", rf"/v2/m/blobs/{sha256(GOOD)}.*") == 1


def _cut(data: bytes) -> Callable[[Seen], Reply]:
    """A reply that promises the whole blob and closes the connection halfway."""

    def answer(_: Seen) -> Reply:
        return Reply(200, {"Content-Length": str(len(data))}, data[: len(data) // 2], cut=True)

    return answer


def test_a_mirror_that_cuts_mid_blob_hands_the_rest_to_the_upstream(
    pair: tuple[CraftedRegistry, CraftedRegistry], tmp_path: Path
) -> None:
    upstream, mirror = pair
    for server in pair:
        server.model("m", "v1", [(WEIGHT, BIG, {TITLE: "w.bin"})])
    mirror.route("GET", rf"/v2/m/blobs/{sha256(BIG)}(\?.*)?", _cut(BIG))
    warnings: list[str] = []
    _pull(upstream, mirror, tmp_path, warnings)
    assert (tmp_path / "out" / "w.bin").read_bytes() == BIG
    asked = [s for s in upstream.requests if s.path.startswith(f"/v2/m/blobs/{sha256(BIG)}")]
    # the upstream was asked for the rest only, from where the mirror broke off
    assert [s.headers.get("range") for s in asked] == [f"bytes={len(BIG) // 2}-{len(BIG) - 1}"]
    assert any(mirror.host in w and "broke at byte" in w for w in warnings), warnings


def test_after_the_last_source_the_error_names_every_source_and_what_it_did(
    tmp_path: Path,
) -> None:
    with (
        CraftedRegistry() as upstream,
        CraftedRegistry() as liar,
        CraftedRegistry() as cutter,
    ):
        for server in (upstream, liar, cutter):
            server.model("m", "v1", [(WEIGHT, BIG, {TITLE: "w.bin"})])
        for server in (upstream, liar):
            server.blob("m", BIG_TAMPERED, digest=sha256(BIG))
        cutter.route("GET", rf"/v2/m/blobs/{sha256(BIG)}(\?.*)?", _cut(BIG))
        options = _hosts(tmp_path, upstream, f"http://{liar.host}", f"http://{cutter.host}")
        with Client(options) as client, pytest.raises(IntegrityError) as info:
            client.pull(f"{upstream.host}/m:v1", tmp_path / "out", cache=False)
        error = info.value
        assert not isinstance(error, MirrorIntegrityError)
        assert upstream.host in error.message
        hint = error.hint or ""
        assert f"{liar.host}: wrong bytes" in hint, hint
        assert f"{cutter.host}: unreachable or broke off" in hint, hint
        # bounded: each mirror was asked for the blob once (the cutter twice: one resume)
        assert liar.count("GET", rf"/v2/m/blobs/{sha256(BIG)}.*") == 1
        assert cutter.count("GET", rf"/v2/m/blobs/{sha256(BIG)}.*") == 2
        assert _nothing_written(tmp_path / "out")
