"""in-toto Statement v1, and cosign's signature statement.

* :class:`Statement`: an in-toto statement (v1, or v0.1 on read) with its
  subjects, predicate type and predicate.
* :func:`cosign_sign_statement`: cosign v3's signature statement, predicateType
  ``https://sigstore.dev/cosign/sign/v1``, subject = the manifest digest.

The model-transparency statement built on top of it lives in
:mod:`modelreg.attest.model_transparency`.

Statements are serialised once to bytes (compact JSON); signatures cover those
bytes, and a parsed :class:`Statement` keeps the bytes it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from modelreg._json import canonical_json, loads_strict, object_list
from modelreg.errors import FormatError, InvalidInputError
from modelreg.oci.digest import Digest

__all__ = [
    "COSIGN_SIGN_PREDICATE",
    "STATEMENT_TYPE",
    "STATEMENT_TYPE_V01",
    "Statement",
    "Subject",
    "cosign_sign_statement",
]

STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
STATEMENT_TYPE_V01: Final = "https://in-toto.io/Statement/v0.1"
COSIGN_SIGN_PREDICATE: Final = "https://sigstore.dev/cosign/sign/v1"
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
            raw = canonical_json(doc)
            object.__setattr__(self, "raw", raw)

    def has_subject_digest(self, digest: Digest) -> bool:
        """True when a subject names ``digest`` (the name is not checked)."""
        return any(s.digest.get(digest.algorithm) == digest.hex for s in self.subjects)

    @classmethod
    def parse(cls, payload: bytes, what: str = "in-toto statement") -> Statement:
        obj = loads_strict(payload, what=what)
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
        raw_subjects = object_list(
            obj, "subject", what=what, limit=MAX_SUBJECTS, counted="lists {} subjects"
        )
        subjects = []
        for i, raw in enumerate(raw_subjects):
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
