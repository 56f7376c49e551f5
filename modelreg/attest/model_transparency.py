"""The sigstore model-transparency v1.0 statement (what ``model_signing`` signs).

:func:`model_statement` builds the ``https://model_signing/signature/v1.0``
statement from a manifest without reading any weights: with one raw layer per
file, a file's SHA-256 *is* its layer digest (a file in a small-file group: the
digest its group's member table gives, :mod:`modelreg.model.grouping`). Which
files become resources is
decided by :class:`~modelreg.attest.coverage.Coverage`, the one rule the
directory verifier and ``model_signing`` share (git metadata is left to the
manifest signature). Resources are ordered the way
``model_signing`` orders them (by path components) and the subject digest is
SHA-256 over the concatenated raw resource digests in that order, so
``model_signing verify`` accepts it. Verifiers use the same pieces
(:func:`model_resources`, :func:`model_subject_digest`) to compare a signed
statement with a manifest or a directory.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from modelreg.attest.coverage import GIT_PATHS, Coverage, statement_ignore_paths
from modelreg.attest.intoto import Statement, Subject
from modelreg.errors import InvalidInputError
from modelreg.model import grouping
from modelreg.model.paths import safe_relpath
from modelreg.model.producers import layer_path
from modelreg.oci.manifest import Manifest

__all__ = [
    "MODEL_SIGNING_COMPAT_PREDICATE",
    "MODEL_SIGNING_DEFAULT_IGNORES",
    "MODEL_SIGNING_PREDICATE",
    "ModelResources",
    "model_resources",
    "model_statement",
    "model_subject_digest",
    "resource_sort_key",
]

MODEL_SIGNING_PREDICATE: Final = "https://model_signing/signature/v1.0"
MODEL_SIGNING_COMPAT_PREDICATE: Final = "https://model_signing/Digests/v0.1"
#: What ``model_signing`` ignores by default (git metadata); recorded in the statement.
MODEL_SIGNING_DEFAULT_IGNORES: Final = GIT_PATHS


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


def model_resources(manifest: Manifest, coverage: Coverage | None = None) -> ModelResources:
    """Per-file digests of the covered files of a manifest whose layers are one raw file
    each, or small-file groups whose member table lists each file's digest.

    ``coverage`` (default: ignore git metadata, as ``model_signing`` does) leaves
    files out. Raises :class:`InvalidInputError` when a layer is an archive, has
    no path, is not sha256, or when two layers claim the same path: such a
    manifest cannot be described file by file without reading its content.
    """
    covered = coverage if coverage is not None else Coverage.of()
    files: dict[str, str] = {}
    for layer in manifest.layers:
        rows = grouping.group_rows(layer)
        if rows is not None:
            # a small-file group: one resource per member, from its member table
            for row in rows:
                if row.path in files:
                    raise InvalidInputError(f"two layers claim the path {row.path!r}")
                files[row.path] = row.digest.hex
            continue
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
    files = {path: hex_digest for path, hex_digest in files.items() if covered.covers(path)}
    ordered = sorted(files.items(), key=lambda item: resource_sort_key(item[0]))
    return ModelResources(tuple(ordered))


def model_statement(
    manifest: Manifest,
    name: str,
    *,
    ignore_paths: Sequence[str] | None = None,
) -> Statement:
    """The model-transparency v1.0 statement for a manifest (no weights read).

    ``ignore_paths`` are left out besides git metadata, which is always left
    out (``model_signing verify`` skips it unless told otherwise). Raises
    :class:`InvalidInputError` when no file is left to sign.
    """
    every = model_resources(manifest, Coverage.of(git_paths=False))
    recorded = statement_ignore_paths((p for p, _ in every.files), ignore_paths or ())
    resources = model_resources(manifest, Coverage.of(recorded))
    if not resources.files:
        raise InvalidInputError(
            "no file of this model is covered by a model-level signature",
            hint="git metadata and ignored paths are left out; the manifest signature "
            "still covers every layer",
        )
    model_name = posixpath.basename(name.rstrip("/")) or "model"
    predicate = {
        "serialization": {
            "method": "files",
            "hash_type": "sha256",
            "allow_symlinks": False,
            "ignore_paths": recorded,
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
