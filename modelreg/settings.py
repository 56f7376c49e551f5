"""Where modelreg keeps its state: the embedded store, the cache, small databases.

``$MODELREG_HOME`` if set, else ``$XDG_DATA_HOME/modelreg``, else
``~/.local/share/modelreg`` (``~/Library/Application Support/modelreg`` on macOS).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["home", "state_dir", "store_dir"]


def home() -> Path:
    explicit = os.environ.get("MODELREG_HOME")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "modelreg"
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "modelreg"


def store_dir() -> Path:
    """The OCI layout that is both the embedded default store and the blob cache."""
    return home() / "store"


def state_dir() -> Path:
    path = home() / "state"
    path.mkdir(parents=True, exist_ok=True)
    return path
