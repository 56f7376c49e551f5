"""Durations and sizes as people write them: ``90s``, ``1h``, ``30d``; ``512MiB``, ``20GiB``.

One parser for every flag and environment variable that takes a duration or a size,
so that ``cache prune --older-than 1h``, ``prune --older-than 30d``, ``--chunks-max
20GiB`` and ``--part-size 64MiB`` read alike.

* Durations: a number with an optional unit ``s``, ``m`` (minutes), ``h``, ``d``,
  ``w``; a bare number is seconds. Fractions are allowed (``1.5h``); compound forms
  (``1h30m``) are too, units in decreasing order. Negative values are refused.
* Sizes: a number with an optional unit; binary ``KiB``/``MiB``/``GiB``/``TiB`` and
  the single letters ``k``/``m``/``g``/``t`` (as ``--part-size`` always read them)
  are powers of 1024, decimal ``kB``/``MB``/``GB``/``TB`` powers of 1000; ``B`` or no
  unit is bytes. Case does not matter. The result is rounded down to whole bytes.

Both raise :class:`~modelreg.errors.InvalidInputError` naming the flag that gave the
text (``what``) and showing the accepted forms.
"""

from __future__ import annotations

import math
import re
from typing import Final

from modelreg.errors import InvalidInputError

__all__ = ["DURATION_UNITS", "SIZE_UNITS", "parse_duration", "parse_size"]

DURATION_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SIZE_UNITS: Final = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}
_NUMBER: Final = r"(\d+(?:\.\d*)?|\.\d+)"
_DURATION_PART: Final = re.compile(_NUMBER + r"([a-z]*)")
_SIZE: Final = re.compile(_NUMBER + r"([a-z]*)")


def parse_duration(text: str | float, what: str = "duration") -> float:
    """Seconds in ``text`` (``"90s"``, ``"1h"``, ``"30d"``, ``"1h30m"``, ``"3600"``)."""
    if isinstance(text, int | float):
        return _non_negative(float(text), text, what)
    raw = text.strip().lower().replace(" ", "")
    pos, total, last_scale = 0, 0.0, math.inf
    while pos < len(raw):
        match = _DURATION_PART.match(raw, pos)
        unit = match.group(2) if match else None
        scale = DURATION_UNITS.get(unit or "s") if unit is not None else None
        if match is None or scale is None or scale >= last_scale:
            raise _bad_duration(text, what)
        total += float(match.group(1)) * scale
        last_scale = scale
        pos = match.end()
        if not unit and pos < len(raw):
            raise _bad_duration(text, what)
    if not raw:
        raise _bad_duration(text, what)
    return _non_negative(total, text, what)


def parse_size(text: str | int, what: str = "size") -> int:
    """Bytes in ``text`` (``"512MiB"``, ``"20GiB"``, ``"1GB"``, ``"4k"``, ``"1048576"``)."""
    if isinstance(text, int):
        return int(_non_negative(float(text), text, what))
    raw = text.strip().lower().replace(" ", "")
    match = _SIZE.fullmatch(raw)
    if match is None or match.group(2) not in SIZE_UNITS:
        raise InvalidInputError(
            f"invalid {what} {text!r}",
            hint="give bytes or a size with a unit: 512MiB, 20GiB, 1GB, 4k",
        )
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2)])


def _non_negative(value: float, text: object, what: str) -> float:
    if not value >= 0 or math.isinf(value):
        raise InvalidInputError(f"invalid {what} {text!r}: must not be negative")
    return value


def _bad_duration(text: str, what: str) -> InvalidInputError:
    return InvalidInputError(
        f"invalid {what} {text!r}",
        hint="give seconds or a duration with a unit: 90s, 15m, 1h, 30d, 2w, 1h30m",
    )
