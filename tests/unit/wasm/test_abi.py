"""The modelreg/1 host ABI: every function, its record layouts, and misuse."""

from __future__ import annotations

import struct

import pytest

from modelreg.errors import FormatError
from modelreg.wasm import (
    ABI_FUNCTIONS,
    DTYPE_CODES,
    InMemoryTensorSource,
    ReadRecord,
    WasmAbiError,
    run_module,
)
from tests.unit.wasm.guests import guest, raw

W = bytes(range(48))  # 12 float32-sized values
SOURCE_TENSORS = {
    "a.weight": ("F32", (3, 4), W),
    "b.bias": ("I8", (5,), b"\x01\x02\x03\x04\x05"),
    "deep": ("F4", (1, 1, 1, 1, 1, 1, 1, 1, 2, 3), b"\x00\x00\x00"),
}


def source() -> InMemoryTensorSource:
    return InMemoryTensorSource(SOURCE_TENSORS)


def run(start: str, *, data: str = "", src: InMemoryTensorSource | None = None, **kw):
    return run_module(guest(start, data=data), src or source(), **kw)


def test_version_and_count():
    result = run("(call $out_i32 (call $abi_version)) (call $out_i32 (call $tensor_count))")
    assert struct.unpack("<2i", result.stdout) == (1, 3)


def test_tensor_name_full_and_truncated():
    result = run(
        """
        (call $out_i32 (call $tensor_name (i32.const 0) (i32.const 100) (i32.const 64)))
        (call $out (i32.const 100) (i32.const 8))
        (call $out_i32 (call $tensor_name (i32.const 1) (i32.const 200) (i32.const 3)))
        (call $out (i32.const 200) (i32.const 6))
        (call $out_i32 (call $tensor_name (i32.const 1) (i32.const 300) (i32.const 0)))
        """
    )
    out = result.stdout
    assert struct.unpack_from("<i", out, 0)[0] == 8
    assert out[4:12] == b"a.weight"
    assert struct.unpack_from("<i", out, 12)[0] == 6  # full length, though cap was 3
    assert out[16:22] == b"b.b\x00\x00\x00"  # only cap bytes were written
    assert struct.unpack_from("<i", out, 22)[0] == 6


def test_tensor_info_record_layout():
    result = run(
        """
        (call $out_i32 (call $tensor_info (i32.const 0) (i32.const 256)))
        (call $out (i32.const 256) (i32.const 80))
        (call $out_i32 (call $tensor_info (i32.const 2) (i32.const 512)))
        (call $out (i32.const 512) (i32.const 80))
        """
    )
    out = result.stdout
    assert struct.unpack_from("<i", out, 0)[0] == 2
    dtype, ndim, nbytes, *dims = struct.unpack_from("<IIQ8Q", out, 4)
    assert (dtype, ndim, nbytes) == (DTYPE_CODES["F32"], 2, 48)
    assert dims == [3, 4, 0, 0, 0, 0, 0, 0]
    # ten dimensions: ndim says 10, the record holds the first 8; unknown dtype is 0
    assert struct.unpack_from("<i", out, 84)[0] == 10
    dtype, ndim, nbytes, *dims = struct.unpack_from("<IIQ8Q", out, 88)
    assert (dtype, ndim, nbytes) == (0, 10, 3)
    assert dims == [1] * 8


def test_tensor_find():
    result = run(
        """
        (call $out_i32 (call $tensor_find (i32.const 100) (i32.const 6)))
        (call $out_i32 (call $tensor_find (i32.const 200) (i32.const 4)))
        (call $out_i32 (call $tensor_find (i32.const 100) (i32.const 0)))
        """,
        data='(data (i32.const 100) "b.bias") (data (i32.const 200) "nope")',
    )
    assert struct.unpack("<3i", result.stdout) == (1, -1, -1)


def test_tensor_read_whole_and_ranges():
    records: list[ReadRecord] = []
    src = source()
    result = run(
        """
        (call $out_i32
          (call $tensor_read (i32.const 0) (i64.const 0) (i32.const 1024) (i32.const 48)))
        (call $out (i32.const 1024) (i32.const 48))
        (drop (call $tensor_read (i32.const 0) (i64.const 40) (i32.const 2048) (i32.const 8)))
        (call $out (i32.const 2048) (i32.const 8))
        (drop (call $tensor_read (i32.const 1) (i64.const 5) (i32.const 3000) (i32.const 0)))
        """,
        src=src,
        on_read=records.append,
    )
    assert result.stdout == b"\x00\x00\x00\x00" + W + W[40:48]
    assert records == [
        ReadRecord("a.weight", 0, 48),
        ReadRecord("a.weight", 40, 8),
        ReadRecord("b.bias", 5, 0),
    ]
    assert result.reads == 3 and result.bytes_copied == 56
    assert result.tensors_read == ("a.weight", "b.bias")
    assert src.bytes_read == 56


MISUSE = [
    pytest.param(
        "(drop (call $tensor_read (i32.const 0) (i64.const 0) (i32.const 65530) (i32.const 16)))",
        "tensor_read: buffer [65530, 65546) is outside the module's memory (65536 bytes)",
        id="read-buffer-past-memory",
    ),
    pytest.param(
        "(drop (call $tensor_read (i32.const 0) (i64.const 0) (i32.const -1) (i32.const 4)))",
        "buffer [4294967295, 4294967299) is outside",
        id="read-buffer-unsigned-huge",
    ),
    pytest.param(
        "(drop (call $tensor_read (i32.const 0) (i64.const 40) (i32.const 1024) (i32.const 16)))",
        "bytes [40, 56) are outside tensor 'a.weight' (48 bytes)",
        id="read-past-tensor-end",
    ),
    pytest.param(
        "(drop (call $tensor_read (i32.const 0) (i64.const -8) (i32.const 1024) (i32.const 4)))",
        "bytes [-8, -4) are outside tensor",
        id="read-negative-offset",
    ),
    pytest.param(
        "(drop (call $tensor_read (i32.const 0) (i64.const 0) (i32.const 1024) (i32.const -4)))",
        "are outside tensor",
        id="read-negative-length",
    ),
    pytest.param(
        "(drop (call $tensor_read (i32.const 7) (i64.const 0) (i32.const 1024) (i32.const 4)))",
        "tensor_read: tensor index 7 is out of range (the model has 3 tensors)",
        id="read-bad-index",
    ),
    pytest.param(
        "(drop (call $tensor_info (i32.const -1) (i32.const 256)))",
        "tensor_info: tensor index -1 is out of range",
        id="info-negative-index",
    ),
    pytest.param(
        "(drop (call $tensor_info (i32.const 0) (i32.const 65500)))",
        "tensor_info: info record [65500, 65580) is outside the module's memory",
        id="info-record-past-memory",
    ),
    pytest.param(
        "(drop (call $tensor_name (i32.const 0) (i32.const 65535) (i32.const 10)))",
        "tensor_name: buffer [65535, 65545) is outside",
        id="name-buffer-past-memory",
    ),
    pytest.param(
        "(drop (call $tensor_name (i32.const 0) (i32.const 100) (i32.const -1)))",
        "tensor_name: negative buffer length -1",
        id="name-negative-cap",
    ),
    pytest.param(
        "(drop (call $tensor_find (i32.const 70000) (i32.const 4)))",
        "tensor_find: name [70000, 70004) is outside",
        id="find-name-past-memory",
    ),
    pytest.param(
        "(drop (call $tensor_find (i32.const 100) (i32.const 2)))",
        "is not UTF-8",
        id="find-name-not-utf8",
    ),
]


@pytest.mark.parametrize(("call", "message"), MISUSE)
def test_misuse_stops_the_run_with_a_clear_error(call, message):
    src = source()
    records: list[ReadRecord] = []
    with pytest.raises(WasmAbiError) as info:
        run(
            call + " (call $out (i32.const 300) (i32.const 5))",
            data='(data (i32.const 100) "\\ff\\fe") (data (i32.const 300) "after")',
            src=src,
            on_read=records.append,
        )
    assert message in info.value.message
    assert info.value.exit_code == 10
    assert src.bytes_read == 0 and records == []  # nothing fetched, nothing copied


def test_a_module_without_memory_export_gets_a_clear_error():
    module = raw(
        """(module
        (import "modelreg" "tensor_name" (func $n (param i32 i32 i32) (result i32)))
        (memory 1)
        (func (export "_start") (drop (call $n (i32.const 0) (i32.const 0) (i32.const 4)))))"""
    )
    with pytest.raises(WasmAbiError, match="exports no memory named 'memory'"):
        run_module(module, source())


@pytest.mark.parametrize(
    ("imports", "message"),
    [
        ('(import "env" "now" (func))', "imports env::now, which the host does not provide"),
        (
            '(import "modelreg" "tensor_write" (func (param i32) (result i32)))',
            "modelreg::tensor_write, which is not in the modelreg/1 ABI",
        ),
        (
            '(import "modelreg" "tensor_read" (func (param i32 i32 i32 i32) (result i32)))',
            "modelreg/1 defines (i32, i64, i32, i32) -> (i32)",
        ),
        ('(import "modelreg" "tensor_count" (global i32))', "as a non-function"),
    ],
)
def test_imports_are_checked_before_anything_runs(imports, message):
    module = raw(f'(module {imports} (memory (export "memory") 1) (func (export "_start")))')
    with pytest.raises(WasmAbiError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_module(module, source())


def test_a_module_must_export_start():
    module = raw('(module (memory (export "memory") 1) (func (export "main")))')
    with pytest.raises(WasmAbiError, match="no _start function"):
        run_module(module, source())


def test_not_webassembly_is_a_format_error():
    with pytest.raises(FormatError, match="not a valid WebAssembly module"):
        run_module(b"\x00asm\x01\x00\x00\x00\xff\xff", source())


def test_abi_table_matches_the_documented_signatures():
    assert ABI_FUNCTIONS["tensor_read"] == (("i32", "i64", "i32", "i32"), ("i32",))
    assert set(ABI_FUNCTIONS) == {
        "abi_version",
        "tensor_count",
        "tensor_name",
        "tensor_info",
        "tensor_find",
        "tensor_read",
    }
