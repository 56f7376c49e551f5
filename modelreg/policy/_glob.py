"""Reference globs: ``*`` within one path segment, ``**`` across segments, ``?`` one char."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Glob"]


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
    pattern: str
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", re.compile(_translate(self.pattern)))

    def matches(self, name: str) -> bool:
        return self._regex.fullmatch(name) is not None

    def __str__(self) -> str:
        return self.pattern
