"""Small guest modules written in WAT for the ABI and runtime tests."""

from __future__ import annotations

import wasmtime

ABI_IMPORTS = """
  (import "modelreg" "abi_version" (func $abi_version (result i32)))
  (import "modelreg" "tensor_count" (func $tensor_count (result i32)))
  (import "modelreg" "tensor_name" (func $tensor_name (param i32 i32 i32) (result i32)))
  (import "modelreg" "tensor_info" (func $tensor_info (param i32 i32) (result i32)))
  (import "modelreg" "tensor_find" (func $tensor_find (param i32 i32) (result i32)))
  (import "modelreg" "tensor_read" (func $tensor_read (param i32 i64 i32 i32) (result i32)))
"""

WASI_IMPORTS = """
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
"""

# Scratch: 0..8 iovec, 8..12 count, 12..16 an i32 to print.
HELPERS = """
  (func $out (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $err (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $out_i32 (param $v i32)
    (i32.store (i32.const 12) (local.get $v))
    (call $out (i32.const 12) (i32.const 4)))
"""


def guest(start: str, *, data: str = "", pages: int = 1, extra: str = "") -> bytes:
    """A WASI command importing the whole ABI; ``start`` is the body of ``_start``."""
    wat = f"""(module
  {WASI_IMPORTS}
  {ABI_IMPORTS}
  (memory (export "memory") {pages})
  {data}
  {HELPERS}
  {extra}
  (func (export "_start") {start}))"""
    return bytes(wasmtime.wat2wasm(wat))


def raw(wat: str) -> bytes:
    return bytes(wasmtime.wat2wasm(wat))


# A module that copies stdin to stdout, 4 KiB at a time.
CAT = guest(
    """
    (local $n i32)
    (block $eof
      (loop $more
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (i32.const 4096))
        (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $eof (i32.eqz (local.get $n)))
        (call $out (i32.const 1024) (local.get $n))
        (br $more)))
    """
)

# Grows its memory one page at a time until refused, then traps.
MEMORY_HOG = guest(
    """
    (loop $grow
      (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable
    """
)

# Grows until refused, says so on stderr, exits 70.
MEMORY_HOG_EXIT = guest(
    """
    (loop $grow
      (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    (call $err (i32.const 100) (i32.const 14))
    (call $proc_exit (i32.const 70))
    """,
    data='(data (i32.const 100) "out of memory\\n")',
)

SPIN = guest("(loop $forever (br $forever))")
