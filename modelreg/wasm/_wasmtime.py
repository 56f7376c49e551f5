"""The one place that imports wasmtime (an optional dependency: ``modelreg[wasm]``)."""

from __future__ import annotations

from modelreg.errors import ModelRegError

try:
    import wasmtime
except ImportError as exc:  # pragma: no cover - wasmtime is installed in dev and CI
    raise ModelRegError(
        "running WebAssembly needs the 'wasmtime' package, which is not installed",
        hint="pip install 'modelreg[wasm]' (or: pip install 'wasmtime>=41,<52')",
    ) from exc

__all__ = ["wasmtime"]
