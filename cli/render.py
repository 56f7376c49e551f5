"""Rendering for the CLI: progress on stderr, JSON or text results, errors.

Progress has two forms. On a terminal, rich bars that redraw in place. Anywhere else
(a CI log, ``modelreg push ... > log 2>&1``) nothing can redraw, and silence until the
end looks like a hang, so :class:`ProgressLog` writes plain lines, as oras does: one
when a blob starts and one when it is done (or found already there), the library's
phase messages ("hashing FILE"), and every ``interval`` seconds, or at each further 10%
of the bytes known so far, a line with bytes moved, rate and time left. Both go to
stderr; stdout stays for the result (``--json``). ``--quiet`` turns them off.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO, cast

if TYPE_CHECKING:  # rich is imported when something is printed, not by --help
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from modelreg.events import Event


class _LazyConsole:
    """A rich Console made on first use: ``modelreg --help`` need not import rich."""

    def __init__(self, **settings: Any) -> None:
        self._settings = settings
        self._console: Console | None = None

    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._settings)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console(), name)


_err = _LazyConsole(stderr=True, highlight=False, soft_wrap=True)
err_console = cast("Console", _err)
out_console = cast("Console", _LazyConsole(highlight=False, soft_wrap=True))


class ProgressRenderer:
    """Turns library events into rich progress bars on a terminal, log lines elsewhere
    (:class:`ProgressLog`); nothing when not ``enabled``. ``bars`` keeps the old rule for
    ``--json`` on a terminal: no bars over the result."""

    def __init__(self, enabled: bool, *, bars: bool = True) -> None:
        terminal = sys.stderr.isatty()
        self.enabled = enabled and bars and terminal
        self._log = ProgressLog(sys.stderr) if enabled and not terminal else None
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> ProgressRenderer:
        if self._log is not None:
            self._log.start()
        if self.enabled:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}", justify="left"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=_err.console(),
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._log is not None:
            self._log.stop()
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, event: Event) -> None:
        if self._log is not None:
            self._log(event)
        progress = self._progress
        if progress is None:
            return
        key = str(event.desc.digest) if event.desc is not None else event.name
        label = event.name if len(event.name) <= 40 else "…" + event.name[-39:]
        with self._lock:
            if event.kind == "message":
                return
            task = self._tasks.get(key)
            if task is None:
                task = progress.add_task(label, total=event.total or None)
                self._tasks[key] = task
            if event.kind == "advance":
                progress.advance(task, event.n)
            elif event.kind in ("done", "skipped", "mounted"):
                suffix = {"skipped": " (exists)", "mounted": " (mounted)"}.get(event.kind, "")
                progress.update(task, completed=event.total, description=label + suffix)


class ProgressLog:
    """Progress as lines for a log: blob started/done, messages, a periodic summary.

    Thread-safe (transfers report from several threads); the periodic line comes from a
    timer thread between :meth:`start` and :meth:`stop`, so a stalled transfer shows as
    a rate of 0 B/s rather than as silence.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._timer: threading.Thread | None = None
        self._begun = clock()
        self._total = 0  # bytes of the blobs started so far
        self._done = 0  # bytes moved, skipped or mounted so far
        self._moved_at_last = 0
        self._last_at = self._begun
        self._next_tenth = 1
        self._open: dict[str, int] = {}  # blobs started and not finished: bytes moved

    def start(self) -> None:
        self._timer = threading.Thread(target=self._tick, name="progress-log", daemon=True)
        self._timer.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._timer is not None:
            self._timer.join()

    def _tick(self) -> None:
        while not self._stopped.wait(self._interval):
            with self._lock:
                if self._open:
                    self._summary()

    def __call__(self, event: Event) -> None:
        key = str(event.desc.digest) if event.desc is not None else event.name
        digest = str(event.desc.digest) if event.desc is not None else ""
        short = f" {digest[7:19]}" if digest and not event.name.startswith("sha256:") else ""
        with self._lock:
            if event.kind == "message":
                self._line(event.name)
            elif event.kind == "start":
                self._open[key] = 0
                self._total += event.total
                self._line(f"start {event.name} ({human_size(event.total)}){short}")
            elif event.kind == "advance":
                if key in self._open:
                    self._open[key] += event.n
                self._done += event.n
                self._maybe_summary()
            else:  # done, skipped, mounted
                moved = self._open.pop(key, None)
                if moved is None:  # finished without a start: count it whole
                    self._total += event.total
                    moved = 0
                self._done += max(event.total - moved, 0)
                word = {"done": "done", "skipped": "exists", "mounted": "mounted"}[event.kind]
                self._line(f"{word} {event.name} ({human_size(event.total)}){short}")
                self._maybe_summary()

    def _maybe_summary(self) -> None:
        """The summary at each further 10% of the known bytes (the timer does the rest)."""
        if self._total and self._done * 10 >= self._next_tenth * self._total and self._open:
            self._next_tenth = self._done * 10 // self._total + 1
            self._summary()

    def _summary(self) -> None:
        now = self._clock()
        rate = (self._done - self._moved_at_last) / max(now - self._last_at, 1e-6)
        average = self._done / max(now - self._begun, 1e-6)
        self._moved_at_last, self._last_at = self._done, now
        percent = f" ({100 * self._done // self._total}%)" if self._total else ""
        left = self._total - self._done
        eta = _duration(left / average) if average > 0 and left > 0 else "-"
        self._line(
            f"progress {human_size(self._done)} of {human_size(self._total)}{percent}, "
            f"{human_size(int(rate))}/s, ETA {eta}"
        )

    def _line(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()


def _duration(seconds: float) -> str:
    """``1:02:03``, ``2:03`` or ``0:05``."""
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def plural(n: int, word: str) -> str:
    """``1 file``, ``2 files``, ``0 files``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
