"""Directories as oras-py 0.2.x pushes them (issue 15 failure 2): one
``image.layer.v1.tar+gzip`` layer with only a title, members under the title.

Read as a directory, with every archive rule; never when Go oras's annotation says
it is a file, nor when the title names an archive file."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from modelreg.content import MemoryTarget
from modelreg.content.base import bytes_source
from modelreg.errors import UnsafeContentError
from modelreg.model.producers import plan_manifest
from modelreg.model.unpack import unpack
from modelreg.oci import Descriptor, Manifest
from modelreg.oci.manifest import empty_config

TARGZ = "application/vnd.oci.image.layer.v1.tar+gzip"
TITLE = "org.opencontainers.image.title"


def targz(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    return gzip.compress(tar_bytes(members, links), mtime=0)


def tar_bytes(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """An uncompressed tar of ``members`` (name to bytes) and symbolic ``links``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return raw.getvalue()


def oras_py(blob: bytes, annotations: dict[str, str], media_type: str = TARGZ):
    src = MemoryTarget()
    d = Descriptor.for_bytes(media_type, blob, annotations)
    src.push(d, bytes_source(blob))
    src.push(empty_config(), bytes_source(b"{}"))
    return src, Manifest(config=empty_config(), layers=(d,))


def test_an_oras_py_directory_is_extracted(tmp_path):
    blob = targz({"1_Pooling/config.json": b"{}", "1_Pooling/deep/n.txt": b"n"})
    src, m = oras_py(blob, {TITLE: "1_Pooling"})
    assert len(plan_manifest(m).archives) == 1
    unpack(src, m, tmp_path / "out", fsync=False)
    assert (tmp_path / "out/1_Pooling/config.json").read_bytes() == b"{}"
    assert (tmp_path / "out/1_Pooling/deep/n.txt").read_bytes() == b"n"


@pytest.mark.parametrize("title", ["model.tar.gz", "data.tgz", "x.TAR", "weights.gz"])
def test_a_tar_gz_file_stays_a_file(tmp_path, title):
    blob = targz({"inner.txt": b"i"})
    src, m = oras_py(blob, {TITLE: title})
    unpack(src, m, tmp_path / "out", fsync=False)
    assert (tmp_path / "out" / title).read_bytes() == blob


def test_go_oras_unpack_false_stays_a_file(tmp_path):
    blob = targz({"d/inner.txt": b"i"})
    src, m = oras_py(blob, {TITLE: "d", "io.deis.oras.content.unpack": "false"})
    unpack(src, m, tmp_path / "out", fsync=False)
    assert (tmp_path / "out" / "d").read_bytes() == blob


def test_a_file_layer_of_oras_py_stays_a_file(tmp_path):
    blob = targz({"d/inner.txt": b"i"})
    src, m = oras_py(blob, {TITLE: "d"}, "application/vnd.oci.image.layer.v1.tar")
    unpack(src, m, tmp_path / "out", fsync=False)
    assert (tmp_path / "out" / "d").read_bytes() == blob


def test_members_outside_the_title_are_refused(tmp_path):
    src, m = oras_py(targz({"d/a": b"a", "elsewhere.txt": b"x"}), {TITLE: "d"})
    with pytest.raises(UnsafeContentError):
        unpack(src, m, tmp_path / "out", fsync=False)
    assert not (tmp_path / "out").exists()


def test_a_link_leading_outside_is_refused(tmp_path):
    blob = targz({"d/a": b"a"}, {"d/r": "../..", "d/x": "r/../../.."})
    src, m = oras_py(blob, {TITLE: "d"})
    with pytest.raises(UnsafeContentError):
        unpack(src, m, tmp_path / "out", fsync=False)
    assert not (tmp_path / "out").exists()
