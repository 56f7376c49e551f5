"""Which ModelPack role a file plays, guessed from its name.

A guess from a well-known name or extension is "tested"; a fallback for an
unknown name is marked with ``org.cncf.model.file.mediatype.untested: "true"``
so that readers know it was not recognised.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final

__all__ = ["ROLE_ORDER", "RoleGuess", "guess_role"]

# Layer order in the manifest: small configuration first (a pull or a lazy load
# can start with what it needs to set up), weights last.
ROLE_ORDER: Final = ("weight.config", "doc", "code", "dataset", "weight")

_WEIGHT_EXT: Final = frozenset(
    {
        ".safetensors",
        ".gguf",
        ".ggml",
        ".bin",
        ".pt",
        ".pth",
        ".ckpt",
        ".onnx",
        ".h5",
        ".hdf5",
        ".keras",
        ".pb",
        ".tflite",
        ".npz",
        ".npy",
        ".msgpack",
        ".pkl",
        ".pickle",
        ".joblib",
        ".mlmodel",
        ".pdparams",
        ".ot",
        ".llamafile",
        ".nemo",
        ".engine",
        ".plan",
    }
)
_CONFIG_NAMES: Final = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "preprocessor_config.json",
    "processor_config.json",
    "chat_template.*",
    "vocab.*",
    "merges.txt",
    "tokenizer.model",
    "*.tiktoken",
    "*.safetensors.index.json",
    "*.bin.index.json",
    "sentencepiece.*",
    "spiece.model",
    "params.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "adapter_config.json",
    "quantize_config.json",
)
_CONFIG_EXT: Final = frozenset({".json", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf"})
_DOC_NAMES: Final = (
    "readme*",
    "license*",
    "licence*",
    "notice*",
    "citation*",
    "changelog*",
    "authors*",
    "model_card*",
    "modelcard*",
    "use_policy*",
)
_DOC_EXT: Final = frozenset(
    {".md", ".rst", ".txt", ".pdf", ".html", ".png", ".jpg", ".jpeg", ".svg", ".gif"}
)
_CODE_NAMES: Final = ("requirements*.txt", "dockerfile", "makefile", "pyproject.toml", "setup.cfg")
_CODE_EXT: Final = frozenset(
    {
        ".py",
        ".sh",
        ".ipynb",
        ".js",
        ".ts",
        ".go",
        ".rs",
        ".c",
        ".cc",
        ".cpp",
        ".h",
        ".hpp",
        ".cu",
        ".java",
        ".rb",
        ".r",
        ".jl",
        ".lua",
        ".wat",
        ".wasm",
        ".so",
    }
)
_DATASET_EXT: Final = frozenset(
    {".csv", ".tsv", ".jsonl", ".parquet", ".arrow", ".tfrecord", ".avro", ".feather"}
)
_DATASET_DIRS: Final = frozenset({"data", "dataset", "datasets"})


@dataclass(frozen=True, slots=True)
class RoleGuess:
    role: str
    untested: bool = False


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def guess_role(path: str) -> RoleGuess:
    """Guess the role of a file from its relative POSIX path."""
    p = PurePosixPath(path)
    name = p.name.lower()
    ext = p.suffix.lower()
    if _matches(name, _CONFIG_NAMES):
        return RoleGuess("weight.config")
    if _matches(name, _CODE_NAMES):
        return RoleGuess("code")
    if _matches(name, _DOC_NAMES):
        return RoleGuess("doc")
    if ext in _WEIGHT_EXT:
        return RoleGuess("weight")
    if any(part.lower() in _DATASET_DIRS for part in p.parts[:-1]) or ext in _DATASET_EXT:
        return RoleGuess("dataset")
    if ext in _CODE_EXT:
        return RoleGuess("code")
    if ext in _DOC_EXT:
        return RoleGuess("doc")
    if ext in _CONFIG_EXT:
        return RoleGuess("weight.config")
    return RoleGuess("weight", untested=True) if not ext else RoleGuess("doc", untested=True)
