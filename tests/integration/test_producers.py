"""Artifacts made by other producers (KitOps, ORAS, Docker Model Runner, legacy ModelPack),
pushed blob by blob to a real registry as those tools would, then pulled with the CLI."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from modelreg_cli.main import app
from typer.testing import CliRunner

from modelreg.client import Client, RemoteOptions
from modelreg.content import LayoutStore
from modelreg.content.base import file_source
from modelreg.oci.manifest import Manifest, parse_manifest_or_index

runner = CliRunner()
PRODUCERS = Path(__file__).resolve().parents[2] / "testdata" / "producers"
EXPECTED = json.loads((PRODUCERS / "expected.json").read_text())
EXIT = {"UnsafeContentError": 8, "FormatError": 8, "SizeLimitError": 8, "IntegrityError": 5}


def upload(host: str, tag: str) -> str:
    """Push one fixture's blobs and manifest as its producer would: blob by blob."""
    layout = LayoutStore(PRODUCERS, create=False)
    source = layout.target(None)
    desc = source.resolve(tag)
    raw = layout.blob_path(desc.digest).read_bytes()
    node = parse_manifest_or_index(raw, desc.media_type)
    assert isinstance(node, Manifest)
    ref = f"{host}/producers/{tag}:v1"
    with Client(RemoteOptions(fsync=False)) as client:
        target = client.target(ref)
        for blob in (node.config, *node.layers):
            target.push(blob, file_source(str(layout.blob_path(blob.digest))))
        target.push_manifest(desc, raw, "v1")
    return ref


def tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.mark.parametrize("tag", sorted(k for k, v in EXPECTED.items() if "files" in v))
def test_pull_and_inspect_what_others_pushed(registry_plain, tag, tmp_path):
    ref = upload(registry_plain.host, tag)
    expected = EXPECTED[tag]
    out = tmp_path / "out"
    result = runner.invoke(app, ["pull", ref, "-o", str(out), "--json", "--no-cache"])
    assert result.exit_code == 0, result.output
    pulled = json.loads(result.stdout)
    assert pulled["producer"] == expected["producer"]
    assert tree(out) == expected["files"]
    for rel in expected.get("executable", []):
        assert os.stat(out / rel).st_mode & 0o777 == 0o755
    info = runner.invoke(app, ["inspect", ref, "--json"])
    assert info.exit_code == 0, info.output
    doc = json.loads(info.stdout)
    assert doc["producer"] == expected["producer"]
    if "name" in expected:
        assert doc["config"]["package"]["name"] == expected["name"]  # the Kitfile as JSON
    text = runner.invoke(app, ["inspect", ref, "--tensors"])
    assert text.exit_code == 0, text.output


@pytest.mark.parametrize("tag", sorted(k for k, v in EXPECTED.items() if "error" in v))
def test_hostile_archives_from_a_registry(registry_plain, tag, tmp_path):
    ref = upload(registry_plain.host, tag)
    out = tmp_path / "out"
    result = runner.invoke(app, ["pull", ref, "-o", str(out), "--no-cache"])
    assert result.exit_code == EXIT[EXPECTED[tag]["error"]], result.output
    assert "error:" in result.stderr
    assert not out.exists() or os.listdir(out) == []
    assert not (tmp_path / "evil.txt").exists()
