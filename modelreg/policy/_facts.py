"""What a policy is evaluated against: facts gathered by a separate I/O step.

These types are pure data. :func:`modelreg.policy.gather_facts` fills them from a
registry (resolve, inspect, verify); tests and other callers may build them directly.
The verification types are structural (:class:`VerificationResultLike`) so that the pure
core depends on the *shape* of :mod:`modelreg.verify` results, not on its I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

__all__ = [
    "ANN_FILE_UNSAFE",
    "PICKLE_EXTENSIONS",
    "ArtifactFacts",
    "AttestationLike",
    "Facts",
    "FileFact",
    "SignatureLike",
    "StepError",
    "VerificationOutcome",
    "VerificationResultLike",
]

ANN_FILE_UNSAFE: Final = "org.cncf.model.file.unsafe"
"""Layer annotation other tools set on pickle-based (code-executing) files; modelreg's
packer writes ``dev.modelreg.file.unsafe: pickle`` (both are read)."""

PICKLE_EXTENSIONS: Final = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib")
"""File extensions of pickle-based formats (loading them can execute code)."""


class SignatureLike(Protocol):
    @property
    def authority(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def signer(self) -> str: ...
    @property
    def issuer(self) -> str | None: ...


class AttestationLike(Protocol):
    @property
    def predicate_type(self) -> str: ...
    @property
    def predicate(self) -> Mapping[str, Any]: ...
    @property
    def signer(self) -> str: ...


class VerificationResultLike(Protocol):
    """The shape of ``modelreg.verify.VerificationResult``."""

    @property
    def digest(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def signatures(self) -> Sequence[SignatureLike]: ...
    @property
    def attestations(self) -> Sequence[AttestationLike]: ...
    @property
    def failures(self) -> Sequence[str]: ...


@dataclass(frozen=True, slots=True)
class StepError:
    """A step that could not run (resolve, inspect, verify): the decision fails closed."""

    step: str
    message: str

    def __str__(self) -> str:
        return f"{self.step} could not run: {self.message}"


VerificationOutcome = VerificationResultLike | StepError


@dataclass(frozen=True, slots=True)
class FileFact:
    """One layer of the artifact, as its manifest describes it (no content read)."""

    path: str | None
    media_type: str
    size: int
    digest: str
    unsafe: str | None = None
    """Value of the ``org.cncf.model.file.unsafe`` annotation, if any."""

    @property
    def is_archive(self) -> bool:
        """A tar layer: the files inside are not listed in the manifest."""
        mt = self.media_type.lower()
        return ".tar" in mt or mt.endswith(("+gzip", "+zstd", ".zip"))

    @property
    def is_pickle(self) -> bool:
        if self.unsafe is not None and self.unsafe.strip().lower() not in ("false", "0", "no"):
            return True
        name = (self.path or "").lower()
        return name.endswith(PICKLE_EXTENSIONS)


@dataclass(frozen=True, slots=True)
class ArtifactFacts:
    """The artifact's manifest-level description (from ``Client.inspect``)."""

    media_type: str
    artifact_type: str | None
    config: Mapping[str, Any] | None
    files: tuple[FileFact, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "artifactType": self.artifact_type,
            "config": self.config,
            "totalSize": self.total_size,
            "annotations": dict(self.annotations),
            "files": [
                {
                    "path": f.path,
                    "mediaType": f.media_type,
                    "size": f.size,
                    "digest": f.digest,
                    "pickle": f.is_pickle,
                    "archive": f.is_archive,
                }
                for f in self.files
            ],
        }


@dataclass(frozen=True)
class Facts:
    """Everything known about one reference when the policy is evaluated.

    ``name`` is ``registry/repository`` (what ``match.references`` globs see);
    ``digest`` is what the tag resolved to (None when resolution failed: see
    ``errors``). ``verifications`` maps a policy's digest to the verification
    result under that policy's authorities (or the :class:`StepError` that stopped it).
    """

    reference: str
    name: str
    digest: str | None
    artifact: ArtifactFacts | None = None
    verifications: Mapping[str, VerificationOutcome] = field(default_factory=dict)
    errors: tuple[StepError, ...] = ()
