#!/usr/bin/env python3
"""oras-py as a command for the benchmark (oras-py ships no CLI).

    python bench/_oras_tool.py push HOST/REPO:TAG DIR     # every file of DIR as a layer
    python bench/_oras_tool.py pull HOST/REPO:TAG OUTDIR

Plain HTTP (``insecure=True``): the benchmark registry listens on loopback.
Uses oras-py's defaults otherwise (monolithic POST+PUT upload of each file,
HEAD before upload, 8 KiB streamed download chunks).
"""

from __future__ import annotations

import logging
import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("push", "pull"):
        print(__doc__, file=sys.stderr)
        return 2
    import oras.client

    logging.getLogger("oras").setLevel(logging.WARNING)
    command, target, path = argv
    host = target.split("/", 1)[0]
    client = oras.client.OrasClient(hostname=host, insecure=True)
    if command == "push":
        # Relative names so that the layer titles are plain file names.
        os.chdir(path)
        files = sorted(
            name for name in os.listdir(".") if os.path.isfile(name) and not name.startswith(".")
        )
        client.push(target=target, files=files, quiet=True)
    else:
        os.makedirs(path, exist_ok=True)
        client.pull(target=target, outdir=path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
