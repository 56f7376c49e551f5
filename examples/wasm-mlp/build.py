#!/usr/bin/env python3
"""Compile mlp.wat to mlp.wasm with wasmtime's wat2wasm (PyPI ``wasmtime``).

    python examples/wasm-mlp/build.py [--out build/mlp.wasm]

Nothing prebuilt is committed: this script is how the module is made. The output
is deterministic (the same .wat gives the same bytes, hence the same digest).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "mlp.wat"
DEFAULT_OUT = HERE / "build" / "mlp.wasm"


def build(out: Path = DEFAULT_OUT, source: Path = SOURCE) -> Path:
    """Compile ``source`` to ``out``; returns ``out``."""
    import wasmtime

    wasm = bytes(wasmtime.wat2wasm(source.read_text(encoding="utf-8")))
    wasmtime.Module(wasmtime.Engine(), wasm)  # validate before writing anything
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(wasm)
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the module")
    args = parser.parse_args(argv)
    out = build(args.out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"{out} ({out.stat().st_size} bytes, sha256:{digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
