"""Small pieces the benchmark scripts share (each script puts ``bench/`` on ``sys.path``)."""

from __future__ import annotations

import urllib.parse
import urllib.request
from pathlib import Path


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
