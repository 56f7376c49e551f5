"""Paths that come from an artifact: validated before anything is written (SECURITY.md 6)."""

from __future__ import annotations

import posixpath
import re
import unicodedata
from typing import Final

from modelreg.errors import UnsafeContentError

__all__ = ["safe_relpath"]

_CONTROL = re.compile(r"[\x00-\x1f]")
"""NUL and the other control characters."""


_SEGMENT = r"[^./\x00-\x1f\\][^/\x00-\x1f\\]*"
_PLAIN: Final = re.compile(rf"(?!.:)(?:{_SEGMENT}/)*{_SEGMENT}")
"""A path that is already safe and normal, checked in one match: no control character
or backslash, segments neither empty nor starting with a dot (so no ``.``/``..``),
no colon as the second character (``C:``), no trailing slash. Most names of
a model are like this; the others take the full check below."""


def safe_relpath(raw: str, what: str = "path") -> str:
    """Validate a path from an artifact; return its normalised relative POSIX form.

    Refused: empty, NUL or control characters, backslashes, absolute paths
    (``/x``, ``C:``), any ``..`` component, and names that normalise to the
    directory itself.
    """
    if raw.isascii() and _PLAIN.fullmatch(raw):
        return raw
    if not raw or _CONTROL.search(raw):
        raise UnsafeContentError(f"{what} {raw!r} is empty or contains control characters")
    if "\\" in raw:
        raise UnsafeContentError(f"{what} {raw!r} contains a backslash", hint="refused as unsafe")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise UnsafeContentError(
            f"{what} {raw!r} is absolute", hint="artifact paths must be relative"
        )
    parts = raw.split("/")
    if ".." in parts:
        raise UnsafeContentError(f"{what} {raw!r} escapes the output directory with '..'")
    # an ASCII name is its own NFC form: skip the Unicode tables (a path per file)
    norm = posixpath.normpath(raw if raw.isascii() else unicodedata.normalize("NFC", raw))
    if norm in (".", "") or norm.startswith("../"):
        raise UnsafeContentError(f"{what} {raw!r} does not name a file inside the directory")
    return norm
