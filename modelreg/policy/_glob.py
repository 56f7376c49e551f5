"""Reference globs: ``*`` within one path segment, ``**`` across segments, ``?`` one char.

A glob names where models live, in the reference grammar's own terms:

- ``REGISTRY/REPOSITORY`` (``registry.example.com/models/**``): a registry;
- ``store:REPOSITORY`` (``store:team/**``): the embedded local store, whose references
  have no registry host (``team/llm:v1``);
- ``oci:PATH`` (``oci:/srv/models/**``): an OCI layout directory, as it is written
  in the reference.

A pattern with no host is refused when the policy is loaded rather than taken to mean
the local store: in Kubernetes ``models/llm`` means ``docker.io/models/llm``, and a
policy that silently matched nothing there would guard nothing.

Registry patterns are matched against *canonical* names only
(:mod:`modelreg.oci.canonical`: lowercase host, no ``:443``, Docker Hub aliases folded
into ``docker.io`` with ``library/``), and are canonicalised the same way when loaded:
``Index.Docker.io/acme/**`` and ``docker.io/acme/**`` govern the same images, and no
spelling of a reference escapes the policy that names its repository. :attr:`Glob.pattern`
stays as written (for messages); :attr:`Glob.canonical` is what is matched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Literal

from modelreg.oci.canonical import canonical_pattern

__all__ = ["STORE_PREFIX", "Glob"]

STORE_PREFIX: Final = "store:"
_LAYOUT_PREFIX: Final = "oci:"

Space = Literal["registry", "store", "layout"]


def _host_like(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def space_of(name: str) -> Space:
    """Where a reference name (``Reference.name``) lives."""
    if name.startswith(_LAYOUT_PREFIX):
        return "layout"
    first, sep, _ = name.partition("/")
    return "registry" if sep and _host_like(first) else "store"


def _translate(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                # "a/**" also matches "a" itself? No: "**" matches one or more characters
                # across '/', so "models/**" matches "models/x" and "models/x/y".
                out.append(".+")
                i += 2
                continue
            out.append("[^/]+")
        elif c == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class Glob:
    """A reference pattern; raises InvalidReferenceError if it cannot be canonicalised."""

    pattern: str
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _space: Space = field(init=False, repr=False, compare=False)
    _canonical: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        body = self.pattern
        space: Space = "registry"
        if body.startswith(STORE_PREFIX):
            body, space = body[len(STORE_PREFIX) :], "store"
        elif body.startswith(_LAYOUT_PREFIX):
            space = "layout"
        else:
            body = canonical_pattern(body)
        object.__setattr__(self, "_regex", re.compile(_translate(body)))
        object.__setattr__(self, "_space", space)
        object.__setattr__(self, "_canonical", body if space == "registry" else self.pattern)

    @property
    def space(self) -> Space:
        return self._space

    @property
    def canonical(self) -> str:
        """The pattern as matched (registry patterns canonicalised; others as written)."""
        return self._canonical

    def well_formed(self) -> bool:
        """Does the pattern say which registry, the local store, or which layout?"""
        if self._space == "layout":
            return len(self.pattern) > len(_LAYOUT_PREFIX)
        if self._space == "store":
            body = self.pattern[len(STORE_PREFIX) :]
            return bool(body) and not _host_like(body.partition("/")[0])
        host, sep, rest = self._canonical.partition("/")
        return bool(sep and rest) and (any(c in host for c in ".:*?[") or host == "localhost")

    def matches(self, name: str) -> bool:
        """Does ``name`` (a canonical ``Reference.name``) fall under this pattern?"""
        if space_of(name) != self._space:
            return False
        return self._regex.fullmatch(name) is not None

    def __str__(self) -> str:
        return self.pattern
