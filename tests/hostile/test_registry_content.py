"""Hostile registry, content and transport classes (SECURITY.md cases 1, 2, 4, 5, 6, 7, 9).

Each test serves one crafted lie from :class:`CraftedRegistry` and checks that the pull
refuses it with the error class that names it, and that nothing reached the output.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from modelreg import Client, RemoteOptions
from modelreg.errors import (
    IntegrityError,
    SizeLimitError,
    UnsafeContentError,
)
from tests.hostile.crafted import CraftedRegistry, Reply, Seen, docker_login, sha256

WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_TAR = "application/vnd.cncf.model.weight.v1.tar"
WEIGHT_TAR_GZ = "application/vnd.cncf.model.weight.v1.tar+gzip"
TITLE = "org.opencontainers.image.title"


def _pull(server: CraftedRegistry, tag: str, out: Path, **options: object) -> None:
    with Client(RemoteOptions(**options)) as client:  # type: ignore[arg-type]
        client.pull(f"{server.host}/m:{tag}", out, cache=False)


def _tar(members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info in members:
            body = (data or {}).get(info.name)
            tar.addfile(info, io.BytesIO(body) if body is not None else None)
    return buf.getvalue()


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))


def test_tampered_blob_is_refused_and_nothing_written(
    registry: CraftedRegistry, tmp_path: Path
) -> None:
    good = b"weights" * 1000
    registry.model("m", "v1", [(WEIGHT, good, {TITLE: "w.bin"})])
    registry.blob("m", b"WEIGHTS" * 1000, digest=sha256(good))
    out = tmp_path / "out"
    with pytest.raises(IntegrityError):
        _pull(registry, "v1", out)
    _assert_nothing_written(out)


@pytest.mark.parametrize("change", ["truncated", "trailing"])
def test_truncated_or_padded_blob_is_refused(
    registry: CraftedRegistry, tmp_path: Path, change: str
) -> None:
    good = b"0123456789" * 500
    registry.model("m", "v1", [(WEIGHT, good, {TITLE: "w.bin"})])
    served = good[:-7] if change == "truncated" else good + b"extra"
    registry.blob("m", served, digest=sha256(good))
    out = tmp_path / "out"
    with pytest.raises(IntegrityError, match="its descriptor declares 5000"):
        _pull(registry, "v1", out)
    _assert_nothing_written(out)


def test_manifest_that_does_not_hash_to_its_digest_is_refused(
    registry: CraftedRegistry, tmp_path: Path
) -> None:
    registry.model("m", "v1", [(WEIGHT, b"w", {TITLE: "w.bin"})])
    honest = registry.manifest("m", b'{"schemaVersion": 2, "layers": []}')
    liar = json.dumps({"schemaVersion": 2, "mediaType": "x", "layers": []}).encode()
    registry.manifest("m", liar, digest=honest)
    out = tmp_path / "out"
    with Client() as client, pytest.raises(IntegrityError):
        client.pull(f"{registry.host}/m@{honest}", out, cache=False)
    _assert_nothing_written(out)


def test_oversized_manifest_is_refused_before_it_is_read_whole(
    registry: CraftedRegistry, tmp_path: Path
) -> None:
    huge = b"{" + b" " * (8 * 1024 * 1024) + b"}"
    registry.manifest("m", huge, tag="v1")
    with pytest.raises(SizeLimitError):
        _pull(registry, "v1", tmp_path / "out")


@pytest.mark.parametrize(
    "title", ["../escape.bin", "/etc/escape.bin", "a\\..\\b.bin", "nul\x00.bin", "a/../../x"]
)
def test_layer_title_escaping_the_output_is_refused(
    registry: CraftedRegistry, tmp_path: Path, title: str
) -> None:
    registry.model("m", "v1", [(WEIGHT, b"w", {TITLE: title})])
    out = tmp_path / "out"
    with pytest.raises(UnsafeContentError):
        _pull(registry, "v1", out)
    _assert_nothing_written(out)
    assert not (tmp_path / "escape.bin").exists()


def test_titles_colliding_after_normalisation_are_refused(
    registry: CraftedRegistry, tmp_path: Path
) -> None:
    registry.model("m", "v1", [(WEIGHT, b"a", {TITLE: "W.bin"}), (WEIGHT, b"b", {TITLE: "w.bin"})])
    with pytest.raises(UnsafeContentError):
        _pull(registry, "v1", tmp_path / "out")


def _member(name: str, kind: bytes, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


@pytest.mark.parametrize(
    "member",
    [
        _member("dev", tarfile.CHRTYPE, devmajor=1, devminor=3),
        _member("fifo", tarfile.FIFOTYPE),
        _member("/abs.bin", tarfile.REGTYPE),
        _member("../up.bin", tarfile.REGTYPE),
        _member("ln", tarfile.SYMTYPE, linkname="/etc/passwd"),
        _member("hl", tarfile.LNKTYPE, linkname="/etc/passwd"),
    ],
    ids=["char-device", "fifo", "absolute", "dotdot", "abs-symlink", "abs-hardlink"],
)
def test_archive_member_kinds_that_escape_or_are_devices_are_refused(
    registry: CraftedRegistry, tmp_path: Path, member: tarfile.TarInfo
) -> None:
    ok = _member("ok.txt", tarfile.REGTYPE, size=2)
    layer = _tar([ok, member], {"ok.txt": b"ok"})
    registry.model("m", "v1", [(WEIGHT_TAR, layer, {TITLE: "dir"})])
    out = tmp_path / "out"
    with pytest.raises(UnsafeContentError):
        _pull(registry, "v1", out)
    _assert_nothing_written(out)


def test_decompression_bomb_is_bounded(registry: CraftedRegistry, tmp_path: Path) -> None:
    member = _member("bomb.bin", tarfile.REGTYPE, size=128 * 1024 * 1024)
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9) as gz:
        gz.write(member.tobuf(tarfile.PAX_FORMAT))
        zeros = bytes(1024 * 1024)
        for _ in range(128):
            gz.write(zeros)
    layer = raw.getvalue()
    assert len(layer) < 2 * 1024 * 1024  # a small layer that claims to be huge inside
    registry.model("m", "v1", [(WEIGHT_TAR_GZ, layer, {TITLE: "dir"})])
    out = tmp_path / "out"
    with pytest.raises(SizeLimitError):
        _pull(registry, "v1", out)
    _assert_nothing_written(out)


def test_redirect_to_another_host_does_not_forward_credentials(
    registry: CraftedRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"redirected weights"
    docker_login(monkeypatch, tmp_path, registry.host, b"alice:s3cret")
    registry.challenge = 'Basic realm="hostile"'
    registry.model("m", "v1", [(WEIGHT, data, {TITLE: "w.bin"})])
    with CraftedRegistry() as elsewhere:
        digest = elsewhere.blob("m", data)

        def redirect(seen: Seen) -> Reply:
            return Reply(307, {"Location": f"http://{elsewhere.host}/v2/m/blobs/{digest}"})

        registry.route("GET", rf"/v2/m/blobs/{digest}", redirect)
        _pull(registry, "v1", tmp_path / "out")
        assert (tmp_path / "out" / "w.bin").read_bytes() == data
        assert any("authorization" in s.headers for s in registry.requests)
        fetched = [s for s in elsewhere.requests if s.path.endswith(digest)]
        assert fetched, "the redirect was not followed"
        assert all("authorization" not in s.headers for s in fetched)
