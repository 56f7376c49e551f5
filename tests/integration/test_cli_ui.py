"""Issue 19 end to end: what a person meets on the command line, against a real
registry: progress in a CI log (item 2), verifying a pulled directory (item 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MODELREG = [sys.executable, "-m", "modelreg_cli.main"]


@pytest.fixture
def big_model(tmp_path: Path) -> Path:
    root = tmp_path / "ci-model"
    root.mkdir()
    (root / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (root / "a.bin").write_bytes(os.urandom(6 * 1024 * 1024))
    (root / "b.bin").write_bytes(os.urandom(5 * 1024 * 1024))
    return root


def _run_logged(args: list[str], log: Path, out: Path | None = None) -> int:
    """Run modelreg with stderr (and stdout, unless ``out``) going to files, as CI does."""
    with log.open("wb") as err, (out or log).open("ab") as std:
        return subprocess.run(
            [*MODELREG, *args], stdout=std, stderr=err, stdin=subprocess.DEVNULL, check=False
        ).returncode


def test_push_to_a_file_logs_each_blob_and_progress(registry_plain, big_model, tmp_path):
    ref = f"{registry_plain.host}/issue19/progress:v1"
    log, out = tmp_path / "push.log", tmp_path / "push.json"
    assert _run_logged(["push", str(big_model), ref, "--json"], log, out) == 0, log.read_text()
    lines = log.read_text().splitlines()
    assert any(line.startswith("hashing ") for line in lines), lines
    started = [line for line in lines if line.startswith("start ")]
    done = [line for line in lines if line.startswith("done ")]
    assert any("a.bin (6.0 MiB) " in line for line in started), lines
    assert len(done) >= 3 and len(started) == len(done), lines  # 2 files + config (+ manifest)
    progress = [line for line in lines if line.startswith("progress ")]
    assert progress, lines
    assert all("/s, ETA " in line and " of " in line for line in progress), progress
    # stdout holds the result alone
    assert "issue19/progress:v1@sha256:" in json.loads(out.read_text())["reference"]

    # again: everything is there already, and says so
    log2 = tmp_path / "again.log"
    assert _run_logged(["push", str(big_model), ref], log2) == 0
    text = log2.read_text()
    assert "exists a.bin (6.0 MiB)" in text, text

    # --quiet: the result only
    log3 = tmp_path / "quiet.log"
    assert _run_logged(["push", "--quiet", str(big_model), ref], log3) == 0
    assert log3.read_text().startswith("pushed "), log3.read_text()  # the result alone


def test_pull_to_a_file_logs_progress_and_global_quiet(registry_plain, big_model, tmp_path):
    ref = f"{registry_plain.host}/issue19/pull-progress:v1"
    assert _run_logged(["-q", "push", str(big_model), ref], tmp_path / "push.log") == 0
    assert (tmp_path / "push.log").read_text().startswith("pushed ")
    log = tmp_path / "pull.log"
    assert _run_logged(["pull", ref, "-o", str(tmp_path / "out"), "--no-cache"], log) == 0
    text = log.read_text()
    assert "start a.bin (6.0 MiB)" in text and "done a.bin (6.0 MiB)" in text, text
