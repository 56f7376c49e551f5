"""The one place that imports wasmtime (an optional dependency: ``modelreg[wasm]``)."""

from __future__ import annotations

from modelreg._extras import require

require("wasmtime", "wasm", "running WebAssembly (wasm run, wasm pack)")
import wasmtime  # noqa: E402  (typed import, after require() said what to install)

__all__ = ["wasmtime"]
