"""One coverage rule for model-level signatures (issue 15, failure 1): the statement
``modelreg sign`` derives, the directory verifier and ``model_signing`` cover the same files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from google.protobuf import json_format
from model_signing import hashing
from model_signing._signing.signing import Payload

from modelreg.attest.coverage import GIT_PATHS, Coverage, statement_ignore_paths
from modelreg.attest.model_transparency import model_resources, model_statement
from modelreg.errors import InvalidInputError
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import Manifest, empty_config

GIT_MODEL = {
    "config.json": b'{"architectures": ["LlamaForCausalLM"]}',
    ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    ".gitignore": b"__pycache__/\n",
    ".github/workflows/ci.yml": b"on: push\n",
    "sub/.gitignore": b"*.tmp\n",
    "sub/.gitattributes": b"* text\n",
    ".githubish": b"not git metadata\n",
    "nested/deeper/model-00001-of-00002.safetensors": os.urandom(200),
    "nested/deeper/model-00002-of-00002.safetensors": os.urandom(100),
}


def _manifest(files: dict[str, bytes]) -> Manifest:
    layers = tuple(
        Descriptor.for_bytes(mt.model_layer("weight"), data, annotations={mt.ANN_FILEPATH: rel})
        for rel, data in files.items()
    )
    return Manifest(config=empty_config(), layers=layers, artifact_type=mt.MODEL_ARTIFACT)


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


@pytest.mark.parametrize(
    ("path", "covered"),
    [
        (".gitattributes", False),
        (".gitignore", False),
        (".git/HEAD", False),
        (".github/workflows/ci.yml", False),
        (".githubish", True),  # whole components: .github does not ignore .githubish
        ("sub/.gitignore", True),  # top level only, as model_signing
        ("sub/.git/HEAD", True),
        ("config.json", True),
    ],
)
def test_git_metadata_is_ignored_at_the_top_level_only(path, covered):
    assert Coverage.of().covers(path) is covered
    assert Coverage.of(git_paths=False).covers(path) is True


def test_ignore_paths_that_leave_the_root_ignore_nothing():
    coverage = Coverage.of(["/etc", "../x", "a/../b", "./docs/"], git_paths=False)
    assert [str(p) for p in coverage.ignored] == ["docs"]
    assert not coverage.covers("docs/a.md") and coverage.covers("b")


def test_statement_records_git_paths_and_the_signature_name():
    assert statement_ignore_paths(["a"]) == [*GIT_PATHS, "model.sig"]
    assert statement_ignore_paths(["model.sig"], ["x"]) == [*GIT_PATHS, "x"]


def test_statement_never_lists_what_it_ignores():
    """The 087654d statement listed .gitattributes and ignored it: verifiers then missed it."""
    st = json.loads(model_statement(_manifest(GIT_MODEL), "m").raw)
    names = [r["name"] for r in st["predicate"]["resources"]]
    ignored = Coverage.of(st["predicate"]["serialization"]["ignore_paths"])
    assert names and all(ignored.covers(n) for n in names)
    assert ".gitattributes" not in names and "sub/.gitattributes" in names


def test_statement_matches_model_signing_on_a_directory_with_git_files(tmp_path):
    root = _write(tmp_path / "m", GIT_MODEL)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_bytes(b"ref: refs/heads/main\n")
    theirs = json.loads(json_format.MessageToJson(Payload(hashing.hash(root)).statement.pb))
    ours = json.loads(model_statement(_manifest(GIT_MODEL), "m").raw)
    assert ours["predicate"]["resources"] == theirs["predicate"]["resources"]
    assert ours["subject"] == theirs["subject"]
    assert set(theirs["predicate"]["serialization"]["ignore_paths"]) <= set(
        ours["predicate"]["serialization"]["ignore_paths"]
    )


def test_model_resources_uses_the_same_rule():
    names = [p for p, _ in model_resources(_manifest(GIT_MODEL)).files]
    assert [n for n in GIT_MODEL if Coverage.of().covers(n)] == sorted(
        names, key=lambda n: list(GIT_MODEL).index(n)
    )
    everything = model_resources(_manifest(GIT_MODEL), Coverage.of(git_paths=False))
    assert len(everything.files) == len(GIT_MODEL)


def test_a_model_of_git_files_only_has_no_model_signature():
    with pytest.raises(InvalidInputError, match="no file"):
        model_statement(_manifest({".gitattributes": b"x"}), "m")
