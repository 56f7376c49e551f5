"""ModelPack metadata read from the model itself and from modelreg.toml / Kitfile."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from modelreg.errors import InvalidInputError
from modelreg.model import annotations as ann
from modelreg.model.metadata import (
    ModelMetadata,
    format_param_size,
    load_packaging_file,
    modelpack_dtype,
)
from modelreg.model.pack import pack_directory
from tests.schemas import validate_manifest, validate_model_config

MODELS = Path(__file__).resolve().parents[3] / "testdata" / "models"


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0"),
        (811, "811"),
        (115_008, "115k"),
        (350_400_000, "350m"),
        (1_234_567_890, "1.2b"),
        (1_250_000_000, "1.3b"),  # half up
        (8_030_261_248, "8b"),
        (70_553_706_496, "71b"),
        (999_600_000, "1b"),
        (6_738_415_616, "6.7b"),
        (1_700_000_000_000, "1.7t"),
    ],
)
def test_param_size_rounding(count, text):
    assert format_param_size(count) == text


@pytest.mark.parametrize(
    ("fmt", "dtype", "name"),
    [
        ("safetensors", "BF16", "bfloat16"),
        ("safetensors", "F16", "float16"),
        ("safetensors", "F32", "float32"),
        ("safetensors", "I8", "int8"),
        ("safetensors", "F8_E4M3", "float8_e4m3"),
        ("gguf", "Q4_K", "q4_k"),
        ("gguf", "F16", "float16"),
        ("gguf", "I8", "int8"),
        ("onnx", "FLOAT", "float32"),
        ("numpy", "<f4", "float32"),
        ("numpy", "<i8", "int64"),
    ],
)
def test_modelpack_dtype(fmt, dtype, name):
    assert modelpack_dtype(fmt, dtype) == name


EXPECTED = {
    "tiny-llm": {
        "format": "safetensors",
        "architecture": "llama",
        "paramSize": "115k",
        "precision": "bfloat16,float16,float32",
    },
    "tiny-gguf": {
        "format": "gguf",
        "architecture": "llama",
        "paramSize": "78k",
        "precision": "q8_0,q4_0,float32",
        "quantization": "Q8_0",
    },
    "tiny-onnx": {"format": "onnx", "paramSize": "811", "precision": "float32,float16,int64"},
    "pickle-model": {"format": "pytorch", "architecture": "tiny-linear"},
    "numpy-weights": {"format": "numpy", "paramSize": "54", "precision": "float32,int64"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_from_the_model(name):
    packed = pack_directory(MODELS / name)
    config = json.loads(packed.config)
    assert config["config"] == EXPECTED[name]
    validate_model_config(packed.config)
    validate_manifest(packed.manifest.raw)


def test_pickle_files_annotated_unsafe():
    packed = pack_directory(MODELS / "pickle-model")
    flags = {f.path: f.descriptor.annotations.get(ann.ANN_FILE_UNSAFE) for f in packed.files}
    assert flags == {"config.json": None, "model.pkl": "pickle", "pytorch_model.bin": "pickle"}
    assert not any(
        ann.ANN_FILE_UNSAFE in layer.annotations
        for layer in pack_directory(MODELS / "tiny-llm").manifest.layers
    )


def test_readme_license_and_quantization_config(tmp_path):
    root = tmp_path / "q"
    shutil.copytree(MODELS / "tiny-llm", root)
    cfg = json.loads((root / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (root / "config.json").write_text(json.dumps(cfg))
    config = json.loads(pack_directory(root).config)
    assert config["config"]["quantization"] == "gptq-int4"
    assert config["descriptor"]["licenses"] == ["Apache-2.0"]  # from the model card


MODELREG_TOML = """
[descriptor]
name = "acme/tiny"
version = "2.0.0"
family = "llama"
authors = ["Ada <ada@example.com>"]
licenses = ["Apache-2.0", "MIT"]
vendor = "ACME"
title = "Tiny"
description = "A tiny model"
sourceURL = "https://example.com/src"
doc_url = "https://example.com/doc"
revision = "abc123"
datasets_url = ["https://example.com/data"]
created_at = 2025-01-02T03:04:05Z

[config]
precision = "bfloat16"
[config.capabilities]
input_types = ["text"]
output_types = ["text"]
reasoning = false
languages = ["en", "fr"]

[pack]
ignore = ["notes/*"]
split = true
part_size = "16KiB"
"""


def test_modelreg_toml(tmp_path):
    root = tmp_path / "m"
    shutil.copytree(MODELS / "tiny-llm", root)
    (root / "modelreg.toml").write_text(MODELREG_TOML)
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("x")
    packed = pack_directory(root, metadata=ModelMetadata(version="3.0.0"))
    config = json.loads(packed.config)
    validate_model_config(packed.config)
    d = config["descriptor"]
    assert d["name"] == "acme/tiny" and d["version"] == "3.0.0"  # flags win over the file
    assert d["createdAt"] == "2025-01-02T03:04:05Z"
    assert d["sourceURL"] == "https://example.com/src" and d["docURL"] == "https://example.com/doc"
    assert d["licenses"] == ["Apache-2.0", "MIT"] and d["datasetsURL"] == [
        "https://example.com/data"
    ]
    assert config["config"]["precision"] == "bfloat16"  # the file overrides the analysis
    assert config["config"]["architecture"] == "llama"
    assert config["config"]["capabilities"] == {
        "inputTypes": ["text"],
        "outputTypes": ["text"],
        "reasoning": False,
        "languages": ["en", "fr"],
    }
    assert not any(f.path.startswith("notes/") for f in packed.files)
    assert any(f.parts for f in packed.files)  # [pack] split = true


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[descriptor]\nnmae = 'x'\n", "has no key 'nmae'"),
        ("[descriptor]\nauthors = 3\n", "list of strings"),
        ("[config]\ncapabilities = {inputTypes = ['smell']}\n", "modalities"),
        ("[config]\ncapabilities = {languages = ['english']}\n", "two-letter"),
        ("[stuff]\n", "unknown table"),
        ("[pack]\nsplit = 'yes'\n", "true or false"),
        ("[descriptor]\ncreated_at = 'yesterday'\n", "RFC 3339"),
        ("[descriptor]\ncreated_at = 2025-01-02T03:04:05\n", "RFC 3339"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_modelreg_toml_errors(tmp_path, text, match):
    (tmp_path / "modelreg.toml").write_text(text)
    with pytest.raises(InvalidInputError, match=match):
        load_packaging_file(tmp_path)


@pytest.mark.parametrize(
    ("text", "line", "said", "valid", "guess"),
    [
        (
            "# model\n[descriptor]\nname = 'x'\nlicence = 'MIT'\n",
            4,
            "[descriptor] has no key 'licence'",
            "authors, createdAt, created_at, datasetsURL",
            "licenses",
        ),
        (
            "[config]\nprecision = 'bf16'\n\n[pack]\nsplit = true\npartsize = '8MiB'\n",
            6,
            "[pack] has no key 'partsize'",
            "group_target, ignore, part_size, small_file_threshold, split",
            "part_size",
        ),
        (
            "[descriptor]\nname = 'x'\n[confg]\nprecision = 'bf16'\n",
            3,
            "unknown table [confg]",
            "config, descriptor, pack",
            "config",
        ),
        ("descriptor.nmae = 'x'\n", 1, "[descriptor] has no key 'nmae'", "name", "name"),
    ],
)
def test_modelreg_toml_typo_gives_line_valid_keys_and_a_guess(
    tmp_path, text, line, said, valid, guess
):
    (tmp_path / "modelreg.toml").write_text(text)
    with pytest.raises(InvalidInputError) as raised:
        load_packaging_file(tmp_path)
    assert raised.value.message.startswith(f"{tmp_path / 'modelreg.toml'}:{line}: {said}; valid")
    assert valid in raised.value.message
    assert raised.value.hint is not None and f"did you mean {guess!r}?" in raised.value.hint


def test_kitfile_is_read(tmp_path):
    root = tmp_path / "kit"
    root.mkdir()
    (root / "model.gguf").write_bytes((MODELS / "tiny-gguf" / "model.gguf").read_bytes())
    (root / "Kitfile").write_text(
        "manifestVersion: 1.0.0\n"
        "package:\n  name: kit-model\n  version: 0.1.0\n  description: from a Kitfile\n"
        "  license: Apache-2.0\n  authors: [Jozu, Ada]\n"
        "model:\n  path: model.gguf\n  license: MIT\n"
    )
    config = json.loads(pack_directory(root).config)
    validate_model_config(json.dumps(config).encode())
    assert config["descriptor"] == {
        "authors": ["Jozu", "Ada"],
        "name": "kit-model",
        "version": "0.1.0",
        "licenses": ["Apache-2.0", "MIT"],
        "description": "from a Kitfile",
    }
    assert config["config"]["format"] == "gguf"


def test_analyzer_can_be_disabled_or_replaced():
    bare = json.loads(pack_directory(MODELS / "tiny-llm", analyzer=None).config)
    assert bare["config"] == {"format": "safetensors"}
    custom = json.loads(
        pack_directory(MODELS / "tiny-llm", analyzer=lambda files: {"paramSize": "1b"}).config
    )
    assert custom["config"]["paramSize"] == "1b"


def test_unparseable_weights_warn_and_still_pack(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    packed = pack_directory(root, split=True, part_size="4KiB")
    assert packed.warnings and "header not understood" in packed.warnings[0]
    assert not packed.files[0].parts


def test_weights_of_unknown_content_are_marked_untested(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    (root / "weights.bin").write_bytes(bytes(range(256)) * 16)  # not a pickle, no known format
    shutil.copy(MODELS / "tiny-gguf" / "model.gguf", root / "model.gguf")
    layers = {
        layer.annotations["org.cncf.model.filepath"]: layer.annotations
        for layer in pack_directory(root).manifest.layers
    }
    assert layers["weights.bin"].get("org.cncf.model.file.mediatype.untested") == "true"
    assert "org.cncf.model.file.mediatype.untested" not in layers["model.gguf"]


def test_pickles_flagged_by_content_whatever_their_name(tmp_path):
    import pickle

    root = tmp_path / "m"
    root.mkdir()
    (root / "weights.dat").write_bytes(pickle.dumps([1, 2, 3], protocol=4))  # never loaded
    (root / "model.safetensors").write_bytes(pickle.dumps({"w": 1}, protocol=4))
    (root / "tokenizer.json").write_text('{"version": "1.0"}')
    flags = {
        f.path: f.descriptor.annotations.get(ann.ANN_FILE_UNSAFE)
        for f in pack_directory(root).files
    }
    assert flags == {
        "weights.dat": "pickle",
        "model.safetensors": "pickle",
        "tokenizer.json": None,
    }
