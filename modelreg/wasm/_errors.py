"""Errors of WebAssembly runs, under the one tree of :mod:`modelreg.errors`.

::

    ModelRegError
     └── WasmError                  the module could not run to a normal end (exit code 10)
          ├── WasmTrapError         it trapped (unreachable, out-of-bounds access, ...)
          ├── WasmLimitError        it hit a limit: memory, time, fuel, output size
          └── WasmAbiError          it misused the host ABI, or imports what the host lacks

Failures of the content the host serves keep their own classes: a tampered
weight chunk is an :class:`~modelreg.errors.IntegrityError` (exit 5), an
unverified module or model a :class:`~modelreg.errors.VerificationError` (exit 7).
"""

from __future__ import annotations

from modelreg.errors import ModelRegError

__all__ = ["WasmAbiError", "WasmError", "WasmLimitError", "WasmTrapError"]


class WasmError(ModelRegError):
    """A WebAssembly module that did not run to a normal end."""

    exit_code = 10


class WasmTrapError(WasmError):
    """The module trapped. ``trap_code`` is wasmtime's name for the cause, if any."""

    def __init__(self, message: str, *, hint: str | None = None, trap_code: str | None = None):
        super().__init__(message, hint=hint)
        self.trap_code = trap_code


class WasmLimitError(WasmError):
    """The module hit a limit. ``limit`` is ``memory``, ``time``, ``fuel`` or ``output``."""

    def __init__(self, message: str, *, limit: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.limit = limit


class WasmAbiError(WasmError):
    """The module called the host ABI wrongly (a pointer outside its memory, a bad
    index or range) or imports functions the host does not provide."""
