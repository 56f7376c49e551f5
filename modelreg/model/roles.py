"""Which ModelPack role a file plays, decided from its name, then its content.

ModelPack has five layer roles: ``weight`` (the parameters a runtime loads),
``weight.config`` (what a runtime needs to load them: model and tokenizer
configs), ``doc`` (for people: README, LICENSE, model cards), ``code``
(scripts, and files that configure tools) and ``dataset``. Readers act on the
role: Docker Model Runner loads every weight layer of a safetensors model as a
safetensors file; ``kit unpack --filter=model`` takes only weights. So:

* **weight only where a weight format is recognised**: by a weight extension
  (``.safetensors``, ``.gguf``, ``.bin``...), or, for a name that says
  nothing, by content (the magic bytes or header of safetensors, GGUF,
  PyTorch, pickle, NumPy, HDF5, TFLite, ONNX). A file with no extension is no
  longer a weight by default (issue 15: ``.gitattributes`` was one);
* **repository metadata is code**: ``.gitattributes``, ``.gitignore``,
  ``.github/``, ``.dockerignore``, ``.pre-commit-config.yaml`` and the like
  are read by tools (git, LFS, CI), not by people, and a runtime never loads
  them; ModelPack's ``code`` is the role for files tools act on. Any other
  dotfile is code too, marked untested;
* well-known names first (``config.json`` is weight.config, ``LICENSE`` doc,
  ``Makefile`` code), then extensions, then content.

A decision from a well-known name, extension or content is "tested"; a
fallback is marked with ``org.cncf.model.file.mediatype.untested: "true"`` so
that readers know it was not recognised. :attr:`RoleGuess.reason` says which
rule decided; ``inspect`` shows it (:func:`layer_role` explains the role of a
layer someone else wrote, from its media type).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final

from modelreg.model.annotations import PART_MEDIA_TYPE

__all__ = ["ROLE_ORDER", "WEIGHT_FORMATS", "LayerRole", "RoleGuess", "guess_role", "layer_role"]

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
_REPO_METADATA: Final = frozenset(
    {
        ".gitattributes",
        ".gitignore",
        ".gitmodules",
        ".gitkeep",
        ".git-blame-ignore-revs",
        ".mailmap",
        ".dockerignore",
        ".editorconfig",
        ".pre-commit-config.yaml",
        ".gitlab-ci.yml",
        ".hfignore",
    }
)
_REPO_METADATA_DIRS: Final = frozenset({".git", ".github", ".gitlab", ".circleci", ".husky"})
#: File formats (as :func:`modelreg.model.formats.detect_format` names them) that make a weight.
WEIGHT_FORMATS: Final = frozenset(
    {"safetensors", "gguf", "onnx", "pytorch", "pickle", "numpy", "hdf5", "keras", "tflite"}
)


@dataclass(frozen=True, slots=True)
class RoleGuess:
    role: str
    untested: bool = False
    reason: str = ""


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _by_name(p: PurePosixPath) -> RoleGuess | None:
    """The role a well-known name or extension gives, or None."""
    name = p.name.lower()
    ext = p.suffix.lower()
    if name in _REPO_METADATA or any(d.lower() in _REPO_METADATA_DIRS for d in p.parts[:-1]):
        return RoleGuess("code", reason="repository metadata")
    if _matches(name, _CONFIG_NAMES):
        return RoleGuess("weight.config", reason="known config name")
    if _matches(name, _CODE_NAMES):
        return RoleGuess("code", reason="known code name")
    if _matches(name, _DOC_NAMES):
        return RoleGuess("doc", reason="known doc name")
    if ext in _WEIGHT_EXT:
        return RoleGuess("weight", reason=f"weight extension {ext}")
    if any(part.lower() in _DATASET_DIRS for part in p.parts[:-1]) or ext in _DATASET_EXT:
        return RoleGuess("dataset", reason="dataset directory or extension")
    if ext in _CODE_EXT:
        return RoleGuess("code", reason=f"code extension {ext}")
    if ext in _DOC_EXT:
        return RoleGuess("doc", reason=f"doc extension {ext}")
    if ext in _CONFIG_EXT:
        return RoleGuess("weight.config", reason=f"config extension {ext}")
    return None


def guess_role(path: str, content_format: str | None = None) -> RoleGuess:
    """The role of a file from its relative POSIX path, then its content.

    ``content_format`` is what the file's first bytes say it is (see
    :func:`modelreg.model.formats.detect_format`); it is used only when the
    name decides nothing.
    """
    p = PurePosixPath(path)
    named = _by_name(p)
    if named is not None:
        return named
    if content_format in WEIGHT_FORMATS:
        return RoleGuess("weight", reason=f"{content_format} content")
    if p.name.startswith("."):
        return RoleGuess("code", untested=True, reason="unrecognised dotfile")
    return RoleGuess("doc", untested=True, reason="unrecognised name and content")


@dataclass(frozen=True, slots=True)
class LayerRole:
    """The role a layer plays, as read from its media type (any producer)."""

    role: str | None
    untested: bool
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"role": self.role, "untested": self.untested, "reason": self.reason}


_KITOPS_ROLES: Final = {
    "model": "weight",
    "modelpart": "weight",
    "dataset": "dataset",
    "code": "code",
    "docs": "doc",
}
_DOCKER_ROLES: Final = {
    "gguf": "weight",
    "safetensors": "weight",
    "mmproj": "weight",
    "license": "doc",
    "chat": "weight.config",
    "vllm": "weight.config",
    "model": "weight.config",
}


def _role_from_media_type(media_type: str) -> tuple[str | None, str]:
    lowered = media_type.lower()
    for prefix in ("application/vnd.cncf.model.", "application/vnd.cnai.model."):
        if lowered.startswith(prefix):
            role = lowered[len(prefix) :].split(".v1.", 1)[0]
            known = role in ROLE_ORDER
            return (role if known else None), "ModelPack media type"
    if lowered.startswith("application/vnd.kitops.modelkit."):
        kind = lowered.removeprefix("application/vnd.kitops.modelkit.").split(".", 1)[0]
        return _KITOPS_ROLES.get(kind), "KitOps media type"
    if lowered.startswith("application/vnd.docker.ai."):
        kind = lowered.removeprefix("application/vnd.docker.ai.").split(".", 1)[0]
        return _DOCKER_ROLES.get(kind), "Docker model media type"
    if lowered == PART_MEDIA_TYPE:
        return "weight", "part of a split weight file"
    return None, "media type names no role"


def layer_role(media_type: str, path: str | None, untested: bool) -> LayerRole:
    """Explain the role of a layer: what its media type says, and why modelreg would agree.

    For a ModelPack layer whose role is the one :func:`guess_role` gives its
    name, the reason is the name rule (what ``modelreg push`` decided); an
    untested layer says it was a fallback; otherwise the producer declared it.
    """
    role, source = _role_from_media_type(media_type)
    if role is None:
        return LayerRole(None, untested, source)
    if untested:
        return LayerRole(role, True, f"{source}, marked untested by its producer (a fallback)")
    if path is not None and source == "ModelPack media type":
        named = _by_name(PurePosixPath(path))
        if named is not None and named.role == role:
            return LayerRole(role, False, named.reason)
    return LayerRole(role, False, f"declared by the {source}")
