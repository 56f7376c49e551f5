"""Model references.

Three kinds, one grammar (distribution-spec names, docker-style host detection):

* ``registry[:port]/repo/sub[:tag][@digest]``: a remote OCI registry. The first
  component is a registry host when it contains ``.`` or ``:``, is ``localhost``,
  or is a bracketed IPv6 address.
* ``repo[/sub][:tag][@digest]`` with no registry host: the embedded local store.
* ``oci:PATH[:tag|@digest]``: a local OCI image layout directory.

Parsing keeps the spelling as written (host case, ``:443``, Docker Hub aliases); the
one spelling policies are matched on comes from :mod:`modelreg.oci.canonical`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Final, Literal

from modelreg.errors import InvalidDigestError, InvalidReferenceError
from modelreg.oci.digest import Digest

__all__ = ["RefKind", "Reference"]

RefKind = Literal["registry", "store", "layout"]

_COMPONENT: Final = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE: Final = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DOMAIN_COMPONENT: Final = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_HOST_RE: Final = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?$"
)
_MAX_NAME: Final = 255

_ALLOWED: Final = (
    "a reference looks like registry.example.com[:port]/repo[/sub]:tag or ...@sha256:<hex>, "
    "repo:tag for the local store, or oci:PATH[:tag|@digest] for an OCI layout directory; "
    "repository components are lowercase letters, digits and . _ - separators; "
    "tags are up to 128 of [A-Za-z0-9_.-] not starting with . or -"
)


def _fail(text: str, why: str) -> InvalidReferenceError:
    return InvalidReferenceError(f"invalid reference {text!r}: {why}", hint=_ALLOWED)


def _looks_like_host(component: str) -> bool:
    return (
        "." in component
        or ":" in component
        # Docker compares "localhost" case-insensitively too (DNS names have no case)
        or component.lower() == "localhost"
        or (component.startswith("["))
    )


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed, validated model reference.

    ``registry`` is None for the local store and for layouts; ``path`` is the
    layout directory for ``oci:`` references.
    """

    kind: RefKind
    repository: str
    registry: str | None = None
    tag: str | None = None
    digest: Digest | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "registry" and not self.registry:
            raise InvalidReferenceError("a registry reference needs a registry host")
        if self.kind == "layout" and not self.path:
            raise InvalidReferenceError("a layout reference needs a directory path")
        if self.kind != "layout" and not _REPOSITORY_RE.match(self.repository):
            raise _fail(str(self), "bad repository name")
        if self.tag is not None and not _TAG_RE.match(self.tag):
            raise _fail(str(self), f"bad tag {self.tag!r}")

    # ------------------------------------------------------------------ parse
    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse a reference; the error quotes the input and says what is allowed."""
        if not isinstance(text, str) or not text or text != text.strip():
            raise _fail(str(text), "empty or surrounded by whitespace")
        if any(ord(c) < 0x20 for c in text):
            raise _fail(text, "contains control characters")
        if text.startswith("oci:"):
            return cls._parse_layout(text)
        rest, digest = cls._split_digest(text, text)
        tag: str | None = None
        last_slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > last_slash:
            rest, tag = rest[:colon], rest[colon + 1 :]
            if not tag:
                raise _fail(text, "empty tag after ':'")
        first, sep, remainder = rest.partition("/")
        registry: str | None = None
        if sep and _looks_like_host(first):
            if not _HOST_RE.match(first):
                raise _fail(text, f"bad registry host {first!r}")
            port = first.rsplit(":", 1)[1] if first.count(":") == 1 else None
            if port is not None and not (0 < int(port) < 65536):
                raise _fail(text, f"port {port} is out of range")
            registry, repository = first, remainder
        elif _looks_like_host(first) and not sep and (":" in first or first.lower() == "localhost"):
            raise _fail(text, "a registry host needs a repository after it")
        else:
            repository = rest
        if not repository:
            raise _fail(text, "missing repository name")
        if len(repository) + len(registry or "") + 1 > _MAX_NAME:
            raise _fail(text, f"name longer than {_MAX_NAME} characters")
        if not _REPOSITORY_RE.match(repository):
            lower_ok = _REPOSITORY_RE.match(repository.lower()) is not None
            why = (
                "repository names are lowercase"
                if lower_ok
                else f"bad repository name {repository!r}"
            )
            raise _fail(text, why)
        if tag is not None and not _TAG_RE.match(tag):
            raise _fail(text, f"bad tag {tag!r}")
        return cls(
            kind="registry" if registry else "store",
            registry=registry,
            repository=repository,
            tag=tag,
            digest=digest,
        )

    @staticmethod
    def _split_digest(body: str, text: str) -> tuple[str, Digest | None]:
        if "@" not in body:
            return body, None
        body, _, digest_text = body.rpartition("@")
        try:
            return body, Digest.parse(digest_text)
        except InvalidDigestError as exc:
            raise _fail(text, exc.message) from exc

    @classmethod
    def _parse_layout(cls, text: str) -> Reference:
        body = text[len("oci:") :]
        body, digest = cls._split_digest(body, text)
        tag: str | None = None
        if digest is None:
            head, sep, candidate = body.rpartition(":")
            if sep and head and "/" not in candidate and _TAG_RE.match(candidate):
                body, tag = head, candidate
        if not body:
            raise _fail(text, "missing layout directory path after 'oci:'")
        return cls(kind="layout", repository="", path=body, tag=tag, digest=digest)

    # ---------------------------------------------------------------- helpers
    @property
    def reference(self) -> str | None:
        """What goes after ``/manifests/``: the digest when known, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag

    @property
    def name(self) -> str:
        """The reference without tag or digest (``registry/repo``, ``repo`` or ``oci:PATH``)."""
        if self.kind == "layout":
            return f"oci:{self.path}"
        if self.registry:
            return f"{self.registry}/{self.repository}"
        return self.repository

    def with_digest(self, digest: Digest) -> Reference:
        return replace(self, digest=digest)

    def with_tag(self, tag: str | None) -> Reference:
        return replace(self, tag=tag)

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out
