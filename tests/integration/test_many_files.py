"""Issue 18 end to end against a real Distribution registry: thousands of small files
travel as deterministic tar layers, round-trip exactly, and no longer hit the old
5,000-layer wall."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from modelreg_cli.main import app
from typer.testing import CliRunner

from modelreg.model.grouping import DEFAULT_THRESHOLD

runner = CliRunner()


def ok(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def many_files(root: Path, count: int, *, low: int = 1024, high: int = 64 * 1024) -> Path:
    """``count`` files of ``low``-``high`` random bytes over a few directories, a tiny
    weight file and an executable script; deterministic."""
    rng = random.Random(count)
    for i in range(count):
        path = root / f"part{i % 7}" / f"sub{i % 3}" / f"f{i:05d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(low, high)))
    script = root / "code" / "run.sh"
    script.parent.mkdir(exist_ok=True)
    script.write_text("#!/bin/sh\necho hi\n")
    os.chmod(script, 0o755)
    (root / "big.bin").write_bytes(rng.randbytes(DEFAULT_THRESHOLD + 1))
    return root


def tree(root: Path) -> dict[str, tuple[bytes, bool]]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            rel = path.relative_to(root).as_posix()
            out[rel] = (path.read_bytes(), bool(path.stat().st_mode & 0o100))
    return out


def test_push_pull_2000_files_round_trips_exactly(registry_plain, tmp_path):
    src = many_files(tmp_path / "src", 2000)
    ref = f"{registry_plain.host}/many/files:v1"
    pushed = ok("push", str(src), ref)
    assert pushed["layers"] < 100  # 2,002 files; groups of ~4 MiB, the big file raw
    manifest = ok("inspect", ref)["manifest"]
    types = {layer["mediaType"] for layer in manifest["layers"]}
    assert "application/vnd.cncf.model.weight.v1.raw" in types  # big.bin
    assert any(t.endswith(".v1.tar") for t in types)
    out = tmp_path / "out"
    ok("pull", ref, "-o", str(out))
    assert tree(out) == tree(src)


def test_pushing_the_same_directory_again_gives_the_same_digest(registry_plain, tmp_path):
    src = many_files(tmp_path / "src", 300)
    first = ok("push", str(src), f"{registry_plain.host}/many/again:v1")
    for path in src.rglob("*.json"):
        os.utime(path, (1_000_000, 1_000_000))
    second = ok("push", str(src), f"{registry_plain.host}/many/again:v2")
    assert first["digest"] == second["digest"]
    assert second["bytesSent"] < 10_000  # the manifest and the config at most


def test_5001_files_cross_the_old_wall(registry_plain, tmp_path):
    src = many_files(tmp_path / "src", 5001, low=1, high=64)
    pushed = ok("push", str(src), f"{registry_plain.host}/many/wall:v1")
    assert pushed["layers"] < 20


def test_5001_files_without_grouping_are_refused_before_hashing(registry_plain, tmp_path):
    src = many_files(tmp_path / "src", 5001, low=1, high=64)
    result = runner.invoke(
        app,
        ["push", str(src), f"{registry_plain.host}/many/nogroup:v1", "--no-pack-small", "--json"],
    )
    assert result.exit_code != 0
    assert "5000" in result.output and "--pack-small" in result.output
    assert "nothing was hashed" in result.output


@pytest.mark.parametrize("flag", ["--no-pack-small", "--pack-small=0"])
def test_no_pack_small_gives_one_layer_per_file(registry_plain, tmp_path, flag):
    src = many_files(tmp_path / "src", 40)
    pushed = ok("push", str(src), f"{registry_plain.host}/many/raw:v1", flag)
    assert pushed["layers"] == 42


def test_pull_include_extracts_only_matching_members(registry_plain, tmp_path):
    src = many_files(tmp_path / "src", 200)
    ref = f"{registry_plain.host}/many/include:v1"
    ok("push", str(src), ref)
    out = tmp_path / "out"
    ok("pull", ref, "-o", str(out), "--include", "part1/*")
    pulled = tree(out)
    assert pulled and all(p.startswith("part1/") for p in pulled)
    assert pulled == {p: v for p, v in tree(src).items() if p.startswith("part1/")}


def test_inspect_and_diff_name_every_grouped_file(registry_plain, tmp_path):
    """Issue 18 item 2: grouped files are listed one by one with size and digest (from the
    member table the manifest digest covers), and diff names the one file that changed."""
    import hashlib

    src = many_files(tmp_path / "src", 300)
    ref_a = f"{registry_plain.host}/many/listed:v1"
    ref_b = f"{registry_plain.host}/many/listed:v2"
    ok("push", str(src), ref_a)
    changed = src / "part3" / "sub0" / "f00003.json"
    changed.write_bytes(b"changed")
    ok("push", str(src), ref_b)
    files = ok("inspect", ref_b)["files"]
    listed = {f["path"]: f for f in files}
    want = tree(src)
    assert set(listed) == set(want)
    for path, (data, _exec) in want.items():
        row = listed[path]
        assert row["size"] == len(data)
        assert row["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
    grouped = [f for f in files if f["kind"] == "grouped"]
    assert {f["path"] for f in grouped} == {p for p in want if p.endswith(".json")}
    assert all(f["group"].startswith("sha256:") for f in grouped)
    assert listed["big.bin"]["kind"] == "file"
    diff = ok("diff", ref_a, ref_b)
    moved = {f["path"]: f["status"] for f in diff["files"] if f["status"] != "unchanged"}
    assert moved == {"part3/sub0/f00003.json": "changed"}
    assert len(diff["files"]) == len(want)


def test_a_mixed_model_sends_every_blob_once(registry_plain, tmp_path):
    src = many_files(tmp_path / "src", 400)
    (src / "weights.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    ref = f"{registry_plain.host}/many/mixed:v1"
    pushed = ok("push", str(src), ref)
    manifest = ok("inspect", ref)["manifest"]
    import hashlib

    from modelreg.lazy.chunkindex import ANN_CHUNK_INDEX

    index = json.loads(manifest["annotations"][ANN_CHUNK_INDEX])  # the weights' chunk index
    sizes = {layer["digest"]: layer["size"] for layer in manifest["layers"]}
    sizes[manifest["config"]["digest"]] = manifest["config"]["size"]
    sizes[index["digest"]] = index["size"]
    sizes["sha256:" + hashlib.sha256(b"{}").hexdigest()] = 2  # the index's empty config
    assert pushed["bytesSent"] == sum(sizes.values())  # each blob once, groups included
    assert pushed["blobsSent"] == len(sizes)
    ok("pull", ref, "-o", str(tmp_path / "out"))
    assert tree(tmp_path / "out") == tree(src)


@pytest.mark.parametrize("where", ["registry", "store"])
def test_a_grouped_file_changed_before_its_group_is_sent_fails_the_push(
    where, registry_plain, tmp_path, monkeypatch
):
    """Groups go out as soon as they are packed (issue 18); a member rewritten between its
    hashing and its upload is named, and nothing is tagged."""
    from modelreg import client as client_module
    from modelreg.client import Client, RemoteOptions
    from modelreg.errors import InvalidInputError, NotFoundError

    src = many_files(tmp_path / "src", 400)
    victim = "part0/sub0/f00000.json"
    real_submit = client_module._EarlyUploads.submit_group

    def rewrite_then_submit(early, group, files):
        if any(m.path == victim for m in group.members):
            path = src / victim
            st = path.stat()
            path.write_bytes(bytes(b ^ 0xFF for b in path.read_bytes()))  # same size
            # a later mtime, as an edit a tick later has (the file was written moments ago:
            # within one timestamp tick the change would go unnamed, though still refused)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        real_submit(early, group, files)

    monkeypatch.setattr(client_module._EarlyUploads, "submit_group", rewrite_then_submit)
    ref = f"{registry_plain.host}/many/changed:v1" if where == "registry" else "many/changed:v1"
    with Client(RemoteOptions(store=tmp_path / "store")) as client:
        with pytest.raises(InvalidInputError) as caught:
            client.push(src, ref)
        assert f"{victim!r} changed after it was hashed" in caught.value.message
        with pytest.raises(NotFoundError):
            client.resolve(ref)
