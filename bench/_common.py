"""Small pieces the benchmark scripts share (each script puts ``bench/`` on ``sys.path``)."""

from __future__ import annotations

import compileall
import contextlib
import shutil
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def upload_url(base: str, repo: str, digest: str) -> str:
    """A monolithic-upload URL for ``digest`` in ``repo``: the baseline's one curl PUT."""
    req = urllib.request.Request(f"{base}/v2/{repo}/blobs/uploads/", data=b"", method="POST")
    with urllib.request.urlopen(req) as resp:
        location = resp.headers["Location"]
    url = urllib.parse.urljoin(base + "/", location)
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}digest={urllib.parse.quote(digest, safe='')}"


def publish(section: str, record: str | Path | None) -> None:
    """Print a results section and, with ``--record FILE``, append it to that file."""
    print(section)
    if record is not None:
        with open(record, "a", encoding="utf-8") as f:
            f.write("\n" + section)


def compile_sources(src: Path) -> None:
    """Write the bytecode of ``src``'s ``modelreg`` and ``cli`` packages before any timing.

    A wheel install compiles at install time; an editable install under
    ``PYTHONDONTWRITEBYTECODE`` (set on some CI machines) recompiles every module on
    every CLI start, ~0.3 s that no user of an installed tool pays. Compiling here
    (``legacy=False``: into ``__pycache__``, which git ignores) makes each timed run
    measure the installed tool's start-up, whatever the environment says.
    """
    for package in ("modelreg", "cli"):
        if (src / package).is_dir():
            compileall.compile_dir(src / package, quiet=1)


@contextlib.contextmanager
def fresh_registry(reg_dir: Path) -> Iterator[Any]:
    """A loopback Distribution registry with empty storage in ``reg_dir``, removed on exit.

    For timed pushes, one per run: Distribution takes about twice as long to accept a
    blob it already stores (measured: 15 s for 4 GiB into a fresh registry, 27 s for
    the same bytes sent again to another repository), so a registry shared by the runs
    of a benchmark times every run after the first against a slower server. The caller
    has put ``tests/integration`` on ``sys.path``.
    """
    from registry_server import start_registry

    shutil.rmtree(reg_dir, ignore_errors=True)
    try:
        with start_registry(reg_dir) as server:
            yield server
    finally:
        shutil.rmtree(reg_dir, ignore_errors=True)
