"""Durations and sizes with units (modelreg.units), as every flag reads them."""

from __future__ import annotations

import pytest

from modelreg.errors import InvalidInputError
from modelreg.units import parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("90", 90),
        ("1h", 3600),
        ("30d", 30 * 86400),
        ("2w", 14 * 86400),
        ("15m", 900),
        ("1.5h", 5400),
        ("1h30m", 5400),
        (" 1H ", 3600),
        ("0", 0),
        (3600, 3600),
    ],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1x", "-1h", "30m1h", "1h1h", "1.2.3s", "inf"])
def test_bad_durations_name_the_flag(text: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_duration(text, "--older-than")
    assert "--older-than" in caught.value.message


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512MiB", 512 * 1024**2),
        ("20GiB", 20 * 1024**3),
        ("1GB", 10**9),
        ("4k", 4096),
        ("4kB", 4000),
        ("1.5m", 1536 * 1024),
        ("1048576", 1048576),
        ("0", 0),
        ("2TiB", 2 * 1024**4),
        (77, 77),
    ],
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MiB", "12 parsecs", "-1MiB", "1e3"])
def test_bad_sizes_name_the_flag(text: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_size(text, "--chunks-max")
    assert "--chunks-max" in caught.value.message
