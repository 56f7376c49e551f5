"""OCI image manifests and indexes, with ``artifactType``, ``subject`` and annotations.

A parsed manifest keeps the exact bytes it came from: digests are always computed
over those bytes, never over a re-serialisation. Those bytes are read with the one
strict reader (:mod:`modelreg._json`: a duplicate key, ``NaN`` or more than
:data:`MAX_MANIFEST_BYTES` is refused, since tools would read such a manifest
differently); :func:`canonical_json` is re-exported here for the code that builds them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from modelreg._json import canonical_json, loads_strict
from modelreg.errors import FormatError, SizeLimitError
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor, annotations_from, check_media_type
from modelreg.oci.digest import Digest

__all__ = [
    "MAX_MANIFEST_BYTES",
    "Index",
    "Manifest",
    "canonical_json",
    "parse_manifest_or_index",
]

MAX_MANIFEST_BYTES: Final = 4 * 1024 * 1024
MAX_LAYERS: Final = 10_000


def _load(data: bytes, what: str) -> dict[str, Any]:
    obj = loads_strict(
        data,
        what=what,
        max_bytes=MAX_MANIFEST_BYTES,
        hint="this is not a manifest modelreg will read",
    )
    if not isinstance(obj, dict):
        raise FormatError(f"{what} must be a JSON object")
    if obj.get("schemaVersion") != 2:
        raise FormatError(
            f"{what} has schemaVersion {obj.get('schemaVersion')!r}; only 2 is supported"
        )
    return obj


def _descriptor_list(obj: Mapping[str, Any], key: str, what: str) -> tuple[Descriptor, ...]:
    raw = obj.get(key)
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise FormatError(f"{what}: {key} must be a list")
    if len(raw) > MAX_LAYERS:
        raise SizeLimitError(f"{what} lists {len(raw)} {key}, over the limit of {MAX_LAYERS}")
    return tuple(Descriptor.from_dict(d, f"{what} {key}[{i}]") for i, d in enumerate(raw))


def _optional_str(obj: Mapping[str, Any], key: str, what: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise FormatError(f"{what}: {key} must be a string")
    return value


class _Node:
    """What a manifest and an index share: the exact bytes are their identity (built
    from the fields when none are given), and the same envelope around their body."""

    __slots__ = ()
    _TYPES: ClassVar[frozenset[str]]
    _KIND: ClassVar[str]
    media_type: str
    artifact_type: str | None
    subject: Descriptor | None
    annotations: Mapping[str, str]
    raw: bytes

    def __post_init__(self) -> None:
        if self.media_type not in self._TYPES:
            raise FormatError(f"not an image {self._KIND} media type: {self.media_type!r}")
        if not self.raw:
            object.__setattr__(self, "raw", canonical_json(self.to_dict()))

    @property
    def digest(self) -> Digest:
        return Digest.from_bytes(self.raw)

    @property
    def effective_artifact_type(self) -> str | None:
        """The type a referrers index lists this under: ``artifactType`` (an index has
        no config to fall back on)."""
        return self.artifact_type

    def is_referrer_of(self, subject: Digest, artifact_type: str | None = None) -> bool:
        """Whether this names ``subject`` as its subject (and is of ``artifact_type`` when
        one is given): what a referrers listing holds."""
        if self.subject is None or self.subject.digest != subject:
            return False
        return not artifact_type or self.effective_artifact_type == artifact_type

    def descriptor(self, annotations: Mapping[str, str] | None = None) -> Descriptor:
        return Descriptor(
            media_type=self.media_type,
            digest=self.digest,
            size=len(self.raw),
            artifact_type=self.effective_artifact_type,
            annotations=dict(annotations or {}),
        )

    def _body(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        out.update(self._body())
        if self.subject:
            out["subject"] = self.subject.to_dict()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True, slots=True)
class Manifest(_Node):
    """An OCI image manifest (also read: Docker schema 2)."""

    _TYPES: ClassVar[frozenset[str]] = mt.MANIFEST_TYPES
    _KIND: ClassVar[str] = "manifest"

    config: Descriptor
    layers: tuple[Descriptor, ...]
    media_type: str = mt.OCI_MANIFEST
    artifact_type: str | None = None
    subject: Descriptor | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    raw: bytes = b""

    @property
    def effective_artifact_type(self) -> str:
        """``artifactType``, else the config media type (image-spec guidance)."""
        return self.artifact_type or self.config.media_type

    def _body(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "layers": [x.to_dict() for x in self.layers]}

    @classmethod
    def parse(cls, data: bytes, what: str = "manifest") -> Manifest:
        obj = _load(data, what)
        media_type = obj.get("mediaType") or mt.OCI_MANIFEST
        if media_type not in mt.MANIFEST_TYPES:
            raise FormatError(f"{what} has mediaType {media_type!r}, not an image manifest")
        config = obj.get("config")
        if config is None:
            raise FormatError(f"{what} has no config descriptor")
        subject = obj.get("subject")
        artifact_type = _optional_str(obj, "artifactType", what)
        if artifact_type is not None:
            check_media_type(artifact_type, f"{what} artifactType")
        return cls(
            config=Descriptor.from_dict(config, f"{what} config"),
            layers=_descriptor_list(obj, "layers", what),
            media_type=media_type,
            artifact_type=artifact_type,
            subject=Descriptor.from_dict(subject, f"{what} subject") if subject else None,
            annotations=annotations_from(obj, what),
            raw=bytes(data),
        )


@dataclass(frozen=True, slots=True)
class Index(_Node):
    """An OCI image index (also read: Docker manifest list)."""

    _TYPES: ClassVar[frozenset[str]] = mt.INDEX_TYPES
    _KIND: ClassVar[str] = "index"

    manifests: tuple[Descriptor, ...]
    media_type: str = mt.OCI_INDEX
    artifact_type: str | None = None
    subject: Descriptor | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    raw: bytes = b""

    def _body(self) -> dict[str, Any]:
        return {"manifests": [m.to_dict() for m in self.manifests]}

    @classmethod
    def parse(cls, data: bytes, what: str = "index") -> Index:
        obj = _load(data, what)
        media_type = obj.get("mediaType") or mt.OCI_INDEX
        if media_type not in mt.INDEX_TYPES:
            raise FormatError(f"{what} has mediaType {media_type!r}, not an image index")
        subject = obj.get("subject")
        return cls(
            manifests=_descriptor_list(obj, "manifests", what),
            media_type=media_type,
            artifact_type=_optional_str(obj, "artifactType", what),
            subject=Descriptor.from_dict(subject, f"{what} subject") if subject else None,
            annotations=annotations_from(obj, what),
            raw=bytes(data),
        )


def parse_manifest_or_index(
    data: bytes, media_type: str | None = None, what: str = "manifest"
) -> Manifest | Index:
    """Parse by the declared media type, else by the content's own ``mediaType``/shape."""
    declared = media_type
    if declared not in mt.ALL_MANIFEST_TYPES:
        obj = _load(data, what)
        declared = obj.get("mediaType")
        if declared not in mt.ALL_MANIFEST_TYPES:
            declared = mt.OCI_INDEX if "manifests" in obj else mt.OCI_MANIFEST
    if declared in mt.INDEX_TYPES:
        return Index.parse(data, what)
    return Manifest.parse(data, what)


def empty_config() -> Descriptor:
    return Descriptor(mt.OCI_EMPTY, Digest.parse(mt.EMPTY_DIGEST), 2)


def children(node: Manifest | Index) -> Sequence[Descriptor]:
    """Descriptors a manifest or index points at (config first, then layers / manifests)."""
    if isinstance(node, Manifest):
        return (node.config, *node.layers)
    return node.manifests
