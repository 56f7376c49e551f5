"""The bundle format: CNCF TAG Runtime Wasm artifact + digest pin, built and read back."""

from __future__ import annotations

import json

import pytest

from modelreg.content.base import bytes_source
from modelreg.content.memory import MemoryTarget
from modelreg.errors import FormatError, IntegrityError, InvalidInputError, SizeLimitError
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import Manifest
from modelreg.oci.reference import Reference
from modelreg.wasm import ANN_ABI, ANN_MODEL, WasmConfig, build_bundle, read_bundle
from modelreg.wasm.bundle import module_kind
from tests.unit.wasm.guests import CAT

MODEL = Reference.parse("registry.example.com/team/mlp:v1")
MODEL_DESC = Descriptor(
    "application/vnd.oci.image.manifest.v1+json", Digest.from_bytes(b"model manifest"), 1234
)
COMPONENT = b"\x00asm\x0d\x00\x01\x00"
CREATED = "2024-06-07T12:00:00Z"


def built(**kw):
    return build_bundle(
        CAT, model=MODEL, model_descriptor=MODEL_DESC, title="cat.wasm", created=CREATED, **kw
    )


def stage(manifest: Manifest, blobs: dict[Descriptor, bytes]) -> tuple[MemoryTarget, Descriptor]:
    target = MemoryTarget()
    for desc, data in blobs.items():
        target.push(desc, bytes_source(data))
    desc = manifest.descriptor()
    target.push_manifest(desc, manifest.raw)
    return target, desc


def test_manifest_and_config_follow_the_wasm_artifact_layout():
    b = built()
    doc = json.loads(b.manifest.raw)
    assert doc["mediaType"] == mt.OCI_MANIFEST
    assert "artifactType" not in doc  # the config media type is the artifact type
    assert doc["config"]["mediaType"] == "application/vnd.wasm.config.v0+json"
    assert [layer["mediaType"] for layer in doc["layers"]] == ["application/wasm"]
    layer = doc["layers"][0]
    assert layer["digest"] == str(Digest.from_bytes(CAT)) and layer["size"] == len(CAT)
    assert layer["annotations"] == {mt.ANN_TITLE: "cat.wasm"}
    assert doc["annotations"] == {
        ANN_MODEL: f"registry.example.com/team/mlp@{MODEL_DESC.digest}",
        ANN_ABI: "modelreg/1",
        mt.ANN_CREATED: CREATED,
    }
    assert "subject" not in doc
    config = json.loads(b.config)
    assert config == {
        "created": CREATED,
        "architecture": "wasm",
        "os": "wasip1",
        "layerDigests": [layer["digest"]],
    }  # no "component": it describes a component's WIT world, required only for wasip2
    assert b.manifest.config.digest == Digest.from_bytes(b.config)


def test_the_pin_never_carries_a_tag_and_is_deterministic():
    a, b = built(), built()
    assert a.manifest.raw == b.manifest.raw
    assert ":v1" not in a.manifest.annotations[ANN_MODEL]


def test_created_defaults_to_source_date_epoch(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    b = build_bundle(CAT, model=MODEL, model_descriptor=MODEL_DESC)
    assert json.loads(b.config)["created"] == "2023-11-14T22:13:20Z"


def test_subject_is_optional_and_names_the_model():
    doc = json.loads(built(subject=True).manifest.raw)
    assert doc["subject"] == {
        "mediaType": MODEL_DESC.media_type,
        "digest": str(MODEL_DESC.digest),
        "size": MODEL_DESC.size,
    }


def test_components_and_garbage_are_refused():
    assert module_kind(CAT) == "module"
    assert module_kind(COMPONENT) == "component"
    with pytest.raises(InvalidInputError, match="component"):
        build_bundle(COMPONENT, model=MODEL, model_descriptor=MODEL_DESC)
    with pytest.raises(FormatError, match="not a WebAssembly binary"):
        module_kind(b"#!/bin/sh\n")
    with pytest.raises(InvalidInputError, match="not RFC 3339"):
        build_bundle(CAT, model=MODEL, model_descriptor=MODEL_DESC, created="yesterday")


def test_round_trip_verifies_every_byte():
    b = built(subject=True)
    target = b.as_target()
    bundle = read_bundle(target, b.descriptor)
    assert bundle.module == CAT
    assert bundle.model == MODEL.with_tag(None).with_digest(MODEL_DESC.digest)
    assert bundle.model_digest == MODEL_DESC.digest
    assert bundle.abi == "modelreg/1"
    assert bundle.config.os == "wasip1"


def test_a_tampered_module_is_refused():
    b = built()
    layer = b.manifest.layers[0]
    evil = CAT[:-1] + b"\x00"
    target = MemoryTarget()
    target.push(b.manifest.config, bytes_source(b.config))
    target._blobs[layer.digest] = evil  # the store serves other bytes under the digest
    target.push_manifest(b.descriptor, b.manifest.raw)
    with pytest.raises(IntegrityError):
        read_bundle(target, b.descriptor)


def test_an_oversized_module_is_refused_before_it_is_read():
    b = built()
    with pytest.raises(SizeLimitError, match="over the 16-byte limit"):
        read_bundle(b.as_target(), b.descriptor, max_module_bytes=16)


def _variant(
    config: dict | None = None, annotations: dict | None = None, layers=None, subject=None
):
    b = built()
    cfg = json.dumps(config).encode() if config is not None else b.config
    cfg_desc = Descriptor.for_bytes(b.manifest.config.media_type, cfg)
    manifest = Manifest(
        config=cfg_desc,
        layers=layers if layers is not None else b.manifest.layers,
        annotations=annotations if annotations is not None else b.manifest.annotations,
        subject=subject,
    )
    return stage(manifest, {cfg_desc: cfg, b.manifest.layers[0]: CAT})


def _config(**changes):
    base = json.loads(built().config)
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"config": _config(layerDigests=["sha256:" + "0" * 64])}, "do not match the manifest"),
        ({"config": _config(os="wasip2", component={"exports": [], "imports": []})}, "component"),
        ({"config": _config(architecture="amd64")}, "architecture is 'amd64'"),
        ({"config": _config(created=None)}, "'created' must be"),
        ({"annotations": {}}, "names no model"),
        ({"annotations": {ANN_MODEL: "registry.example.com/team/mlp:v1"}}, "names no digest"),
        (
            {"annotations": {ANN_MODEL: f"x/y@{MODEL_DESC.digest}", ANN_ABI: "modelreg/2"}},
            "built for host ABI 'modelreg/2'",
        ),
        (
            {"subject": Descriptor(MODEL_DESC.media_type, Digest.from_bytes(b"other"), 3)},
            "subject .* and its model pin .* disagree",
        ),
        ({"layers": ()}, "exactly one application/wasm layer"),
    ],
)
def test_malformed_bundles_are_refused(kwargs, message):
    target, desc = _variant(**kwargs)
    with pytest.raises(FormatError, match=message):
        read_bundle(target, desc)


def test_a_model_manifest_is_not_a_bundle():
    cfg = b"{}"
    cfg_desc = Descriptor.for_bytes(mt.MODEL_CONFIG, cfg)
    target, desc = stage(Manifest(config=cfg_desc, layers=()), {cfg_desc: cfg})
    with pytest.raises(FormatError, match="not a WebAssembly bundle"):
        read_bundle(target, desc)


def test_config_parser_is_strict():
    with pytest.raises(FormatError, match="not valid JSON"):
        WasmConfig.parse(b"{")
    with pytest.raises(FormatError, match="layerDigests"):
        WasmConfig.parse(json.dumps(_config(layerDigests=["md5:abc"])).encode())
    with pytest.raises(FormatError, match="over"):
        WasmConfig.parse(b" " * 70_000)
