"""ModelPack roles decided from names, then content (issue 15: repository metadata
was packed as a weight, which Docker Model Runner would load as safetensors)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from gguf import GGUFWriter
from safetensors.numpy import save

from modelreg.model.pack import pack_directory
from modelreg.model.roles import guess_role, layer_role
from modelreg.oci import mediatypes as mt


@pytest.mark.parametrize(
    ("path", "role", "untested"),
    [
        (".gitattributes", "code", False),
        (".gitignore", "code", False),
        ("sub/.gitignore", "code", False),
        (".github/workflows/ci.yml", "code", False),
        (".pre-commit-config.yaml", "code", False),
        (".env", "code", True),
        ("NOTES", "doc", True),
        ("weights", "doc", True),
        ("model.safetensors", "weight", False),
        ("config.json", "weight.config", False),
        ("model-00001-of-00002.safetensors", "weight", False),
        ("model.safetensors.index.json", "weight.config", False),
        ("tokenizer.model", "weight.config", False),
        ("LICENSE", "doc", False),
        ("requirements.txt", "code", False),
        ("data/train.jsonl", "dataset", False),
        ("weird.xyz", "doc", True),
    ],
)
def test_names(path, role, untested):
    guess = guess_role(path)
    assert (guess.role, guess.untested) == (role, untested)
    assert guess.reason


@pytest.mark.parametrize("fmt", ["safetensors", "gguf", "pytorch", "pickle", "numpy"])
def test_content_makes_a_weight_only_when_the_name_says_nothing(fmt):
    assert guess_role("weights", content_format=fmt).role == "weight"
    assert guess_role("weights", content_format=fmt).reason == f"{fmt} content"
    assert guess_role("README.md", content_format=fmt).role == "doc"
    assert guess_role("weights", content_format="zip").role == "doc"


def _gguf(path):
    writer = GGUFWriter(str(path), "llama")
    writer.add_tensor("t", np.zeros((4,), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_pack_classifies_by_name_and_content(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    (root / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    (root / "config.json").write_text("{}")
    (root / "NOTES").write_text("plain text, no extension\n")
    (root / "weights").write_bytes(save({"w": np.zeros((2,), dtype=np.float32)}))
    _gguf(root / "ggml-model")
    (root / "model.safetensors").write_bytes(save({"x": np.ones((3,), dtype=np.float32)}))
    packed = pack_directory(root, analyzer=None)
    by_path = {layer.annotations[mt.ANN_FILEPATH]: layer for layer in packed.manifest.layers}
    roles = {p: d.media_type for p, d in by_path.items()}
    assert roles == {
        ".gitattributes": mt.model_layer("code"),
        "config.json": mt.model_layer("weight.config"),
        "NOTES": mt.model_layer("doc"),
        "weights": mt.model_layer("weight"),
        "ggml-model": mt.model_layer("weight"),
        "model.safetensors": mt.model_layer("weight"),
    }
    untested = {p for p, d in by_path.items() if d.annotations.get(mt.ANN_UNTESTED) == "true"}
    assert untested == {"NOTES"}


@pytest.mark.parametrize(
    ("media_type", "path", "untested", "role", "reason"),
    [
        (mt.model_layer("code"), ".gitattributes", False, "code", "repository metadata"),
        (mt.model_layer("doc"), "NOTES", True, "doc", "marked untested"),
        (mt.model_layer("weight"), "x.bin", False, "weight", "weight extension .bin"),
        (mt.model_layer("doc"), "x.bin", False, "doc", "declared by the ModelPack"),
        ("application/vnd.cnai.model.weight.v1.tar", "w", False, "weight", "declared"),
        ("application/vnd.kitops.modelkit.docs.v1.tar", None, False, "doc", "KitOps"),
        ("application/vnd.kitops.modelkit.model.v1.tar+gzip", None, False, "weight", "KitOps"),
        ("application/vnd.docker.ai.gguf.v3", None, False, "weight", "Docker"),
        ("application/vnd.docker.ai.license", None, False, "doc", "Docker"),
        ("application/vnd.oci.image.layer.v1.tar", "f", False, None, "names no role"),
    ],
)
def test_layer_role_explains_any_producer(media_type, path, untested, role, reason):
    decided = layer_role(media_type, path, untested)
    assert decided.role == role and reason in decided.reason
    json.dumps(decided.to_dict())


def test_safetensors_sniff_needs_a_header():
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    blob = struct.pack("<Q", len(header)) + header + b"\0\0\0\0"
    from modelreg.model.formats import detect_format

    assert detect_format("", blob) == "safetensors"
    assert guess_role("blob", content_format=detect_format("", blob)).role == "weight"
