"""Issue 19 item 5: ``import hf`` takes the ``models--ORG--NAME`` folder (following
``refs/main``), and a link out of the cache gets a hint ``import hf`` can act on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from modelreg_cli.main import app
from typer.testing import CliRunner

runner = CliRunner()
CACHE = Path(__file__).resolve().parents[3] / "testdata" / "hf-cache" / "hub"
REPO = "models--tiny-org--tiny-llm"
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def repo(tmp_path: Path, home: Path) -> Path:
    copied = tmp_path / "hub" / REPO
    shutil.copytree(CACHE / REPO, copied, symlinks=True)
    return copied


def test_the_repository_folder_follows_refs_main(repo: Path) -> None:
    result = runner.invoke(app, ["import", "hf", str(repo), "tiny:v1", "--json", "-q"])
    assert result.exit_code == 0, result.output
    shown = runner.invoke(app, ["inspect", "tiny:v1", "--json"])
    described = json.dumps(json.loads(shown.stdout))
    assert REVISION in described and "tiny-org/tiny-llm" in described
    paths = {f["path"] for f in json.loads(shown.stdout)["files"]}
    assert not any(p.startswith(("blobs/", "refs/", "snapshots/")) for p in paths), paths


def test_a_folder_without_refs_main_lists_its_snapshots(repo: Path) -> None:
    (repo / "refs" / "main").unlink()
    result = runner.invoke(app, ["import", "hf", str(repo), "tiny:v1"])
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert "no refs/main" in flat and f"snapshots/{REVISION}" in flat


def test_a_link_outside_blobs_gets_a_hint_import_hf_can_use(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("not the model's")
    (repo / "snapshots" / REVISION / "extra.txt").symlink_to(outside)
    result = runner.invoke(app, ["import", "hf", str(repo), "tiny:v1"])
    assert result.exit_code == 8, result.output
    flat = " ".join(result.output.split())
    assert "'extra.txt'" in flat and "outside its cache's blobs/" in flat
    assert "huggingface-cli download tiny-org/tiny-llm" in flat
    assert "pass --allow-outside-links" not in flat
