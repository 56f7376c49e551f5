"""Issue 15, failure 3: inspect, diff and the lazy handle name the files ``pull`` writes,
from the same source (:func:`modelreg.model.layerfiles.layer_files`: pull's own plan,
with the Kitfile for KitOps archives, media types for Docker v0.1, titles for ORAS).

Archive layers are named by what they hold (their directory, ``.`` for the model root)
and marked ``archive``: their files are known only once pull reads them, so diff
compares them as one layer and ``open`` names them in its notes as readable only after
pull (a decision documented in ``modelreg/model/layerfiles.py``). On 087654d inspect
gave ``path: null`` for the KitOps archives named only by the Kitfile, the Docker vLLM
config tar; diff named archives by labels (``model layer sha256:...``); ``open`` listed
no file of Docker v0.1, ORAS (a raw ``...layer.v1.tar`` file) or KitOps.
"""

from __future__ import annotations

import hashlib

import pytest

import modelreg
from tests.integration.test_producers import EXPECTED, upload
from tests.interop.peers import ok
from tests.unit.model.test_producers import READABLE  # the raw files of each fixture

TAGS = sorted(k for k, v in EXPECTED.items() if "files" in v)


def _under(path: str, name: str) -> bool:
    return name == "." or path == name or path.startswith(name + "/")


@pytest.mark.parametrize("tag", TAGS)
def test_inspect_names_every_file_pull_writes(registry_plain, tag):
    info = ok("inspect", upload(registry_plain.host, tag))
    rows = [f for f in info["files"] if f["kind"] != "skipped"]
    assert all(f["path"] for f in rows), info["files"]
    assert all(f["note"] for f in info["files"] if f["kind"] == "skipped")
    files = {f["path"] for f in rows if f["kind"] != "archive"}
    archives = [f["path"] for f in rows if f["kind"] == "archive"]
    for path in EXPECTED[tag]["files"]:
        assert path in files or any(_under(path, a) for a in archives), (path, rows)


def test_kitops_archives_are_named_by_the_kitfile(registry_plain):
    info = ok("inspect", upload(registry_plain.host, "kitops-legacy"))
    assert [(f["path"], f["kind"]) for f in info["files"]] == [
        ("model.gguf", "archive"),
        ("README.md", "archive"),
    ]


@pytest.mark.parametrize("tag", TAGS)
def test_diff_names_the_files_pull_writes(registry_plain, tmp_path, tag):
    ref = upload(registry_plain.host, tag)
    out = tmp_path / "out"
    ok("pull", ref, "-o", str(out))
    again = f"{registry_plain.host}/interop/repush-{tag}:v1"
    ok("push", str(out), again)  # modelreg pushes one raw layer per file
    rows = [f for f in ok("inspect", ref)["files"] if f["kind"] != "skipped"]
    archives = {f["path"] for f in rows if f["kind"] == "archive"}
    diffed = ok("diff", ref, again)
    by_path = {f["path"]: f for f in diffed["files"]}
    assert set(by_path) == {f["path"] for f in rows} | set(EXPECTED[tag]["files"])
    for f in rows:
        if f["kind"] == "archive":
            assert by_path[f["path"]]["kind"] == "archive"
        else:  # a raw file is the same blob in both: pull wrote it, push sent it back
            assert by_path[f["path"]]["status"] == "unchanged", by_path[f["path"]]
    if not archives:
        assert diffed["summary"]["added"] == diffed["summary"]["removed"] == 0


@pytest.mark.parametrize("tag", TAGS)
def test_open_names_and_reads_the_files_pull_writes(registry_plain, tag):
    with modelreg.open(upload(registry_plain.host, tag)) as handle:
        got = {f.path: hashlib.sha256(handle.read(f.path)).hexdigest() for f in handle.files}
        held = [layer.path for layer in handle.pull_only]
        notes = list(handle.notes)
    expected = EXPECTED[tag]["files"]
    assert got == {p: expected[p] for p in READABLE.get(tag, set())}
    for path in set(expected) - set(got):
        assert any(_under(path, str(a)) for a in held), (path, held)
    assert len([n for n in notes if "readable only after `modelreg pull`" in n]) == len(held)
