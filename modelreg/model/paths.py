"""Paths that come from an artifact: validated before anything is written (SECURITY.md 6)."""

from __future__ import annotations

import posixpath
import re
import unicodedata

from modelreg.errors import UnsafeContentError

__all__ = ["safe_relpath"]

_CONTROL = re.compile(r"[\x00-\x1f]")
"""NUL and the other control characters."""


def safe_relpath(raw: str, what: str = "path") -> str:
    """Validate a path from an artifact; return its normalised relative POSIX form.

    Refused: empty, NUL or control characters, backslashes, absolute paths
    (``/x``, ``C:``), any ``..`` component, and names that normalise to the
    directory itself.
    """
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
