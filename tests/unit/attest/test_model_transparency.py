"""The model-transparency statement, derived from a manifest as ``model_signing`` would."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from modelreg.attest.model_transparency import (
    MODEL_SIGNING_PREDICATE,
    model_resources,
    model_statement,
)
from modelreg.errors import InvalidInputError
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import Manifest, empty_config


def _layer(path: str, data: bytes, media_type: str = "application/vnd.cncf.model.weight.v1.raw"):
    return Descriptor.for_bytes(media_type, data, annotations={mt.ANN_FILEPATH: path})


def _manifest(*layers: Descriptor) -> Manifest:
    return Manifest(config=empty_config(), layers=layers, artifact_type=mt.MODEL_ARTIFACT)


def test_model_statement_orders_resources_like_model_signing():
    # PurePosixPath order: "a/b" < "a.b" (components), unlike plain string order
    manifest = _manifest(_layer("a.b", b"1"), _layer("a/b", b"2"), _layer("a.txt", b"3"))
    names = [p for p, _ in model_resources(manifest).files]
    assert names == ["a/b", "a.b", "a.txt"]
    st = model_statement(manifest, "team/tiny-llm")
    doc = json.loads(st.raw)
    assert doc["predicateType"] == MODEL_SIGNING_PREDICATE
    assert doc["subject"][0]["name"] == "tiny-llm"
    concatenated = b"".join(bytes.fromhex(r["digest"]) for r in doc["predicate"]["resources"])
    assert doc["subject"][0]["digest"]["sha256"] == hashlib.sha256(concatenated).hexdigest()
    assert doc["predicate"]["serialization"]["method"] == "files"
    assert doc["predicate"]["serialization"]["hash_type"] == "sha256"


def test_model_statement_matches_what_model_signing_computes(tmp_path):
    """The same files hashed by model_signing give the same resources and root digest."""
    from model_signing import hashing
    from model_signing._signing.signing import Payload

    files = {"a.b": b"x", "a/b": b"y", "a.txt": b"z", "sub/dir/w.bin": os.urandom(300)}
    root = tmp_path / "m"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    theirs = json.loads(
        __import__("google.protobuf.json_format", fromlist=["x"]).MessageToJson(
            Payload(hashing.hash(root)).statement.pb
        )
    )
    manifest = _manifest(*(_layer(rel, data) for rel, data in files.items()))
    ours = json.loads(model_statement(manifest, "m").raw)
    assert ours["subject"] == theirs["subject"]
    assert ours["predicate"]["resources"] == theirs["predicate"]["resources"]


def test_model_statement_refuses_archives_and_duplicates():
    with pytest.raises(InvalidInputError, match="archive"):
        model_resources(_manifest(_layer("d", b"t", "application/vnd.cncf.model.weight.v1.tar")))
    with pytest.raises(InvalidInputError, match="two layers"):
        model_resources(_manifest(_layer("a", b"1"), _layer("./a", b"2")))
    no_path = Descriptor.for_bytes("application/octet-stream", b"x")
    with pytest.raises(InvalidInputError, match="no file path"):
        model_resources(_manifest(no_path))
