"""scan_dir: a directory's entries, or none when it cannot be listed."""

from __future__ import annotations

from pathlib import Path

from modelreg._fs import scan_dir


def test_lists_the_entries(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    (tmp_path / "d").mkdir()
    assert sorted(e.name for e in scan_dir(tmp_path)) == ["a", "d"]


def test_missing_directory_or_a_file_gives_nothing(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    assert scan_dir(tmp_path / "missing") == []
    assert scan_dir(tmp_path / "f") == []
