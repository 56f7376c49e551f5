"""Naming the chunk index in the manifest and keeping it alive as a referrer."""

from __future__ import annotations

import json

import pytest

from modelreg.content.layout import LayoutStore
from modelreg.content.memory import MemoryTarget
from modelreg.copy import copy_graph
from modelreg.errors import FormatError, InvalidInputError
from modelreg.lazy import chunkindex as ci
from modelreg.lazy.publish import (
    chunk_index_annotations,
    chunk_index_referrer,
    index_descriptor_from_annotations,
    publish_chunk_index,
    push_chunk_index,
)
from modelreg.model.pack import pack_directory, scan_directory
from modelreg.oci import mediatypes as mt
from modelreg.oci.manifest import Manifest
from tests.schemas import validate_manifest
from tests.unit.lazy.helpers import CHUNK


def test_annotation_is_deterministic_and_covered_by_the_manifest_digest(model_dir, tmp_path):
    files = scan_directory(model_dir)
    ann1, blob1, desc1 = chunk_index_annotations(files, chunk_size=CHUNK, cache_dir=None)
    ann2, blob2, _ = chunk_index_annotations(files, chunk_size=CHUNK, cache_dir=tmp_path / "c")
    assert ann1 == ann2 and blob1 == blob2
    parsed = index_descriptor_from_annotations(ann1)
    assert parsed is not None and parsed.digest == desc1.digest and parsed.size == len(blob1)
    a = pack_directory(model_dir, annotations=ann1)
    b = pack_directory(model_dir, annotations=ann2)
    assert a.manifest.digest == b.manifest.digest
    assert json.loads(a.manifest.raw)["annotations"][ci.ANN_CHUNK_INDEX] == ann1[ci.ANN_CHUNK_INDEX]
    validate_manifest(a.manifest.raw)
    # another index (other files) -> another manifest digest: the digest covers the index
    (model_dir / "config.json").write_text("{}")
    ann3, _, _ = chunk_index_annotations(
        scan_directory(model_dir), chunk_size=CHUNK, cache_dir=None
    )
    c = pack_directory(model_dir, annotations=ann3)
    assert c.manifest.digest != a.manifest.digest


def _pushed_with_index(model_dir):
    """The model packed with its chunk index named in the manifest and copied to a
    MemoryTarget as v1; the index blob and its descriptor are not pushed."""
    files = scan_directory(model_dir)
    ann, blob, desc = chunk_index_annotations(files, chunk_size=CHUNK, cache_dir=None)
    packed = pack_directory(model_dir, annotations=ann)
    target = MemoryTarget()
    copy_graph(packed.as_target(), packed.descriptor, target, tag="v1")
    return files, packed, target, blob, desc


def test_referrer_layout_and_push(model_dir, tmp_path):
    _, packed, target, blob, desc = _pushed_with_index(model_dir)
    ref_desc = push_chunk_index(target, packed.descriptor, blob, desc)
    assert push_chunk_index(target, packed.descriptor, blob, desc) == ref_desc  # idempotent
    found = target.referrers(packed.descriptor, ci.CHUNK_INDEX_ARTIFACT_TYPE)
    assert [d.digest for d in found] == [ref_desc.digest]
    referrer = chunk_index_referrer(desc, packed.descriptor)
    validate_manifest(referrer.raw)
    doc = json.loads(referrer.raw)
    assert doc["artifactType"] == ci.CHUNK_INDEX_ARTIFACT_TYPE
    assert doc["config"]["mediaType"] == mt.OCI_EMPTY
    assert doc["layers"][0]["digest"] == str(desc.digest)
    assert doc["subject"]["digest"] == str(packed.descriptor.digest)
    assert target.exists(desc)
    # the model manifest itself has no foreign layer
    assert all(
        layer.media_type.startswith(mt.MODEL_LAYER_PREFIX) for layer in packed.manifest.layers
    )


def test_referrer_survives_a_recursive_copy_to_a_layout(model_dir, tmp_path):
    _, packed, src, blob, desc = _pushed_with_index(model_dir)
    push_chunk_index(src, packed.descriptor, blob, desc)
    dst = LayoutStore(tmp_path / "layout").target(None)
    copy_graph(src, packed.descriptor, dst, tag="v1", recursive=True)
    assert dst.exists(desc)
    assert dst.referrers(packed.descriptor, ci.CHUNK_INDEX_ARTIFACT_TYPE)


def test_publish_for_an_annotated_manifest_checks_the_files(model_dir):
    files, packed, target, _, desc = _pushed_with_index(model_dir)
    assert not target.exists(desc)
    publish_chunk_index(target, packed.descriptor, files, chunk_size=CHUNK, cache_dir=None)
    assert target.exists(desc)
    (model_dir / "tokenizer.json").write_text("changed")
    with pytest.raises(InvalidInputError, match="files changed"):
        publish_chunk_index(
            target, packed.descriptor, scan_directory(model_dir), chunk_size=CHUNK, cache_dir=None
        )
    plain = pack_directory(model_dir)
    copy_graph(plain.as_target(), plain.descriptor, target, tag="plain")
    with pytest.raises(InvalidInputError, match="does not name a chunk index"):
        publish_chunk_index(target, plain.descriptor, files, cache_dir=None)


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        json.dumps(
            {"mediaType": "application/x-other", "digest": "sha256:" + "a" * 64, "size": 100}
        ),
        json.dumps(
            {"mediaType": ci.CHUNK_INDEX_MEDIA_TYPE, "digest": "sha256:" + "a" * 64, "size": 5}
        ),
        json.dumps(
            {
                "mediaType": ci.CHUNK_INDEX_MEDIA_TYPE,
                "digest": "sha256:" + "a" * 64,
                "size": 100,
                "annotations": {ci.ANN_TOC_DIGEST: "nope", ci.ANN_TOC_SIZE: "20"},
            }
        ),
        json.dumps(
            {
                "mediaType": ci.CHUNK_INDEX_MEDIA_TYPE,
                "digest": "sha256:" + "a" * 64,
                "size": 100,
                "annotations": {ci.ANN_TOC_DIGEST: "sha256:" + "b" * 64, ci.ANN_TOC_SIZE: "500"},
            }
        ),
        "x" * 70000,
    ],
)
def test_bad_annotations_are_refused(value):
    with pytest.raises(FormatError):
        index_descriptor_from_annotations({ci.ANN_CHUNK_INDEX: value})


def test_no_annotation_means_no_index():
    assert index_descriptor_from_annotations({}) is None
    assert index_descriptor_from_annotations({"other": "x"}) is None
    assert isinstance(Manifest, type)
