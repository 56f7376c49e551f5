"""Progress events: the library reports, the CLI renders. Nothing here prints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from modelreg.oci.descriptor import Descriptor

__all__ = ["Event", "EventKind", "ProgressCallback", "emit"]

EventKind = Literal["start", "advance", "done", "skipped", "mounted", "message"]


@dataclass(frozen=True, slots=True)
class Event:
    """One step of a transfer.

    ``start`` (total = blob size), ``advance`` (n = bytes just moved), ``done``,
    ``skipped`` (the destination had it), ``mounted`` (cross-repository mount),
    ``message`` (a phase change such as "hashing", with ``name`` as text).
    """

    kind: EventKind
    name: str
    desc: Descriptor | None = None
    n: int = 0
    total: int = 0


ProgressCallback = Callable[[Event], None]


def emit(callback: ProgressCallback | None, event: Event) -> None:
    if callback is not None:
        callback(event)
