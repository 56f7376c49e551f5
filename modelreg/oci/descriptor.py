"""OCI content descriptors."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from modelreg.errors import FormatError, InvalidDigestError
from modelreg.oci.digest import Digest

__all__ = ["Descriptor", "Platform", "annotations_from", "require_str"]

_MEDIA_TYPE_RE: Final = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
    r"(?:\s*;\s*[A-Za-z0-9!#$&^_.+-]+=[^;]*)*$"
)


def check_media_type(value: str, what: str) -> str:
    if not isinstance(value, str) or not _MEDIA_TYPE_RE.match(value):
        raise FormatError(
            f"invalid {what} {value!r}", hint="a media type looks like type/subtype[+suffix]"
        )
    return value


def require_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise FormatError(f"{where}: field {key!r} must be a string, got {value!r}")
    return value


def annotations_from(obj: Mapping[str, Any], where: str) -> Mapping[str, str]:
    raw = obj.get("annotations")
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise FormatError(f"{where}: annotations must map strings to strings")
    return dict(raw)


@dataclass(frozen=True, slots=True)
class Platform:
    architecture: str
    os: str
    variant: str | None = None

    def to_dict(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out


@dataclass(frozen=True, slots=True)
class Descriptor:
    """What a manifest says about a blob: media type, digest, size, annotations."""

    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    artifact_type: str | None = None
    urls: tuple[str, ...] = ()
    platform: Platform | None = None

    def __post_init__(self) -> None:
        check_media_type(self.media_type, "mediaType")
        if self.artifact_type is not None:
            check_media_type(self.artifact_type, "artifactType")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise FormatError(f"descriptor size must be a non-negative integer, got {self.size!r}")

    def __hash__(self) -> int:
        return hash((self.media_type, self.digest, self.size))

    @property
    def title(self) -> str | None:
        return self.annotations.get("org.opencontainers.image.title")

    def with_annotations(self, annotations: Mapping[str, str]) -> Descriptor:
        return Descriptor(
            media_type=self.media_type,
            digest=self.digest,
            size=self.size,
            annotations=dict(annotations),
            artifact_type=self.artifact_type,
            urls=self.urls,
            platform=self.platform,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.urls:
            out["urls"] = list(self.urls)
        if self.platform:
            out["platform"] = self.platform.to_dict()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_dict(cls, obj: Any, where: str = "descriptor") -> Descriptor:
        if not isinstance(obj, dict):
            raise FormatError(f"{where} must be a JSON object")
        size = obj.get("size")
        if not isinstance(size, int) or isinstance(size, bool):
            raise FormatError(f"{where}: size must be an integer, got {size!r}")
        try:
            digest = Digest.parse(require_str(obj, "digest", where))
        except InvalidDigestError as exc:
            raise FormatError(f"{where}: {exc.message}", hint=exc.hint) from exc
        platform = None
        raw_platform = obj.get("platform")
        if isinstance(raw_platform, dict):
            platform = Platform(
                architecture=str(raw_platform.get("architecture", "")),
                os=str(raw_platform.get("os", "")),
                variant=raw_platform.get("variant"),
            )
        artifact_type = obj.get("artifactType")
        if artifact_type is not None and not isinstance(artifact_type, str):
            raise FormatError(f"{where}: artifactType must be a string")
        urls = obj.get("urls") or []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise FormatError(f"{where}: urls must be a list of strings")
        return cls(
            media_type=check_media_type(require_str(obj, "mediaType", where), f"{where} mediaType"),
            digest=digest,
            size=size,
            annotations=annotations_from(obj, where),
            artifact_type=artifact_type,
            urls=tuple(urls),
            platform=platform,
        )

    @classmethod
    def for_bytes(
        cls,
        media_type: str,
        data: bytes,
        annotations: Mapping[str, str] | None = None,
        artifact_type: str | None = None,
    ) -> Descriptor:
        return cls(
            media_type=media_type,
            digest=Digest.from_bytes(data),
            size=len(data),
            annotations=dict(annotations or {}),
            artifact_type=artifact_type,
        )
