"""The ``modelreg/1`` host ABI: how a module lists tensors and copies their bytes.

A module imports these functions from the import module ``"modelreg"`` (all
integers little-endian; pointers and lengths are offsets into the module's
exported memory ``"memory"``; ``i32`` pointers are read as unsigned)::

    abi_version() -> i32
        1 for this ABI.
    tensor_count() -> i32
        Number of tensors; indexes run from 0 to count-1.
    tensor_name(idx: i32, buf: i32, cap: i32) -> i32
        Writes min(len, cap) bytes of the UTF-8 name at buf; returns len (the full
        length: call again with a larger buffer if len > cap).
    tensor_info(idx: i32, info: i32) -> i32
        Writes an 80-byte record at info and returns the tensor's ndim:
            +0  u32 dtype code (table below; 0 = other)
            +4  u32 ndim
            +8  u64 nbytes (size of the tensor's data)
            +16 u64 dims[8] (outermost first; unused entries 0; a tensor with
                more than 8 dimensions reports ndim > 8 and its first 8 dims)
    tensor_find(name: i32, len: i32) -> i32
        Index of the tensor with that UTF-8 name, or -1 when there is none.
    tensor_read(idx: i32, offset: i64, buf: i32, len: i32) -> i32
        Copies bytes [offset, offset+len) of the tensor's data to buf; returns 0.
        The bytes are verified (per chunk against the model's chunk index, or
        per file) before any of them is copied; a mismatch ends the run.

Dtype codes: 1 F32, 2 F16, 3 BF16, 4 F64, 5 I8, 6 U8, 7 I16, 8 U16, 9 I32,
10 U32, 11 I64, 12 U64, 13 BOOL, 14 F8_E4M3, 15 F8_E5M2, 0 anything else.

Misuse traps: a pointer range outside the module's memory, an index outside
``[0, count)``, a negative length or offset, a read past the tensor's end, a
name that is not UTF-8. The run then stops with a :class:`WasmAbiError` naming
the function, its arguments and what was wrong. ``tensor_find`` of an unknown
name is not misuse (it returns -1), nor is a short ``tensor_name`` buffer.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from modelreg.wasm._errors import WasmAbiError
from modelreg.wasm._wasmtime import wasmtime
from modelreg.wasm.host import TensorMeta, TensorSource

__all__ = [
    "ABI_FUNCTIONS",
    "ABI_MODULE",
    "ABI_VERSION",
    "DTYPE_CODES",
    "INFO_SIZE",
    "MAX_DIMS",
    "HostABI",
    "ReadRecord",
]

ABI_MODULE: Final = "modelreg"
ABI_VERSION: Final = 1
MAX_DIMS: Final = 8
INFO_SIZE: Final = 16 + 8 * MAX_DIMS  # 80
_INFO_HEAD: Final = struct.Struct("<IIQ")

DTYPE_CODES: Final[dict[str, int]] = {
    "F32": 1,
    "F16": 2,
    "BF16": 3,
    "F64": 4,
    "I8": 5,
    "U8": 6,
    "I16": 7,
    "U16": 8,
    "I32": 9,
    "U32": 10,
    "I64": 11,
    "U64": 12,
    "BOOL": 13,
    "F8_E4M3": 14,
    "F8_E5M2": 15,
}

ABI_FUNCTIONS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "abi_version": ((), ("i32",)),
    "tensor_count": ((), ("i32",)),
    "tensor_name": (("i32", "i32", "i32"), ("i32",)),
    "tensor_info": (("i32", "i32"), ("i32",)),
    "tensor_find": (("i32", "i32"), ("i32",)),
    "tensor_read": (("i32", "i64", "i32", "i32"), ("i32",)),
}
"""Name -> (parameter types, result types) of every function of the ABI."""

_I32_MAX: Final = 2**31 - 1


def _valtype(name: str) -> wasmtime.ValType:
    return wasmtime.ValType.i64() if name == "i64" else wasmtime.ValType.i32()


def signature(name: str) -> str:
    params, results = ABI_FUNCTIONS[name]
    return f"({', '.join(params)}) -> ({', '.join(results)})"


@dataclass(frozen=True, slots=True)
class ReadRecord:
    """One ``tensor_read`` served: which tensor, which bytes."""

    name: str
    offset: int
    length: int


@dataclass
class _Counters:
    calls: int = 0
    reads: int = 0
    bytes_copied: int = 0
    tensors_read: list[str] = field(default_factory=list)


class HostABI:
    """The host side of ``modelreg/1`` for one run, over one :class:`TensorSource`.

    ``on_read(record)`` is called after each ``tensor_read`` copied its bytes.
    """

    def __init__(
        self,
        source: TensorSource,
        *,
        on_read: Callable[[ReadRecord], None] | None = None,
    ) -> None:
        self.source = source
        self._tensors: list[TensorMeta] = list(source.tensors())
        if len(self._tensors) > _I32_MAX:
            raise WasmAbiError("the model has more tensors than the ABI can index")
        self._names = [t.name.encode("utf-8") for t in self._tensors]
        self._index: dict[bytes, int] = {}
        for i, name in enumerate(self._names):
            self._index.setdefault(name, i)
        self._on_read = on_read
        self.counters = _Counters()

    @property
    def tensors(self) -> Sequence[TensorMeta]:
        return self._tensors

    # ------------------------------------------------------------------ wiring
    def define(self, linker: wasmtime.Linker) -> None:
        """Define every ABI function in ``linker`` under the ``modelreg`` module."""
        impls: dict[str, Callable[..., int]] = {
            "abi_version": self._abi_version,
            "tensor_count": self._tensor_count,
            "tensor_name": self._tensor_name,
            "tensor_info": self._tensor_info,
            "tensor_find": self._tensor_find,
            "tensor_read": self._tensor_read,
        }
        for name, (params, results) in ABI_FUNCTIONS.items():
            ty = wasmtime.FuncType([_valtype(p) for p in params], [_valtype(r) for r in results])
            linker.define_func(ABI_MODULE, name, ty, impls[name], access_caller=True)

    # ----------------------------------------------------------------- helpers
    def _memory(self, caller: wasmtime.Caller, fn: str) -> tuple[wasmtime.Memory, int]:
        memory = caller.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            raise WasmAbiError(
                f"modelreg.{fn}: the module exports no memory named 'memory'",
                hint='export the linear memory as "memory" (WASI modules do)',
            )
        return memory, memory.data_len(caller)

    @staticmethod
    def _span(fn: str, what: str, ptr: int, length: int, size: int) -> int:
        """Check ``[ptr, ptr+length)`` lies in memory; returns the unsigned pointer."""
        uptr = ptr & 0xFFFFFFFF
        if length < 0:
            raise WasmAbiError(f"modelreg.{fn}: negative {what} length {length}")
        if uptr + length > size:
            raise WasmAbiError(
                f"modelreg.{fn}: {what} [{uptr}, {uptr + length}) is outside the module's "
                f"memory ({size} bytes)",
                hint="the module passed a bad pointer or length (ABI misuse)",
            )
        return uptr

    def _tensor(self, fn: str, idx: int) -> TensorMeta:
        if not 0 <= idx < len(self._tensors):
            raise WasmAbiError(
                f"modelreg.{fn}: tensor index {idx} is out of range "
                f"(the model has {len(self._tensors)} tensors)",
                hint="indexes run from 0 to tensor_count()-1; tensor_find returns -1 when "
                "a name is unknown",
            )
        return self._tensors[idx]

    @staticmethod
    def _write(memory: wasmtime.Memory, caller: wasmtime.Caller, ptr: int, data: bytes) -> None:
        if not data:
            return
        base = ctypes.addressof(memory.data_ptr(caller).contents)
        ctypes.memmove(base + ptr, data, len(data))

    # --------------------------------------------------------------- functions
    def _abi_version(self, caller: wasmtime.Caller) -> int:
        self.counters.calls += 1
        return ABI_VERSION

    def _tensor_count(self, caller: wasmtime.Caller) -> int:
        self.counters.calls += 1
        return len(self._tensors)

    def _tensor_name(self, caller: wasmtime.Caller, idx: int, ptr: int, cap: int) -> int:
        self.counters.calls += 1
        self._tensor("tensor_name", idx)
        name = self._names[idx]
        memory, size = self._memory(caller, "tensor_name")
        uptr = self._span("tensor_name", "buffer", ptr, cap, size)
        self._write(memory, caller, uptr, name[: max(0, cap)])
        return len(name)

    def _tensor_info(self, caller: wasmtime.Caller, idx: int, ptr: int) -> int:
        self.counters.calls += 1
        meta = self._tensor("tensor_info", idx)
        memory, size = self._memory(caller, "tensor_info")
        uptr = self._span("tensor_info", "info record", ptr, INFO_SIZE, size)
        dims = list(meta.shape[:MAX_DIMS]) + [0] * (MAX_DIMS - min(len(meta.shape), MAX_DIMS))
        record = _INFO_HEAD.pack(DTYPE_CODES.get(meta.dtype, 0), len(meta.shape), meta.nbytes)
        record += struct.pack(f"<{MAX_DIMS}Q", *dims)
        self._write(memory, caller, uptr, record)
        return min(len(meta.shape), _I32_MAX)

    def _tensor_find(self, caller: wasmtime.Caller, ptr: int, length: int) -> int:
        self.counters.calls += 1
        memory, size = self._memory(caller, "tensor_find")
        uptr = self._span("tensor_find", "name", ptr, length, size)
        raw = bytes(memory.read(caller, uptr, uptr + length)) if length else b""
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise WasmAbiError(
                f"modelreg.tensor_find: the name at [{uptr}, {uptr + length}) is not UTF-8"
            ) from None
        return self._index.get(raw, -1)

    def _tensor_read(
        self, caller: wasmtime.Caller, idx: int, offset: int, ptr: int, length: int
    ) -> int:
        self.counters.calls += 1
        meta = self._tensor("tensor_read", idx)
        if offset < 0 or length < 0 or offset + length > meta.nbytes:
            raise WasmAbiError(
                f"modelreg.tensor_read: bytes [{offset}, {offset + length}) are outside "
                f"tensor {meta.name!r} ({meta.nbytes} bytes)",
                hint="read within [0, nbytes) as tensor_info reports it (ABI misuse)",
            )
        # Check the destination before any byte is fetched.
        _, size = self._memory(caller, "tensor_read")
        self._span("tensor_read", "buffer", ptr, length, size)
        data = self.source.read(meta.name, offset, length) if length else b""
        if len(data) != length:
            raise WasmAbiError(
                f"modelreg.tensor_read: the source returned {len(data)} bytes of "
                f"{meta.name!r}, not {length}"
            )
        # Re-check against the memory as it is now (the source ran Python code).
        memory, size = self._memory(caller, "tensor_read")
        uptr = self._span("tensor_read", "buffer", ptr, length, size)
        self._write(memory, caller, uptr, data)
        c = self.counters
        c.reads += 1
        c.bytes_copied += length
        if meta.name not in c.tensors_read:
            c.tensors_read.append(meta.name)
        if self._on_read is not None:
            self._on_read(ReadRecord(meta.name, offset, length))
        return 0


def check_imports(module: Any) -> list[str]:
    """Check a compiled module's imports against WASI preview 1 and ``modelreg/1``.

    Returns the ABI functions it imports; raises :class:`WasmAbiError` for an
    import the host does not provide or an ABI function with the wrong type.
    """
    used: list[str] = []
    for imp in module.imports:
        mod, name, ty = imp.module, imp.name, imp.type
        if mod == "wasi_snapshot_preview1":
            continue
        if mod != ABI_MODULE:
            raise WasmAbiError(
                f"the module imports {mod}::{name}, which the host does not provide",
                hint="modelreg provides WASI preview 1 (wasi_snapshot_preview1) and the "
                "modelreg/1 functions (docs/wasm.md)",
            )
        if name not in ABI_FUNCTIONS:
            raise WasmAbiError(
                f"the module imports modelreg::{name}, which is not in the modelreg/1 ABI",
                hint="known functions: " + ", ".join(ABI_FUNCTIONS),
            )
        if not isinstance(ty, wasmtime.FuncType):
            raise WasmAbiError(f"the module imports modelreg::{name} as a non-function")
        params = tuple(str(p) for p in ty.params)
        results = tuple(str(r) for r in ty.results)
        if (params, results) != ABI_FUNCTIONS[name]:
            raise WasmAbiError(
                f"the module imports modelreg::{name} with type ({', '.join(params)}) -> "
                f"({', '.join(results)}); modelreg/1 defines {signature(name)}",
            )
        used.append(name)
    return used
