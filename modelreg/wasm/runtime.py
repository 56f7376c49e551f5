"""Run a core WebAssembly module in wasmtime with WASI stdio and the modelreg/1 ABI.

What the module gets: WASI preview 1 with stdin (the input), stdout (captured,
capped), stderr (captured, capped), ``argv`` = ``["module", *args]``, no
environment, no preopened directory (so no file system and no network), the
clocks and random numbers WASI provides; and the ``modelreg`` host functions
(:mod:`modelreg.wasm.abi`), served by a :class:`~modelreg.wasm.host.TensorSource`.

Limits (:class:`Limits`):

* ``max_memory``: cap on the module's linear memories (wasmtime store limits).
  A module whose declared minimum is over it fails to start; at run time
  ``memory.grow`` returns -1 at the cap, and when the module then fails (traps,
  or exits non-zero) with its memory within one grow step of the cap, the error
  says the memory limit was reached.
* ``timeout``: wall-clock seconds, enforced by wasmtime's epoch interruption (a
  timer thread bumps the epoch; the module traps at its next loop or call).
  Time spent in host calls (fetching weights) counts too.
* ``fuel``: a deterministic instruction budget (wasmtime fuel), for runs that
  must stop at the same point every time.
* ``max_output`` / ``max_stderr``: bytes kept from stdout / stderr. Output past
  the cap fails the run (a truncated answer is not an answer); stderr past the
  cap is dropped.

Outcomes: a normal end (``_start`` returns or ``proc_exit(n)``) gives a
:class:`RunResult` with the exit code; a trap raises :class:`WasmTrapError`, a
limit :class:`WasmLimitError`, ABI misuse :class:`WasmAbiError`; an error of the
tensor source (an :class:`~modelreg.errors.IntegrityError` for a tampered chunk)
ends the run at once and propagates as it is.
"""

from __future__ import annotations

import errno
import gc
import os
import re
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Final

from modelreg.errors import FormatError, InvalidInputError
from modelreg.wasm._errors import WasmAbiError, WasmError, WasmLimitError, WasmTrapError
from modelreg.wasm._wasmtime import wasmtime
from modelreg.wasm.abi import HostABI, ReadRecord, check_imports
from modelreg.wasm.host import TensorSource

__all__ = ["DEFAULT_LIMITS", "Limits", "RunResult", "human_bytes", "parse_size", "run_module"]

_PAGE: Final = 65536
_RELEASE_WAIT: Final = 5.0
_SIZE_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS: Final = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "ki": 1024, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mi": 1024**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gi": 1024**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "ti": 1024**4, "tib": 1024**4,
}  # fmt: skip


def parse_size(text: str) -> int:
    """``256MiB``, ``1.5GiB``, ``64k``, ``1048576`` -> bytes."""
    m = _SIZE_RE.match(text)
    unit = (m.group(2) or "").lower() if m else ""
    if m is None or unit not in _UNITS:
        raise InvalidInputError(
            f"{text!r} is not a size", hint="write e.g. 256MiB, 1GiB, 512k or a byte count"
        )
    return int(float(m.group(1)) * _UNITS[unit])


def human_bytes(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True, slots=True)
class Limits:
    """What a run may use. ``None`` disables a limit (``timeout`` and ``fuel``)."""

    max_memory: int = 256 * 1024 * 1024
    timeout: float | None = 60.0
    fuel: int | None = None
    max_output: int = 64 * 1024 * 1024
    max_stderr: int = 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_memory < _PAGE:
            raise InvalidInputError(f"max memory must be at least {_PAGE} bytes (one page)")
        if self.timeout is not None and self.timeout <= 0:
            raise InvalidInputError("timeout must be positive")
        if self.fuel is not None and self.fuel <= 0:
            raise InvalidInputError("fuel must be positive")
        if self.max_output < 0 or self.max_stderr < 0:
            raise InvalidInputError("output caps must be non-negative")


DEFAULT_LIMITS: Final = Limits()


@dataclass(frozen=True)
class RunResult:
    """A module that ran to its end (whatever its exit code)."""

    exit_code: int
    stdout: bytes = field(repr=False)
    """Captured standard output (empty when it was streamed to ``stdout=``)."""
    stderr: bytes = field(repr=False)
    output_bytes: int
    elapsed: float
    memory_bytes: int
    """Size of the module's memory at the end."""
    memory_at_limit: bool
    """The memory was within one grow step of ``max_memory`` at the end."""
    fuel_consumed: int | None
    reads: int
    bytes_copied: int
    tensors_read: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def to_dict(self) -> dict[str, object]:
        return {
            "exitCode": self.exit_code,
            "outputBytes": self.output_bytes,
            "elapsedSeconds": round(self.elapsed, 6),
            "memoryBytes": self.memory_bytes,
            "memoryAtLimit": self.memory_at_limit,
            "fuelConsumed": self.fuel_consumed,
            "tensorReads": self.reads,
            "bytesCopied": self.bytes_copied,
            "tensorsRead": list(self.tensors_read),
        }


class _Sink:
    """Where a WASI output stream goes: a byte cap, a buffer or a stream.

    wasmtime calls it (through :class:`_Forward`) from its own worker threads, and
    releases it from one of them after the store is gone: ``released`` is set
    then, and :func:`run_module` waits for it so that no callback into Python is
    still pending when the run returns (one pending at interpreter exit aborts the
    process).
    """

    def __init__(self, cap: int, stream: IO[bytes] | None, *, fail_over_cap: bool) -> None:
        self.cap = cap
        self.stream = stream
        self.fail_over_cap = fail_over_cap
        self.buffer = bytearray()
        self.total = 0
        self.overflow = False
        self.error: OSError | None = None
        self.released = threading.Event()
        self._lock = threading.Lock()

    def write(self, data: bytes) -> int:
        asked = len(data)
        with self._lock:
            room = self.cap - self.total
            if asked > room:
                self.overflow = True
                if self.fail_over_cap:
                    return -errno.EFBIG
                data = data[: max(0, room)]
            try:
                if self.stream is not None:
                    self.stream.write(data)
                else:
                    self.buffer += data
            except OSError as exc:
                self.error = exc
                return -errno.EIO
            self.total += len(data)
        # Past a non-failing cap, report everything as written so the module goes on.
        return asked


class _Forward:
    """The callable wasmtime holds; never raises; tells its sink when it is dropped."""

    def __init__(self, sink: _Sink) -> None:
        self._sink = sink

    def __call__(self, data: bytes) -> int:
        try:
            return self._sink.write(data)
        except Exception:  # never let an exception reach wasmtime's output callback
            return -errno.EIO

    def __del__(self) -> None:
        self._sink.released.set()


def _cause(text: str) -> str:
    """The ``Caused by`` part of a wasmtime error, else its first line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "Caused by:" in lines:
        tail = lines[lines.index("Caused by:") + 1 :]
        tail = [re.sub(r"^\d+:\s*", "", ln) for ln in tail]
        return "; ".join(tail) if tail else lines[0]
    return lines[0] if lines else text


def _where(text: str) -> str | None:
    for line in text.splitlines():
        m = re.match(r"^\s*0:\s+(?:0x[0-9a-f]+ - )?(.*)$", line)
        if m:
            return m.group(1).strip()
    return None


def _compile(engine: wasmtime.Engine, module: bytes) -> wasmtime.Module:
    try:
        return wasmtime.Module(engine, module)
    except wasmtime.WasmtimeError as exc:
        raise FormatError(
            f"not a valid WebAssembly module: {_cause(str(exc))}",
            hint="check the module with `wasm-tools validate` or rebuild it",
        ) from None


def _stdin_path(stdin: bytes | str | os.PathLike[str] | None, stack: list[str]) -> str:
    if stdin is None:
        stdin = b""
    if isinstance(stdin, bytes | bytearray):
        fd, path = tempfile.mkstemp(prefix="modelreg-wasm-stdin-")
        stack.append(path)
        with os.fdopen(fd, "wb") as fh:
            fh.write(stdin)
        return path
    path = os.fspath(stdin)
    if not os.path.isfile(path):
        raise InvalidInputError(f"input {path!r} is not a file")
    return path


@dataclass
class _Outcome:
    exit_code: int = 0
    error: BaseException | None = None
    memory_bytes: int = 0
    fuel_left: int | None = None


def run_module(
    module: bytes,
    source: TensorSource,
    *,
    stdin: bytes | str | os.PathLike[str] | None = None,
    stdout: IO[bytes] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    args: Sequence[str] = (),
    on_read: Callable[[ReadRecord], None] | None = None,
) -> RunResult:
    """Run ``module`` (a core WebAssembly binary exporting ``_start``) to its end.

    ``stdin``: bytes, or the path of a file to read. ``stdout``: a binary stream to
    write the module's output to (else it is captured in the result).
    """
    config = wasmtime.Config()
    config.consume_fuel = limits.fuel is not None
    config.epoch_interruption = limits.timeout is not None
    engine = wasmtime.Engine(config)
    compiled = _compile(engine, module)
    check_imports(compiled)
    exports = {e.name: e.type for e in compiled.exports}
    if not isinstance(exports.get("_start"), wasmtime.FuncType):
        raise WasmAbiError(
            "the module exports no _start function",
            hint='build it as a WASI command (wasm32-wasip1), or export "_start"',
        )
    host = HostABI(source, on_read=on_read)
    out = _Sink(limits.max_output, stdout, fail_over_cap=True)
    err = _Sink(limits.max_stderr, None, fail_over_cap=False)
    temp_files: list[str] = []
    started = time.monotonic()
    try:
        stdin_path = _stdin_path(stdin, temp_files)
        outcome = _execute(engine, compiled, host, out, err, stdin_path, limits, args)
    finally:
        for path in temp_files:
            try:
                os.unlink(path)
            except OSError:
                pass
    elapsed = time.monotonic() - started
    # The store is gone with _execute's frame (and the error's frames are cleared):
    # wait until wasmtime has released the output callbacks.
    if outcome.error is not None and outcome.error.__traceback__ is not None:
        traceback.clear_frames(outcome.error.__traceback__)
    gc.collect()
    out.released.wait(_RELEASE_WAIT)
    err.released.wait(_RELEASE_WAIT)
    if outcome.error is not None:
        raise outcome.error
    if out.error is not None:
        raise WasmError(f"could not write the module's output: {out.error.strerror}")
    if out.overflow:
        raise WasmLimitError(
            f"the module wrote more than {human_bytes(limits.max_output)} to its output",
            limit="output",
            hint="raise the output cap if this much output is expected",
        )
    return RunResult(
        exit_code=outcome.exit_code,
        stdout=bytes(out.buffer),
        stderr=bytes(err.buffer),
        output_bytes=out.total,
        elapsed=elapsed,
        memory_bytes=outcome.memory_bytes,
        memory_at_limit=outcome.memory_bytes + _PAGE > limits.max_memory,
        fuel_consumed=(
            limits.fuel - outcome.fuel_left
            if limits.fuel is not None and outcome.fuel_left is not None
            else None
        ),
        reads=host.counters.reads,
        bytes_copied=host.counters.bytes_copied,
        tensors_read=tuple(host.counters.tensors_read),
    )


def _execute(
    engine: wasmtime.Engine,
    compiled: wasmtime.Module,
    host: HostABI,
    out: _Sink,
    err: _Sink,
    stdin_path: str,
    limits: Limits,
    args: Sequence[str],
) -> _Outcome:
    """Instantiate and run; never raises (the error is in the outcome), so that the
    store dies with this frame."""
    outcome = _Outcome()
    store = wasmtime.Store(engine)
    store.set_limits(memory_size=limits.max_memory, table_elements=1_000_000)
    if limits.fuel is not None:
        store.set_fuel(limits.fuel)
    if limits.timeout is not None:
        store.set_epoch_deadline(1)
    timer: threading.Timer | None = None
    instance: wasmtime.Instance | None = None
    try:
        wasi = wasmtime.WasiConfig()
        wasi.argv = ["module", *args]
        wasi.stdin_file = stdin_path
        wasi.stdout_custom = _Forward(out)
        wasi.stderr_custom = _Forward(err)
        store.set_wasi(wasi)
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        host.define(linker)
        if limits.timeout is not None:
            timer = threading.Timer(limits.timeout, engine.increment_epoch)
            timer.daemon = True
            timer.start()
        try:
            instance = linker.instantiate(store, compiled)
            start = instance.exports(store)["_start"]
            assert isinstance(start, wasmtime.Func)
            start(store)
        except wasmtime.ExitTrap as exc:
            outcome.exit_code = exc.code
        except wasmtime.Trap as exc:
            outcome.error = _trap_error(exc, store, instance, limits, err.buffer)
        except wasmtime.WasmtimeError as exc:
            outcome.error = _start_error(exc, limits)
        outcome.memory_bytes = _memory_size(store, instance)
        if limits.fuel is not None:
            outcome.fuel_left = store.get_fuel()
    except BaseException as exc:  # a host-side error (IntegrityError, ...) ends the run
        outcome.error = exc
    finally:
        if timer is not None:
            timer.cancel()
    return outcome


def _memory_size(store: wasmtime.Store, instance: wasmtime.Instance | None) -> int:
    if instance is None:
        return 0
    memory = instance.exports(store).get("memory")
    return memory.data_len(store) if isinstance(memory, wasmtime.Memory) else 0


def _stderr_tail(stderr: bytes | bytearray) -> str:
    text = bytes(stderr[-500:]).decode("utf-8", "replace").strip()
    return f"; it wrote to stderr: {text!r}" if text else ""


def _trap_error(
    exc: wasmtime.Trap,
    store: wasmtime.Store,
    instance: wasmtime.Instance | None,
    limits: Limits,
    stderr: bytes | bytearray,
) -> WasmError:
    try:
        code = exc.trap_code
    except ValueError:  # a code older wasmtime-py releases have no name for
        code = None
    text = exc.message
    # TrapCode.OUT_OF_FUEL exists from wasmtime-py 45 on; older ones say it in the message.
    out_of_fuel = getattr(wasmtime.TrapCode, "OUT_OF_FUEL", None)
    if (code is not None and code == out_of_fuel) or (
        limits.fuel is not None and "all fuel consumed" in text
    ):
        return WasmLimitError(
            f"the module ran out of fuel (its budget was {limits.fuel} units)",
            limit="fuel",
            hint="raise --fuel if the work is expected to take longer",
        )
    if code == wasmtime.TrapCode.INTERRUPT:
        return WasmLimitError(
            f"the module ran past its time limit of {limits.timeout:g} s and was stopped",
            limit="time",
            hint="raise --timeout if the work is expected to take longer",
        )
    cause = _cause(text)
    where = _where(text)
    at = f" in {where}" if where else ""
    memory = _memory_size(store, instance)
    if memory and memory + _PAGE > limits.max_memory:
        return WasmLimitError(
            f"the module reached its memory limit ({human_bytes(memory)} of "
            f"{human_bytes(limits.max_memory)}) and then trapped: {cause}{at}"
            + _stderr_tail(stderr),
            limit="memory",
            hint="raise --max-memory, or give the module less input",
        )
    name = code.name.lower() if code is not None else None
    hint = "the module has a bug, or was given input it cannot handle"
    if code == wasmtime.TrapCode.STACK_OVERFLOW:
        hint = "the module recursed too deeply"
    return WasmTrapError(
        f"the module trapped: {cause}{at}" + _stderr_tail(stderr), hint=hint, trap_code=name
    )


def _start_error(exc: wasmtime.WasmtimeError, limits: Limits) -> WasmError:
    text = str(exc)
    cause = _cause(text)
    if "exceeds memory limits" in text or "memory minimum size" in text:
        return WasmLimitError(
            f"the module needs more memory at start than its limit of "
            f"{human_bytes(limits.max_memory)}: {cause}",
            limit="memory",
            hint="raise --max-memory",
        )
    if "unknown import" in text:
        return WasmAbiError(f"the module cannot be linked: {cause}")
    return WasmError(f"the module failed: {cause}")
