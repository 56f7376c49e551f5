"""What a model says about itself, and what its packager says about it.

Two sources fill the ModelPack config:

* **The model itself** (:func:`analyze`, the default analyzer of
  :func:`~modelreg.model.pack.pack_directory`): headers parsed by
  :mod:`modelreg.model.formats` (never the weights) and ``config.json``.

  ``architecture``
      ``config.json`` ``model_type`` (``"llama"``), else its first
      ``architectures`` entry; GGUF ``general.architecture``.
  ``format``
      the format holding most weight bytes (``safetensors``, ``gguf``, ``onnx``,
      ``pytorch``, ``pickle``, ``numpy``, ``keras``, ``tflite``...).
  ``paramSize``
      the element count of every tensor of that format, summed over its files
      (shards), written with the largest unit among ``k``, ``m``, ``b``, ``t``
      (powers of 1000) that keeps the value at least 1: one decimal below 10
      units, whole units from 10 on, rounded half up, a trailing ``.0``
      dropped. 1,234,567,890 → ``"1.2b"``; 350,400,000 → ``"350m"``; 8.03e9 →
      ``"8b"``; 70.55e9 → ``"71b"``; 115,008 → ``"115k"``.
  ``precision``
      the storage dtypes of those tensors in ModelPack style (``bfloat16``,
      ``float16``, ``float32``, ``int8``, ``float8_e4m3``, GGUF quantized types
      lowercased such as ``q4_0``), comma-separated when mixed, the dtype
      holding most bytes first.
  ``quantization``
      GGUF: the ``general.file_type`` name (``Q4_K_M``, ``Q8_0``), else the
      quantized tensor types (``Q4_0,Q8_0``); ``config.json``
      ``quantization_config``: ``quant_method`` and, when given, ``-int<bits>``
      (``gptq-int4``, ``awq-int4``, ``fp8``).

* **The packager** (:func:`load_packaging_file`): ``modelreg.toml`` in the model
  directory (format in docs/formats.md, "Describing a model"), or a KitOps
  ``Kitfile``; command-line flags override both.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from modelreg.errors import InvalidInputError
from modelreg.model.formats import ModelFileInfo

if TYPE_CHECKING:
    from modelreg.model.pack import PackedFile

__all__ = [
    "KITFILE_NAMES",
    "PACKAGING_FILE",
    "ModelMetadata",
    "PackagingFile",
    "analyze",
    "format_param_size",
    "load_packaging_file",
    "modelpack_dtype",
]

PACKAGING_FILE: Final = "modelreg.toml"
KITFILE_NAMES: Final = ("Kitfile", "kitfile", ".kitfile")
MAX_SMALL_FILE: Final = 1024 * 1024

_SAFETENSORS_DTYPES: Final = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "U16": "uint16",
    "I16": "int16",
    "F16": "float16",
    "BF16": "bfloat16",
    "U32": "uint32",
    "I32": "int32",
    "F32": "float32",
    "U64": "uint64",
    "I64": "int64",
    "F64": "float64",
    "C64": "complex64",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3": "float8_e4m3",
    "F8_E8M0": "float8_e8m0",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F4": "float4_e2m1",
    "F6_E2M3": "float6_e2m3",
    "F6_E3M2": "float6_e3m2",
}
_ONNX_DTYPES: Final = {
    "FLOAT": "float32",
    "FLOAT16": "float16",
    "BFLOAT16": "bfloat16",
    "DOUBLE": "float64",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT16": "int16",
    "UINT16": "uint16",
    "INT32": "int32",
    "UINT32": "uint32",
    "INT64": "int64",
    "UINT64": "uint64",
    "BOOL": "bool",
    "INT4": "int4",
    "UINT4": "uint4",
    "FLOAT8E4M3FN": "float8_e4m3fn",
    "FLOAT8E4M3FNUZ": "float8_e4m3fnuz",
    "FLOAT8E5M2": "float8_e5m2",
    "FLOAT8E5M2FNUZ": "float8_e5m2fnuz",
    "FLOAT4E2M1": "float4_e2m1",
}
_NUMPY_KINDS: Final = {"f": "float", "i": "int", "u": "uint", "b": "bool", "c": "complex"}
_GGUF_FILE_TYPES: Final = {
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}
_BY_EXTENSION: Final = {
    ".safetensors": "safetensors",
    ".gguf": "gguf",
    ".onnx": "onnx",
    ".pt": "pytorch",
    ".pth": "pytorch",
    ".bin": "pytorch",
    ".ckpt": "pytorch",
    ".h5": "keras",
    ".keras": "keras",
    ".tflite": "tflite",
    ".pkl": "pickle",
    ".npz": "numpy",
    ".npy": "numpy",
}
_FORMAT_ORDER: Final = tuple(dict.fromkeys(_BY_EXTENSION.values()))


def modelpack_dtype(fmt: str, dtype: str) -> str:
    """A format's dtype name in ModelPack style (``BF16`` → ``bfloat16``)."""
    if fmt == "safetensors" and dtype in _SAFETENSORS_DTYPES:
        return _SAFETENSORS_DTYPES[dtype]
    if fmt == "onnx" and dtype in _ONNX_DTYPES:
        return _ONNX_DTYPES[dtype]
    if fmt == "gguf":
        plain = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
        if dtype in plain:
            return plain[dtype]
        if dtype[:1] == "I" and dtype[1:].isdigit():
            return f"int{dtype[1:]}"
        return dtype.lower()
    if fmt == "numpy" and len(dtype) >= 3 and dtype[1] in _NUMPY_KINDS and dtype[2:].isdigit():
        kind = _NUMPY_KINDS[dtype[1]]
        return "bool" if kind == "bool" else f"{kind}{int(dtype[2:]) * 8}"
    return dtype.lower()


def format_param_size(count: int) -> str:
    """Element count → ModelPack ``paramSize`` (rounding rule in the module docstring)."""
    if count < 1000:
        return str(count)
    value = Decimal(count)
    unit = ""
    for name, scale in (("t", 10**12), ("b", 10**9), ("m", 10**6), ("k", 10**3)):
        if count >= scale:
            value = Decimal(count) / scale
            unit = name
            break
    places = Decimal("0.1") if value < 10 else Decimal("1")
    rounded = value.quantize(places, rounding=ROUND_HALF_UP)
    if rounded >= 1000 and unit != "t":  # 999.6m rounds to 1000m: say 1b
        return format_param_size(int(rounded * 10 ** {"k": 3, "m": 6, "b": 9}[unit]))
    text = f"{rounded:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}{unit}"


# ------------------------------------------------------------------------ analysis
def _read_small_json(path: Path) -> dict[str, Any] | None:
    try:
        if path.stat().st_size > MAX_SMALL_FILE:
            return None
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _quantization_from_config(doc: Mapping[str, Any]) -> str | None:
    qc = doc.get("quantization_config")
    if not isinstance(qc, dict):
        return None
    method = qc.get("quant_method")
    if not isinstance(method, str) or not method:
        if qc.get("load_in_4bit") is True:
            return "bitsandbytes-int4"
        if qc.get("load_in_8bit") is True:
            return "bitsandbytes-int8"
        return None
    bits = qc.get("bits")
    if isinstance(bits, int) and not isinstance(bits, bool) and bits > 0:
        return f"{method.lower()}-int{bits}"
    return method.lower()


def _gguf_quantization(info: ModelFileInfo) -> str | None:
    file_type = info.metadata.get("general.file_type")
    if isinstance(file_type, int) and file_type in _GGUF_FILE_TYPES:
        return _GGUF_FILE_TYPES[file_type]
    return info.quantization


def analyze(files: Sequence[PackedFile]) -> dict[str, Any]:
    """ModelPack ``config`` fields computed from packed files (see the module docstring).

    Uses each file's parsed header (``PackedFile.info``, filled by the packer)
    and reads ``config.json`` at the top of the model (at most 1 MiB); reads no
    weights. Fields that cannot be determined are left out.
    """
    out: dict[str, Any] = {}
    by_format: dict[str, list[tuple[PackedFile, ModelFileInfo | None]]] = {}
    weight_bytes: dict[str, int] = {}
    for f in files:
        info = f.info
        fmt = info.format if info is not None else _BY_EXTENSION.get(Path(f.path).suffix.lower())
        if fmt is None or fmt == "zip":
            continue
        by_format.setdefault(fmt, []).append((f, info))
        weight_bytes[fmt] = weight_bytes.get(fmt, 0) + f.size
    config_doc = next((_read_small_json(f.source) for f in files if f.path == "config.json"), None)
    if by_format:
        order = {name: i for i, name in enumerate(_FORMAT_ORDER)}
        primary = max(by_format, key=lambda k: (weight_bytes[k], -order.get(k, len(order))))
        out["format"] = primary
        infos = [i for _, i in by_format[primary] if i is not None and i.tensors]
        params = sum(i.param_count for i in infos)
        if params:
            out["paramSize"] = format_param_size(params)
        dtype_bytes: dict[str, int] = {}
        for info in infos:
            for t in info.tensors:
                name = modelpack_dtype(info.format, t.dtype)
                dtype_bytes[name] = dtype_bytes.get(name, 0) + t.nbytes
        if dtype_bytes:
            ranked = sorted(dtype_bytes, key=lambda d: (-dtype_bytes[d], d))
            out["precision"] = ",".join(ranked)
        if primary == "gguf":
            archs = sorted({i.architecture for i in infos if i.architecture})
            if archs:
                out["architecture"] = archs[0]
            quants = sorted({q for i in infos if (q := _gguf_quantization(i))})
            if quants:
                out["quantization"] = ",".join(quants)
    if config_doc is not None:
        model_type = config_doc.get("model_type")
        architectures = config_doc.get("architectures")
        if "architecture" not in out:
            if isinstance(model_type, str) and model_type:
                out["architecture"] = model_type
            elif isinstance(architectures, list) and architectures:
                first = architectures[0]
                if isinstance(first, str) and first:
                    out["architecture"] = first
        quant = _quantization_from_config(config_doc)
        if quant and "quantization" not in out:
            out["quantization"] = quant
    return out


# ------------------------------------------------------------ descriptor metadata
@dataclass(frozen=True)
class ModelMetadata:
    """The ``descriptor`` part of the ModelPack config, and extra ``config`` fields."""

    name: str | None = None
    version: str | None = None
    family: str | None = None
    authors: tuple[str, ...] = ()
    licenses: tuple[str, ...] = ()
    vendor: str | None = None
    title: str | None = None
    description: str | None = None
    source_url: str | None = None
    doc_url: str | None = None
    revision: str | None = None
    datasets_url: tuple[str, ...] = ()
    created_at: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)

    def descriptor_dict(self, default_name: str) -> dict[str, Any]:
        # One table in the order the keys have always been written (the config's bytes,
        # and so its digest, depend on it): an unset field is left out, except the name,
        # which falls back to ``default_name``; lists are written as JSON arrays.
        out: dict[str, Any] = {}
        for key, value in (
            ("createdAt", self.created_at),
            ("authors", self.authors),
            ("family", self.family),
            ("name", self.name or default_name),
            ("docURL", self.doc_url),
            ("sourceURL", self.source_url),
            ("datasetsURL", self.datasets_url),
            ("version", self.version),
            ("revision", self.revision),
            ("vendor", self.vendor),
            ("licenses", self.licenses),
            ("title", self.title),
            ("description", self.description),
        ):
            if value or key == "name":
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def merged_over(self, base: ModelMetadata) -> ModelMetadata:
        """This metadata where set, ``base`` elsewhere (config fields merged key by key)."""
        values: dict[str, Any] = {}
        for name in (
            "name",
            "version",
            "family",
            "authors",
            "licenses",
            "vendor",
            "title",
            "description",
            "source_url",
            "doc_url",
            "revision",
            "datasets_url",
            "created_at",
        ):
            mine = getattr(self, name)
            values[name] = mine if mine else getattr(base, name)
        values["config"] = {**base.config, **self.config}
        return ModelMetadata(**values)


_DESCRIPTOR_KEYS: Final = {
    "name": "name",
    "version": "version",
    "family": "family",
    "authors": "authors",
    "licenses": "licenses",
    "vendor": "vendor",
    "title": "title",
    "description": "description",
    "sourceURL": "source_url",
    "source_url": "source_url",
    "docURL": "doc_url",
    "doc_url": "doc_url",
    "revision": "revision",
    "datasetsURL": "datasets_url",
    "datasets_url": "datasets_url",
    "createdAt": "created_at",
    "created_at": "created_at",
}
_LIST_FIELDS: Final = frozenset({"authors", "licenses", "datasets_url"})
_CONFIG_KEYS: Final = {
    "architecture": "architecture",
    "format": "format",
    "paramSize": "paramSize",
    "param_size": "paramSize",
    "precision": "precision",
    "quantization": "quantization",
    "capabilities": "capabilities",
}
_CAPABILITY_KEYS: Final = {
    "inputTypes": ("inputTypes", list),
    "input_types": ("inputTypes", list),
    "outputTypes": ("outputTypes", list),
    "output_types": ("outputTypes", list),
    "knowledgeCutoff": ("knowledgeCutoff", str),
    "knowledge_cutoff": ("knowledgeCutoff", str),
    "reasoning": ("reasoning", bool),
    "toolUsage": ("toolUsage", bool),
    "tool_usage": ("toolUsage", bool),
    "reward": ("reward", bool),
    "languages": ("languages", list),
}
_MODALITIES: Final = frozenset({"text", "image", "audio", "video", "embedding", "other"})
_PACK_KEYS: Final = frozenset(
    {"ignore", "split", "part_size", "small_file_threshold", "group_target"}
)


@dataclass(frozen=True)
class PackagingFile:
    """What ``modelreg.toml`` (or a Kitfile) in a model directory says."""

    path: Path
    metadata: ModelMetadata = field(default_factory=ModelMetadata)
    ignore: tuple[str, ...] = ()
    split: bool | None = None
    part_size: int | str | None = None
    small_file_threshold: int | str | None = None
    """Files below this size share tar layers (0: never); see modelreg.model.grouping."""
    group_target: int | str | None = None
    """The average size of such a tar layer."""


_FORMAT_HINT: Final = "the format is in docs/formats.md, 'Describing a model: modelreg.toml'"


def _bad(where: str, message: str) -> InvalidInputError:
    return InvalidInputError(f"{where}: {message}", hint=_FORMAT_HINT)


_TABLES: Final = ("descriptor", "config", "pack")
_HEADER: Final = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\"' -]+?)\s*\]")


def _line_of(text: str, table: str | None, key: str | None) -> int | None:
    """The 1-based line of ``[table]`` (key None), or of ``key =`` inside it; ``None``
    when not found (tomllib gives values, not positions; this reads the lines again)."""
    current: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header is not None:
            current = header.group(1).replace('"', "").replace("'", "").strip()
            if key is None and current.split(".")[0] == table:
                return number
            continue
        if key is None:
            continue
        found = re.match(r"\s*[\"']?([A-Za-z0-9_.-]+)[\"']?\s*=", line)
        if found is None:
            continue
        name = found.group(1)
        if (current == table and name == key) or (current is None and name == f"{table}.{key}"):
            return number
    return None


def _unknown(
    path: Path, text: str, table: str | None, key: str, valid: Iterable[str]
) -> InvalidInputError:
    """An unknown table or key: where it is (line), what is valid, the closest match."""
    names = sorted(set(valid))
    line = _line_of(text, key if table is None else table, None if table is None else key)
    at = f"{path}:{line}" if line is not None else str(path)
    what = f"unknown table [{key}]" if table is None else f"[{table}] has no key {key!r}"
    close = difflib.get_close_matches(key, names, n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    return InvalidInputError(
        f"{at}: {what}; valid {'tables' if table is None else 'keys'}: {', '.join(names)}",
        hint=f"{guess}{_FORMAT_HINT}",
    )


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(where, "expected a string or a list of strings")
    return tuple(value)


def _capabilities(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(where, "expected a table")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key not in _CAPABILITY_KEYS:
            known = ", ".join(_CAPABILITY_KEYS)
            raise _bad(f"{where}.{key}", f"unknown capability (known: {known})")
        name, kind = _CAPABILITY_KEYS[key]
        if kind is bool and not isinstance(item, bool):
            raise _bad(f"{where}.{key}", "expected true or false")
        if kind is str and not isinstance(item, str):
            raise _bad(f"{where}.{key}", "expected a string")
        if kind is list:
            items = _str_list(item, f"{where}.{key}")
            if name in ("inputTypes", "outputTypes") and not set(items) <= _MODALITIES:
                raise _bad(f"{where}.{key}", f"modalities are {', '.join(sorted(_MODALITIES))}")
            if name == "languages" and not all(len(x) == 2 and x.isalpha() for x in items):
                raise _bad(f"{where}.{key}", "languages are two-letter ISO 639-1 codes")
            item = list(items)
        out[name] = item
    return out


def _date_time(value: Any, where: str) -> str:
    """An RFC 3339 date-time with a time zone (TOML datetime or string)."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise _bad(where, "expected an RFC 3339 date-time such as 2025-01-02T03:04:05Z")
        return value
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.isoformat().replace("+00:00", "Z")
    raise _bad(where, "expected an RFC 3339 date-time such as 2025-01-02T03:04:05Z")


def _descriptor_value(attr: str, value: Any, where: str) -> Any:
    if attr in _LIST_FIELDS:
        return _str_list(value, where)
    if attr == "created_at":
        return _date_time(value, where)
    if isinstance(value, str):
        return value
    raise _bad(where, "expected a string")


def _config_value(name: str, value: Any, where: str) -> Any:
    if name == "capabilities":
        return _capabilities(value, where)
    if isinstance(value, str):
        return value
    raise _bad(where, "expected a string")


def _table(
    doc: dict[str, Any],
    table: str,
    keys: Mapping[str, str],
    read: Callable[[str, Any, str], Any],
    path: Path,
    text: str,
) -> dict[str, Any]:
    """``[descriptor]`` or ``[config]`` of a modelreg.toml: each key known (an unknown one
    is refused naming the valid ones) and renamed to its field, its value checked by
    ``read(field, value, where)`` (``where`` names the file, table and key for errors)."""
    raw = doc.get(table, {})
    if not isinstance(raw, dict):
        raise _bad(f"{path} [{table}]", "expected a table")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in keys:
            raise _unknown(path, text, table, key, keys)
        out[keys[key]] = read(keys[key], value, f"{path} [{table}] {key}")
    return out


def _parse_modelreg_toml(path: Path) -> PackagingFile:
    where = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_SMALL_FILE:
            raise _bad(where, f"{size} bytes is too large for a packaging file")
        text = path.read_text(encoding="utf-8")
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _bad(where, f"not valid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise _bad(where, f"cannot be read: {exc}") from exc
    for table in doc:
        if table not in _TABLES:
            raise _unknown(path, text, None, table, _TABLES)
    values = _table(doc, "descriptor", _DESCRIPTOR_KEYS, _descriptor_value, path, text)
    config = _table(doc, "config", _CONFIG_KEYS, _config_value, path, text)
    pack = doc.get("pack", {})
    if not isinstance(pack, dict):
        raise _bad(f"{where} [pack]", f"expected a table with {', '.join(sorted(_PACK_KEYS))}")
    for key in pack:
        if key not in _PACK_KEYS:
            raise _unknown(path, text, "pack", key, _PACK_KEYS)
    split = pack.get("split")
    if split is not None and not isinstance(split, bool):
        raise _bad(f"{where} [pack] split", "expected true or false")
    part_size = pack.get("part_size")
    if isinstance(part_size, bool) or not isinstance(part_size, int | str | None):
        raise _bad(f"{where} [pack] part_size", "expected bytes or a size such as '64MiB'")
    sizes: dict[str, int | str | None] = {}
    for key in ("small_file_threshold", "group_target"):
        value = pack.get(key)
        if isinstance(value, bool) or not isinstance(value, int | str | None):
            raise _bad(f"{where} [pack] {key}", "expected bytes or a size such as '1MiB'")
        sizes[key] = value
    return PackagingFile(
        path=path,
        metadata=ModelMetadata(config=config, **values),
        ignore=_str_list(pack.get("ignore", []), f"{where} [pack] ignore"),
        split=split,
        part_size=part_size,
        small_file_threshold=sizes["small_file_threshold"],
        group_target=sizes["group_target"],
    )


def _parse_kitfile(path: Path) -> PackagingFile | None:
    try:
        import yaml  # optional: KitOps' Kitfile is YAML
    except ImportError:
        return None
    where = str(path)
    try:
        if path.stat().st_size > MAX_SMALL_FILE:
            raise _bad(where, "too large for a Kitfile")
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise _bad(where, f"not valid YAML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise _bad(where, f"cannot be read: {exc}") from exc
    if not isinstance(doc, dict):
        raise _bad(where, "a Kitfile is a YAML mapping")
    return PackagingFile(path=path, metadata=metadata_from_kitfile(doc))


def metadata_from_kitfile(doc: Mapping[str, Any]) -> ModelMetadata:
    """Descriptor fields of a KitOps Kitfile (YAML in a directory, JSON as a ModelKit config).

    ``package.name/version/description/authors`` and every ``license`` of the
    package, model, model parts, code and datasets (sorted, unique), as KitOps
    itself does when it writes a ModelPack config.
    """

    def text(obj: Any, key: str) -> str | None:
        value = obj.get(key) if isinstance(obj, dict) else None
        return value if isinstance(value, str) and value else None

    package = doc.get("package") if isinstance(doc.get("package"), dict) else {}
    licenses: set[str] = set()
    sections: list[Any] = [package, doc.get("model")]
    model = doc.get("model")
    if isinstance(model, dict) and isinstance(model.get("parts"), list):
        sections += model["parts"]
    for key in ("code", "datasets", "docs"):
        if isinstance(doc.get(key), list):
            sections += doc[key]
    for section in sections:
        lic = text(section, "license")
        if lic:
            licenses.add(lic)
    authors = package.get("authors") if isinstance(package, dict) else None
    return ModelMetadata(
        name=text(package, "name"),
        version=text(package, "version"),
        description=text(package, "description"),
        authors=tuple(a for a in (authors or ()) if isinstance(a, str))
        if isinstance(authors, list)
        else (),
        licenses=tuple(sorted(licenses)),
    )


def load_packaging_file(root: str | os.PathLike[str]) -> PackagingFile | None:
    """``modelreg.toml`` in ``root``, else a KitOps Kitfile there (if PyYAML is present)."""
    base = Path(root)
    candidate = base / PACKAGING_FILE
    if candidate.is_file():
        return _parse_modelreg_toml(candidate)
    for name in KITFILE_NAMES:
        kitfile = base / name
        if kitfile.is_file():
            return _parse_kitfile(kitfile)
    return None


def readme_licenses(path: Path) -> tuple[str, ...]:
    """``license:`` from a Hugging Face model card's front matter (``README.md``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64 * 1024).decode("utf-8", errors="replace")
    except OSError:
        return ()
    if not head.startswith("---"):
        return ()
    end = head.find("\n---", 3)
    if end < 0:
        return ()
    for line in head[3:end].splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "license":
            value = value.strip().strip("'\"")
            spdx = _SPDX_CASE.get(value.lower(), value)
            return (spdx,) if spdx and spdx != "other" else ()
    return ()


_SPDX_CASE: Final = {
    "apache-2.0": "Apache-2.0",
    "mit": "MIT",
    "bsd-3-clause": "BSD-3-Clause",
    "bsd-2-clause": "BSD-2-Clause",
    "cc-by-4.0": "CC-BY-4.0",
    "cc-by-sa-4.0": "CC-BY-SA-4.0",
    "cc-by-nc-4.0": "CC-BY-NC-4.0",
    "cc0-1.0": "CC0-1.0",
    "gpl-3.0": "GPL-3.0-only",
    "lgpl-3.0": "LGPL-3.0-only",
    "mpl-2.0": "MPL-2.0",
    "openrail": "OpenRAIL",
    "llama2": "LicenseRef-llama2",
    "llama3": "LicenseRef-llama3",
    "llama3.1": "LicenseRef-llama3.1",
    "gemma": "LicenseRef-gemma",
}
