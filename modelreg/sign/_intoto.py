"""in-toto Statement v1, and the two statements modelreg signs.

* :func:`cosign_sign_statement`: cosign v3's signature statement, predicateType
  ``https://sigstore.dev/cosign/sign/v1``, subject = the manifest digest.
* :func:`model_statement`: the sigstore model-transparency v1.0 statement
  (``https://model_signing/signature/v1.0``) derived from a manifest without
  reading any weights: with one raw layer per file, a file's SHA-256 *is* its
  layer digest. Resources are ordered the way ``model_signing`` orders them
  (by path components) and the subject digest is SHA-256 over the concatenated
  raw resource digests in that order, so ``model_signing verify`` accepts it.

Statements are serialised once to bytes (compact JSON); signatures cover those
bytes, and a parsed :class:`Statement` keeps the bytes it came from.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from modelreg.errors import FormatError, InvalidInputError
from modelreg.model.unpack import layer_path, safe_relpath
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import Manifest

__all__ = [
    "COSIGN_SIGN_PREDICATE",
    "MODEL_SIGNING_COMPAT_PREDICATE",
    "MODEL_SIGNING_PREDICATE",
    "STATEMENT_TYPE",
    "STATEMENT_TYPE_V01",
    "ModelResources",
    "Statement",
    "Subject",
    "cosign_sign_statement",
    "model_resources",
    "model_statement",
    "model_subject_digest",
    "resource_sort_key",
]

STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
STATEMENT_TYPE_V01: Final = "https://in-toto.io/Statement/v0.1"
COSIGN_SIGN_PREDICATE: Final = "https://sigstore.dev/cosign/sign/v1"
MODEL_SIGNING_PREDICATE: Final = "https://model_signing/signature/v1.0"
MODEL_SIGNING_COMPAT_PREDICATE: Final = "https://model_signing/Digests/v0.1"
#: What ``model_signing`` ignores by default (git metadata); recorded in the statement.
MODEL_SIGNING_DEFAULT_IGNORES: Final = (".git", ".gitattributes", ".github", ".gitignore")
MAX_SUBJECTS: Final = 1024


@dataclass(frozen=True, slots=True)
class Subject:
    name: str
    digest: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "digest": dict(self.digest)}


@dataclass(frozen=True, slots=True)
class Statement:
    """An in-toto statement. ``raw`` holds the exact bytes that are signed."""

    subjects: tuple[Subject, ...]
    predicate_type: str
    predicate: Mapping[str, Any] = field(default_factory=dict)
    type_: str = STATEMENT_TYPE
    raw: bytes = b""

    def __post_init__(self) -> None:
        if not self.raw:
            doc = {
                "_type": self.type_,
                "subject": [s.to_dict() for s in self.subjects],
                "predicateType": self.predicate_type,
                "predicate": dict(self.predicate),
            }
            raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            object.__setattr__(self, "raw", raw)

    def has_subject_digest(self, digest: Digest) -> bool:
        """True when a subject names ``digest`` (the name is not checked)."""
        return any(s.digest.get(digest.algorithm) == digest.hex for s in self.subjects)

    @classmethod
    def parse(cls, payload: bytes, what: str = "in-toto statement") -> Statement:
        try:
            obj = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"{what} is not valid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise FormatError(f"{what} must be a JSON object")
        type_ = obj.get("_type")
        if type_ not in (STATEMENT_TYPE, STATEMENT_TYPE_V01):
            raise FormatError(f"{what} has _type {type_!r}, expected {STATEMENT_TYPE!r}")
        predicate_type = obj.get("predicateType")
        if not isinstance(predicate_type, str) or not predicate_type:
            raise FormatError(f"{what}: predicateType must be a non-empty string")
        predicate = obj.get("predicate", {})
        if predicate is None:
            predicate = {}
        if not isinstance(predicate, dict):
            raise FormatError(f"{what}: predicate must be a JSON object")
        raw_subjects = obj.get("subject")
        if not isinstance(raw_subjects, list) or not raw_subjects:
            raise FormatError(f"{what}: subject must be a non-empty list")
        if len(raw_subjects) > MAX_SUBJECTS:
            raise FormatError(f"{what} lists {len(raw_subjects)} subjects (limit {MAX_SUBJECTS})")
        subjects = []
        for i, raw in enumerate(raw_subjects):
            if not isinstance(raw, dict):
                raise FormatError(f"{what}: subject[{i}] must be an object")
            name = raw.get("name", "")
            digest = raw.get("digest", {})
            if (
                not isinstance(name, str)
                or not isinstance(digest, dict)
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in digest.items())
            ):
                raise FormatError(f"{what}: subject[{i}] needs a name and a digest map")
            subjects.append(Subject(name, {k: v.lower() for k, v in digest.items()}))
        return cls(
            subjects=tuple(subjects),
            predicate_type=predicate_type,
            predicate=predicate,
            type_=type_,
            raw=bytes(payload),
        )


def cosign_sign_statement(digest: Digest, name: str = "") -> Statement:
    """cosign v3's signature statement over a manifest digest."""
    if digest.algorithm != "sha256":
        raise InvalidInputError(
            f"cannot sign {digest}: in-toto subjects are bound on sha256",
            hint="sign a manifest addressed by a sha256 digest",
        )
    return Statement(
        subjects=(Subject(name, {"sha256": digest.hex}),),
        predicate_type=COSIGN_SIGN_PREDICATE,
        predicate={},
    )


# ------------------------------------------------------------ model-transparency


def resource_sort_key(name: str) -> tuple[str, ...]:
    """``model_signing`` sorts resources as ``PurePosixPath`` objects: by components."""
    return tuple(name.split("/"))


def model_subject_digest(resources: Sequence[tuple[str, str]]) -> str:
    """SHA-256 over the raw bytes of each resource digest, in the order given."""
    h = hashlib.sha256()
    for _, hex_digest in resources:
        h.update(bytes.fromhex(hex_digest))
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class ModelResources:
    """(path, sha256 hex) of every file of a model, in model_signing order."""

    files: tuple[tuple[str, str], ...]

    @property
    def root_digest(self) -> str:
        return model_subject_digest(self.files)


def _is_raw_file_layer(media_type: str) -> bool:
    lowered = media_type.lower()
    return not any(token in lowered for token in ("tar", "gzip", "zstd", "+zip"))


def model_resources(manifest: Manifest) -> ModelResources:
    """Per-file digests of a manifest whose layers are one raw file each.

    Raises :class:`InvalidInputError` when a layer is an archive, has no path,
    is not sha256, or when two layers claim the same path: such a manifest
    cannot be described file by file without reading its content.
    """
    files: dict[str, str] = {}
    for layer in manifest.layers:
        raw_path = layer_path(layer)
        if raw_path is None:
            raise InvalidInputError(
                f"layer {layer.digest.short} has no file path annotation",
                hint="a model-level signature needs every layer to name its file",
            )
        if not _is_raw_file_layer(layer.media_type):
            raise InvalidInputError(
                f"layer {raw_path!r} is an archive ({layer.media_type})",
                hint="a model-level signature needs one raw layer per file; "
                "the manifest signature still covers this model",
            )
        if layer.digest.algorithm != "sha256":
            raise InvalidInputError(f"layer {raw_path!r} is not addressed by sha256")
        path = safe_relpath(raw_path, "layer path")
        if path in files:
            raise InvalidInputError(f"two layers claim the path {path!r}")
        files[path] = layer.digest.hex
    ordered = sorted(files.items(), key=lambda item: resource_sort_key(item[0]))
    return ModelResources(tuple(ordered))


def model_statement(
    manifest: Manifest,
    name: str,
    *,
    ignore_paths: Sequence[str] | None = None,
) -> Statement:
    """The model-transparency v1.0 statement for a manifest (no weights read)."""
    resources = model_resources(manifest)
    if ignore_paths is None:
        names = {p for p, _ in resources.files}
        ignore_paths = [*MODEL_SIGNING_DEFAULT_IGNORES]
        if "model.sig" not in names:
            ignore_paths.append("model.sig")
    model_name = posixpath.basename(name.rstrip("/")) or "model"
    predicate = {
        "serialization": {
            "method": "files",
            "hash_type": "sha256",
            "allow_symlinks": False,
            "ignore_paths": list(ignore_paths),
        },
        "resources": [
            {"name": path, "algorithm": "sha256", "digest": hex_digest}
            for path, hex_digest in resources.files
        ],
    }
    return Statement(
        subjects=(Subject(model_name, {"sha256": resources.root_digest}),),
        predicate_type=MODEL_SIGNING_PREDICATE,
        predicate=predicate,
    )
