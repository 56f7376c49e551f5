"""``modelreg cache info`` and ``modelreg cache prune`` on the embedded store."""

import json
import os
import time

import pytest
from modelreg_cli.main import app
from typer.testing import CliRunner

from modelreg.client import Client

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


def write_model(root, name):
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"model_type": name}))
    (root / "model.safetensors").write_bytes(os.urandom(4096))
    return root


def blob_files(home):
    return {p.name: p.stat().st_size for p in (home / "store" / "blobs" / "sha256").iterdir()}


@pytest.fixture
def untagged(tmp_path, home):
    """Two models pushed, the second untagged: the blobs only it had, name -> size."""
    # no chunk index: the counts below are the models' own blobs
    assert (
        run("push", str(write_model(tmp_path / "a", "a")), "llm:a", "--no-chunk-index").exit_code
        == 0
    )
    kept = blob_files(home)
    assert (
        run("push", str(write_model(tmp_path / "b", "b")), "llm:b", "--no-chunk-index").exit_code
        == 0
    )
    with Client() as client:
        assert client.delete_tag("llm:b")
    return {n: s for n, s in blob_files(home).items() if n not in kept}


def test_info_json_and_text(untagged, home):
    result = run("cache", "info", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["store"] == str(home / "store")
    assert len(untagged) == 4  # manifest, config, two files
    assert doc["unreferenced"] == {"blobs": 4, "bytes": sum(untagged.values())}
    assert doc["referenced"]["blobs"] == 4 and doc["tags"] == 1
    assert doc["chunks"] == {"files": 0, "bytes": 0} and doc["chunkLimitBytes"] is None
    assert doc["stateBytes"] > 0 and doc["problems"] == []
    text = run("cache", "info")
    assert text.exit_code == 0
    assert "unreferenced" in text.stdout and "4 blobs" in text.stdout
    assert "no limit (MODELREG_CHUNK_CACHE_MAX)" in text.stdout


def test_prune_dry_run_then_for_real(untagged, home):
    before = blob_files(home)
    dry = run("cache", "prune", "--dry-run", "--older-than", "0", "--json")
    assert dry.exit_code == 0, dry.output
    ddoc = json.loads(dry.stdout)
    assert ddoc["dryRun"] and blob_files(home) == before
    assert {d.split(":")[1] for d in ddoc["removedBlobs"]} == set(untagged)
    kept = run("cache", "prune")  # blobs younger than the default hour stay
    assert kept.exit_code == 0
    assert "removed 0 unreferenced blobs" in kept.stdout and "kept 4 unreferenced" in kept.stdout
    real = run("cache", "prune", "--older-than", "0")
    assert real.exit_code == 0, real.output
    assert "removed 4 unreferenced blobs" in real.stdout
    assert set(blob_files(home)) == set(before) - set(untagged)
    assert run("pull", "llm:a", "-o", str(home.parent / "out")).exit_code == 0


def test_prune_chunks_max_and_environment_limit(untagged, home, monkeypatch):
    chunks = home / "store" / "modelreg-chunks" / "sha256" / "ab"
    chunks.mkdir(parents=True)
    for i in range(3):
        path = chunks / ("ab" + f"{i:062x}")
        path.write_bytes(b"c" * 5000)
        t = time.time() - 1000 + i
        os.utime(path, (t, t))
    result = run("cache", "prune", "--chunks-max", "8KiB", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["chunks"] == {"removed": 2, "bytes": 10000, "left": 1, "bytesLeft": 5000}
    assert [p.name[-1] for p in chunks.iterdir()] == ["2"]  # the most recently used
    monkeypatch.setenv("MODELREG_CHUNK_CACHE_MAX", "0")
    assert json.loads(run("cache", "prune", "--json").stdout)["chunks"]["removed"] == 1
    info = json.loads(run("cache", "info", "--json").stdout)
    assert info["chunkLimitBytes"] == 0 and info["chunks"]["files"] == 0


def test_bad_sizes_exit_2(untagged, monkeypatch):
    bad = run("cache", "prune", "--chunks-max", "huge")
    assert bad.exit_code == 2 and "--chunks-max" in bad.stderr
    as_json = run("cache", "prune", "--chunks-max", "huge", "--json")
    assert json.loads(as_json.stderr)["error"]["exitCode"] == 2
    assert run("cache", "prune", "--older-than", "-5").exit_code == 2
    monkeypatch.setenv("MODELREG_CHUNK_CACHE_MAX", "lots")
    info = run("cache", "info")
    assert info.exit_code == 2 and "MODELREG_CHUNK_CACHE_MAX" in info.stderr


def test_damaged_store_is_reported_and_prune_exits_8(untagged, home):
    before = blob_files(home)
    (home / "store" / "index.json").write_text("garbage")
    info = run("cache", "info", "--json")
    assert info.exit_code == 0
    assert any("index.json" in p for p in json.loads(info.stdout)["problems"])
    assert "index.json" in info.stderr
    pruned = run("cache", "prune", "--older-than", "0")
    assert pruned.exit_code == 8
    assert "no blob was removed" in pruned.stderr and blob_files(home) == before
    as_json = run("cache", "prune", "--older-than", "0", "--json")
    assert as_json.exit_code == 8 and json.loads(as_json.stdout)["blobsSkipped"]


def test_info_on_a_fresh_home(home):
    result = run("cache", "info", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["totalBytes"] == 0 and doc["referenced"]["blobs"] == 0
    assert not (home / "store").exists()


def test_prune_forgets_references_to_pulled_files_that_changed(tmp_path, home):
    from modelreg.content.copies import Copies, Copy

    pulled = tmp_path / "pulled.bin"
    pulled.write_bytes(b"w" * 100)
    (home / "state").mkdir(parents=True)
    with Copies(home / "state" / "copies.sqlite") as copies:
        copies.record([Copy.of_file("sha256:" + "a" * 64, pulled, 0, 100)])
    pulled.unlink()
    dry = run("cache", "prune", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["staleFileReferences"] == 1
    real = run("cache", "prune")
    assert real.exit_code == 0, real.output
    assert "forgot 1 references to pulled files that changed or are gone" in real.stdout
    assert json.loads(run("cache", "prune", "--json").stdout)["staleFileReferences"] == 0
