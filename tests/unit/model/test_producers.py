"""Artifacts other tools write (KitOps, ORAS, Docker, legacy ModelPack), read from the
fixture layout ``testdata/producers`` (made by ``testdata/generate_producers.py``)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
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
from tests.unit.model.test_unpack_oras import tar_bytes

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
            ("application/vnd.cncf.model.weight.v1.tar", tar_bytes({"w.bin": b"tar"}), {}),
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
        [(mt.OCI_LAYER_TAR_GZIP, gzip.compress(tar_bytes({"bin/sh": b"x"}), mtime=0), {})],
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


def test_path_claims_in_bulk_name_each_owner():
    claims = PathClaims()
    claims.claim_files(["a/b.txt", "a/c/d.txt"], "file")
    with pytest.raises(
        errors.UnsafeContentError, match=re.escape("group member 'A/C/D.TXT' and file 'a/c/d.txt'")
    ):
        claims.claim_files(["x.txt", "A/C/D.TXT"], "group member")
    with pytest.raises(errors.UnsafeContentError, match="both a file and a directory"):
        claims.claim_files(["a/b.txt/e"], "group member")
    # what a bulk claim took before it was refused stays taken: x.txt is a file
    with pytest.raises(errors.UnsafeContentError, match=re.escape("(group member 'x.txt', later)")):
        claims.claim_file("x.txt/y", "later")


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


# ---------------------------------------------------------------- issue 15, failure 3
# inspect, diff and the lazy handle name files from pull's own plan
# (modelreg.model.layerfiles); these fail on 087654d, where each reader had its own rule.
READABLE = {
    "docker-gguf-v01": {"model.gguf", "LICENSE"},
    "docker-safetensors-v02": {
        "config.json",
        "generation_config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    },
    "kitops-modelkit": {"README.md"},
    "oras-files": {"model.safetensors"},
}
"""The raw files of each fixture; the rest of what pull writes is inside archives."""
ARCHIVES = {
    "docker-safetensors-v02": ["."],
    "kitops-legacy": ["model.gguf", "README.md"],  # named by the Kitfile alone
    "kitops-modelkit": ["models", "src"],
    "modelpack-cnai-legacy": ["config.json", "model-00001-of-00002.safetensors", "README.md"],
    "modelpack-modctl-tar": ["config.json", "model-00001-of-00002.safetensors", "README.md"],
    "oras-files": ["tokenizer"],
}


def _under(path: str, name: str) -> bool:
    return name == "." or path == name or path.startswith(name + "/")


@pytest.mark.parametrize("tag", GOOD)
def test_inspect_names_files_and_archives_as_pull_writes_them(tag, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELREG_HOME", str(tmp_path / "home"))
    from modelreg.client import Client

    with Client() as client:
        rows = client.inspect(f"oci:{PRODUCERS}:{tag}").files
    named = [r for r in rows if r["kind"] != "skipped"]
    assert all(r["path"] for r in named), rows
    assert {r["path"] for r in named if r["kind"] == "file"} == READABLE.get(tag, set())
    assert [r["path"] for r in named if r["kind"] == "archive"] == ARCHIVES.get(tag, [])
    for path in EXPECTED[tag]["files"]:
        assert path in READABLE.get(tag, set()) or any(_under(path, a) for a in ARCHIVES[tag]), path


@pytest.mark.parametrize("tag", GOOD)
def test_open_lists_and_reads_every_raw_file_pull_writes(tag, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELREG_HOME", str(tmp_path / "home"))
    from modelreg.lazy.handle import open_model

    target = LayoutStore(PRODUCERS, create=False).target(None)
    with open_model(target, tag, cache=tmp_path / "cache") as handle:
        got = {f.path: hashlib.sha256(handle.read(f.path)).hexdigest() for f in handle.files}
        notes = list(handle.notes)
    expected = EXPECTED[tag]["files"]
    assert got == {p: expected[p] for p in READABLE.get(tag, set())}
    after_pull = [n for n in notes if "readable only after `modelreg pull`" in n]
    assert len(after_pull) == len(ARCHIVES.get(tag, []))


def test_diff_names_archives_by_what_they_hold(tmp_path):
    from modelreg.model.diff import diff_manifests

    target, kit = layout_manifest("kitops-legacy")
    config = json.loads(
        LayoutStore(PRODUCERS, create=False).blob_path(kit.config.digest).read_bytes()
    )
    result = diff_manifests(target, kit, target, kit, config_a=config, config_b=config)
    rows = [(f.path, f.status, f.to_dict().get("kind")) for f in result.files]
    assert rows == [("README.md", "unchanged", "archive"), ("model.gguf", "unchanged", "archive")]
    _, modctl = layout_manifest("modelpack-modctl-tar")
    _, docker = layout_manifest("docker-safetensors-v02")
    by_path = {f.path: f for f in diff_manifests(target, modctl, target, docker).files}
    assert by_path["config.json"].kind == "archive" and "not compared" in str(
        by_path["config.json"].note
    )
    assert by_path["."].status == "added" and by_path["."].kind == "archive"


def _kit_artifact(layer_type: str, data: bytes, kitfile: dict[str, object], annotations=None):
    src = MemoryTarget()
    layer = Descriptor.for_bytes(layer_type, data, annotations or {})
    src.push(layer, bytes_source(data))
    raw = json.dumps(kitfile).replace("@", str(layer.digest)).encode()
    config = Descriptor.for_bytes("application/vnd.kitops.modelkit.config.v1+json", raw)
    src.push(config, bytes_source(raw))
    manifest = Manifest(config=config, layers=(layer,))
    src.push_manifest(manifest.descriptor(), manifest.raw, "v1")
    return src, manifest, json.loads(raw)


def test_kitfile_names_archives_only_and_never_unsafely():
    from modelreg.model.layerfiles import layer_files

    data = tar_bytes({"data/train.csv": b"a,b\n"})
    _, m, kitfile = _kit_artifact(
        "application/vnd.kitops.modelkit.dataset.v1.tar",
        data,
        {"datasets": [{"name": "d", "path": "data", "digest": "@"}]},
    )
    assert [(f.path, f.kind) for f in layer_files(m, kitfile)] == [("data", "archive")]
    assert [f.path for f in layer_files(m)] == ["."]  # without the Kitfile: the model root
    _, m, kitfile = _kit_artifact(
        "application/vnd.kitops.modelkit.dataset.v1.tar",
        data,
        {"datasets": [{"path": "../../etc", "digest": "@"}]},
    )
    assert [f.path for f in layer_files(m, kitfile)] == ["."]
    # a raw layer is named as pull names it (by its annotation), never by the Kitfile
    _, m, kitfile = _kit_artifact(
        "application/vnd.kitops.modelkit.docs.v1.raw",
        b"# hi\n",
        {"docs": [{"path": "README.md", "digest": "@"}]},
    )
    with pytest.raises(errors.FormatError, match="names no file path"):
        layer_files(m, kitfile)


def test_compressed_file_is_listed_by_inspect_and_not_served_by_open(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELREG_HOME", str(tmp_path / "home"))
    from modelreg.lazy.handle import open_model
    from modelreg.model.layerfiles import layer_files

    payload = b"weights " * 512
    src, m, kitfile = _kit_artifact(
        "application/vnd.kitops.modelkit.model.v1.raw+gzip",
        gzip.compress(payload, mtime=0),
        {"model": {"path": "model.bin", "digest": "@"}},
        {mt.ANN_FILEPATH: "model.bin"},
    )
    assert [(f.path, f.kind, f.readable) for f in layer_files(m, kitfile)] == [
        ("model.bin", "compressed", False)
    ]
    with open_model(src, "v1", cache=tmp_path / "cache") as handle:
        assert handle.files == []
        assert [f.path for f in handle.pull_only] == ["model.bin"]
        assert any("stored compressed" in n and "modelreg pull" in n for n in handle.notes)
    unpack(src, m, tmp_path / "out", fsync=False)
    assert (tmp_path / "out" / "model.bin").read_bytes() == payload
