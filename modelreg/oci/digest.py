"""Content digests: ``algorithm:encoded`` (OCI image-spec, descriptor.md#digests)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from modelreg.errors import InvalidDigestError

__all__ = ["SUPPORTED_ALGORITHMS", "Digest", "Hasher"]

# algorithm -> length of the lowercase hex encoding
SUPPORTED_ALGORITHMS: Final[dict[str, int]] = {"sha256": 64, "sha512": 128}
_GRAMMAR = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")


@dataclass(frozen=True, slots=True)
class Digest:
    """A validated content digest such as ``sha256:2c26b4...``."""

    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        expected = SUPPORTED_ALGORITHMS.get(self.algorithm)
        if expected is None:
            raise InvalidDigestError(
                f"unsupported digest algorithm {self.algorithm!r}",
                hint="use sha256 or sha512",
            )
        if len(self.hex) != expected or not all(c in "0123456789abcdef" for c in self.hex):
            raise InvalidDigestError(
                f"invalid {self.algorithm} digest {self.algorithm}:{self.hex!r}",
                hint=f"a {self.algorithm} digest is {expected} lowercase hex characters",
            )

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``algorithm:hex``; the error quotes the input and says what is allowed."""
        if not isinstance(text, str) or not _GRAMMAR.match(text):
            raise InvalidDigestError(
                f"invalid digest {text!r}",
                hint="a digest looks like sha256:<64 lowercase hex> or sha512:<128 lowercase hex>",
            )
        algorithm, _, encoded = text.partition(":")
        return cls(algorithm, encoded)

    @classmethod
    def from_bytes(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        hasher = Hasher(algorithm)
        hasher.update(data)
        return hasher.digest()

    def hasher(self) -> Hasher:
        """A fresh hasher of this digest's algorithm."""
        return Hasher(self.algorithm)

    @property
    def short(self) -> str:
        return f"{self.algorithm}:{self.hex[:12]}"

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


class Hasher:
    """Incremental hashing that yields a :class:`Digest`."""

    __slots__ = ("_h", "algorithm", "size")

    def __init__(self, algorithm: str = "sha256") -> None:
        if algorithm not in SUPPORTED_ALGORITHMS:
            raise InvalidDigestError(
                f"unsupported digest algorithm {algorithm!r}", hint="use sha256 or sha512"
            )
        self.algorithm = algorithm
        self._h = hashlib.new(algorithm)
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._h.update(data)
        self.size += len(data)

    def digest(self) -> Digest:
        return Digest(self.algorithm, self._h.hexdigest())
