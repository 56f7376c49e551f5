"""Rendering for the CLI: progress bars on a terminal, JSON or text results, errors."""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from modelreg.events import Event

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False, soft_wrap=True)


class ProgressRenderer:
    """Turns library events into rich progress bars; silent unless stderr is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> ProgressRenderer:
        if self.enabled:
            self._progress = Progress(
                TextColumn("{task.description}", justify="left"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=err_console,
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, event: Event) -> None:
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
