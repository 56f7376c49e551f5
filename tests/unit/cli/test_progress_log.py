"""Progress as log lines when stderr is not a terminal (issue 19 item 2)."""

from __future__ import annotations

import io
import time

from modelreg_cli.render import ProgressLog, ProgressRenderer

from modelreg.events import Event
from modelreg.oci.descriptor import Descriptor

MIB = 1024 * 1024


def _desc(size: int, n: int) -> Descriptor:
    return Descriptor("application/octet-stream", "sha256:" + f"{n:x}" * 64, size)


def test_blob_lines_and_a_summary_at_each_tenth_with_rate_and_eta() -> None:
    now = [100.0]
    out = io.StringIO()
    log = ProgressLog(out, interval=3600, clock=lambda: now[0])
    desc = _desc(100 * MIB, 1)
    log(Event("message", "hashing w.bin"))
    log(Event("start", "w.bin", desc, total=100 * MIB))
    for _ in range(4):
        now[0] += 1
        log(Event("advance", "w.bin", desc, n=25 * MIB))
    log(Event("done", "w.bin", desc, total=100 * MIB))
    lines = out.getvalue().splitlines()
    assert lines[0] == "hashing w.bin"
    assert lines[1] == "start w.bin (100.0 MiB) 111111111111"
    assert lines[2] == "progress 25.0 MiB of 100.0 MiB (25%), 25.0 MiB/s, ETA 0:03"
    assert lines[3].startswith("progress 50.0 MiB of 100.0 MiB (50%)")
    assert lines[-1] == "done w.bin (100.0 MiB) 111111111111"


def test_the_timer_reports_a_stalled_transfer() -> None:
    out = io.StringIO()
    log = ProgressLog(out, interval=0.05)
    desc = _desc(10 * MIB, 2)
    log.start()
    try:
        log(Event("start", "w.bin", desc, total=10 * MIB))
        deadline = time.monotonic() + 5
        while "progress" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        log.stop()
    assert "progress 0 B of 10.0 MiB (0%), 0 B/s, ETA -" in out.getvalue()


def test_skipped_blobs_count_as_done() -> None:
    out = io.StringIO()
    log = ProgressLog(out, interval=3600)
    log(Event("skipped", "w.bin", _desc(MIB, 3), total=MIB))
    assert out.getvalue() == "exists w.bin (1.0 MiB) 333333333333\n"


def test_quiet_renders_nothing(capsys) -> None:
    with ProgressRenderer(False) as progress:
        progress(Event("start", "w.bin", _desc(MIB, 4), total=MIB))
    assert capsys.readouterr().err == ""
