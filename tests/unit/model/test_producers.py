"""Artifacts other tools write (KitOps, ORAS, Docker, legacy ModelPack), read from the
fixture layout ``testdata/producers`` (made by ``testdata/generate_producers.py``)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from modelreg import errors
from modelreg.content import LayoutStore, MemoryTarget, bytes_source
from modelreg.model.archive import PathClaims
from modelreg.model.producers import detect_producer, plan_manifest
from modelreg.model.unpack import unpack
from modelreg.oci import Descriptor, Manifest
from modelreg.oci import mediatypes as mt
from modelreg.oci.manifest import empty_config, parse_manifest_or_index

TESTDATA = Path(__file__).resolve().parents[3] / "testdata"
PRODUCERS = TESTDATA / "producers"
EXPECTED = json.loads((PRODUCERS / "expected.json").read_text())
GOOD = sorted(k for k, v in EXPECTED.items() if "files" in v)
HOSTILE = sorted(k for k, v in EXPECTED.items() if "error" in v)


def layout_manifest(tag: str) -> tuple[object, Manifest]:
    target = LayoutStore(PRODUCERS, create=False).target(None)
    desc = target.resolve(tag)
    with target.fetch(desc) as r:
        node = parse_manifest_or_index(r.read(), desc.media_type)
    assert isinstance(node, Manifest)
    return target, node


def tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.mark.parametrize("tag", GOOD)
def test_pull_each_producer(tag, tmp_path):
    target, manifest = layout_manifest(tag)
    expected = EXPECTED[tag]
    assert detect_producer(manifest) == expected["producer"]
    cache = LayoutStore(tmp_path / "cache", fsync=False)
    out = tmp_path / "out"
    result = unpack(target, manifest, out, cache=cache, fsync=False)
    assert tree(out) == expected["files"]
    assert result.producer == expected["producer"]
    assert len(result.skipped) == expected.get("skipped", 0)
    for rel in expected.get("executable", []):
        assert os.stat(out / rel).st_mode & 0o777 == 0o755
    # again from the cache: nothing fetched, same tree
    again = unpack(target, manifest, tmp_path / "again", cache=cache, fsync=False)
    assert again.bytes_fetched == 0
    assert tree(tmp_path / "again") == expected["files"]


@pytest.mark.parametrize("tag", HOSTILE)
def test_hostile_archives_refused_nothing_written(tag, tmp_path):
    target, manifest = layout_manifest(tag)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous")
    cache = LayoutStore(tmp_path / "cache", fsync=False)
    with pytest.raises(getattr(errors, EXPECTED[tag]["error"])):
        unpack(target, manifest, out, cache=cache, fsync=False)
    assert sorted(os.listdir(out)) == ["keep.txt"]
    assert not list(tmp_path.glob("etc*")) and not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/modelreg-evil.txt").exists()


def test_include_filters_archive_members(tmp_path):
    target, manifest = layout_manifest("kitops-modelkit")
    unpack(target, manifest, tmp_path / "out", include=["src/*"], fsync=False)
    assert sorted(tree(tmp_path / "out")) == ["src/serve.py"]


def test_layer_plans():
    _, kit = layout_manifest("kitops-modelkit")
    plan = plan_manifest(kit)
    assert [a.descriptor.media_type for a in plan.archives] == [
        "application/vnd.kitops.modelkit.model.v1.tar+gzip",
        "application/vnd.kitops.modelkit.code.v1.tar",
    ]
    assert [r.path for r in plan.raw] == ["README.md"]
    _, oras = layout_manifest("oras-files")
    plan = plan_manifest(oras)
    assert plan.archives[0].prefix == "tokenizer" and plan.archives[0].tar_digest is not None
    assert [r.path for r in plan.raw] == ["model.safetensors"]
    _, docker = layout_manifest("docker-gguf-v01")
    assert [r.path for r in plan_manifest(docker).raw] == ["model.gguf", "LICENSE"]


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _artifact(layers: list[tuple[str, bytes, dict[str, str]]], config_type: str):
    src = MemoryTarget()
    descs = []
    for media_type, data, layer_annotations in layers:
        d = Descriptor.for_bytes(media_type, data, layer_annotations)
        src.push(d, bytes_source(data))
        descs.append(d)
    config = Descriptor.for_bytes(config_type, b"{}")
    src.push(config, bytes_source(b"{}"))
    return src, Manifest(config=config, layers=tuple(descs))


def test_archive_members_collide_with_file_layers(tmp_path):
    src, m = _artifact(
        [
            (mt.model_layer("weight"), b"raw", {mt.ANN_FILEPATH: "w.bin"}),
            ("application/vnd.cncf.model.weight.v1.tar", _tar({"w.bin": b"tar"}), {}),
        ],
        mt.MODEL_CONFIG,
    )
    with pytest.raises(errors.UnsafeContentError, match="collide"):
        unpack(src, m, tmp_path / "out", fsync=False)
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_kitops_compressed_raw_layer_and_ratio_limit(tmp_path):
    payload = b"weights " * 4096
    src, m = _artifact(
        [
            (
                "application/vnd.kitops.modelkit.model.v1.raw+gzip",
                gzip.compress(payload, mtime=0),
                {mt.ANN_FILEPATH: "model.bin"},
            )
        ],
        "application/vnd.kitops.modelkit.config.v1+json",
    )
    unpack(src, m, tmp_path / "out", fsync=False)
    assert (tmp_path / "out" / "model.bin").read_bytes() == payload
    # the same layer with a declared size smaller than what it expands to
    meta = json.dumps({"name": "model.bin", "mode": 420, "size": 100})
    src, m = _artifact(
        [
            (
                "application/vnd.kitops.modelkit.model.v1.raw+gzip",
                gzip.compress(payload, mtime=0),
                {mt.ANN_FILEPATH: "model.bin", mt.ANN_FILE_METADATA: meta},
            )
        ],
        "application/vnd.kitops.modelkit.config.v1+json",
    )
    with pytest.raises(errors.SizeLimitError, match="expands to more than 100 bytes"):
        unpack(src, m, tmp_path / "out2", fsync=False)


def test_container_image_is_not_a_model(tmp_path):
    src, m = _artifact(
        [(mt.OCI_LAYER_TAR_GZIP, gzip.compress(_tar({"bin/sh": b"x"}), mtime=0), {})],
        mt.OCI_CONFIG,
    )
    with pytest.raises(errors.FormatError, match="no layer that names a file"):
        unpack(src, m, tmp_path / "out", fsync=False)


def test_path_claims():
    claims = PathClaims()
    claims.claim_file("a/b.txt", "one")
    claims.claim_dir("a", "two")
    with pytest.raises(errors.UnsafeContentError, match="collide"):
        claims.claim_file("A/B.TXT", "three")
    with pytest.raises(errors.UnsafeContentError, match="both a file and a directory"):
        claims.claim_file("a", "four")
    with pytest.raises(errors.UnsafeContentError, match="both a file and a directory"):
        claims.claim_file("a/b.txt/c", "five")


def test_empty_config_oras_without_titles(tmp_path):
    src = MemoryTarget()
    d = Descriptor.for_bytes(mt.OCI_LAYER_TAR, b"x")
    src.push(d, bytes_source(b"x"))
    m = Manifest(config=empty_config(), layers=(d,), artifact_type="application/vnd.x")
    with pytest.raises(errors.FormatError, match="no layer that names a file"):
        unpack(src, m, tmp_path / "out", fsync=False)


def test_generator_reproduces_the_committed_fixtures(tmp_path):
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, str(TESTDATA / "generate_producers.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=240,
    )

    def contents(base: Path, sub: str) -> dict[str, object]:
        return {
            p.relative_to(base).as_posix(): os.readlink(p) if p.is_symlink() else p.read_bytes()
            for p in (base / sub).rglob("*")
            if p.is_file() or p.is_symlink()
        }

    for sub in ("producers", "hf-cache"):
        made, committed = contents(tmp_path, sub), contents(TESTDATA, sub)
        assert made.keys() == committed.keys()
        assert all(made[k] == committed[k] for k in made), sub
