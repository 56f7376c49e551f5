"""The runtime: limits, traps, exits, stdio; the worked example against NumPy."""

from __future__ import annotations

import io
import struct
import time

import pytest

from modelreg.errors import IntegrityError, InvalidInputError
from modelreg.wasm import (
    InMemoryTensorSource,
    Limits,
    ReadRecord,
    SafetensorsFileSource,
    WasmLimitError,
    WasmTrapError,
    parse_size,
    run_module,
)
from tests.unit.wasm.example import Example, load_script
from tests.unit.wasm.guests import CAT, MEMORY_HOG, MEMORY_HOG_EXIT, SPIN, guest, raw

EMPTY = InMemoryTensorSource({})
MiB = 1024 * 1024


# ----------------------------------------------------------------------------- stdio
def test_stdin_bytes_and_file_reach_the_module(tmp_path):
    data = bytes(range(256)) * 40
    assert run_module(CAT, EMPTY, stdin=data).stdout == data
    path = tmp_path / "in.bin"
    path.write_bytes(data[:5000])
    assert run_module(CAT, EMPTY, stdin=path).stdout == data[:5000]
    assert run_module(CAT, EMPTY).stdout == b""


def test_stdout_can_stream_to_a_file_object():
    sink = io.BytesIO()
    result = run_module(CAT, EMPTY, stdin=b"hello", stdout=sink)
    assert sink.getvalue() == b"hello" and result.stdout == b"" and result.output_bytes == 5


def test_output_over_the_cap_fails_the_run():
    with pytest.raises(WasmLimitError, match="wrote more than 100 bytes") as info:
        run_module(CAT, EMPTY, stdin=b"x" * 1000, limits=Limits(max_output=100))
    assert info.value.limit == "output"


def test_missing_input_file_is_invalid_input(tmp_path):
    with pytest.raises(InvalidInputError, match="is not a file"):
        run_module(CAT, EMPTY, stdin=str(tmp_path / "nope"))


def test_exit_status_and_stderr_are_reported_not_raised():
    module = guest(
        "(call $err (i32.const 100) (i32.const 5)) (call $proc_exit (i32.const 3))",
        data='(data (i32.const 100) "oops\\n")',
    )
    result = run_module(module, EMPTY)
    assert result.exit_code == 3 and not result.ok
    assert result.stderr == b"oops\n"
    assert not result.memory_at_limit


def test_stderr_is_capped_without_failing():
    module = guest(
        "(call $err (i32.const 100) (i32.const 1000)) (call $out (i32.const 100) (i32.const 2))"
    )
    result = run_module(module, EMPTY, limits=Limits(max_stderr=10))
    assert len(result.stderr) == 10 and result.ok and result.stdout == b"\x00\x00"


# ---------------------------------------------------------------------------- traps
def test_unreachable_is_a_trap_with_its_cause():
    with pytest.raises(WasmTrapError) as info:
        run_module(guest("unreachable"), EMPTY)
    err = info.value
    assert err.trap_code == "unreachable"
    assert "the module trapped: wasm trap: wasm `unreachable` instruction executed" in err.message
    assert err.exit_code == 10


def test_out_of_bounds_access_is_a_trap():
    with pytest.raises(WasmTrapError, match="out of bounds memory access") as info:
        run_module(guest("(drop (i32.load (i32.const 70000)))"), EMPTY)
    assert info.value.trap_code == "memory_out_of_bounds"


def test_stack_overflow_is_a_trap_with_a_hint():
    module = raw('(module (memory (export "memory") 1) (func $f (export "_start") call $f))')
    with pytest.raises(WasmTrapError, match="call stack exhausted") as info:
        run_module(module, EMPTY)
    assert info.value.hint == "the module recursed too deeply"


def test_trap_message_includes_the_modules_stderr():
    module = guest(
        "(call $err (i32.const 100) (i32.const 8)) unreachable",
        data='(data (i32.const 100) "bad dim\\n")',
    )
    with pytest.raises(WasmTrapError, match="it wrote to stderr: 'bad dim'"):
        run_module(module, EMPTY)


# --------------------------------------------------------------------------- limits
def test_memory_over_the_cap_at_start():
    module = raw('(module (memory (export "memory") 100) (func (export "_start")))')
    with pytest.raises(WasmLimitError, match="needs more memory at start than its limit of 1 MiB"):
        run_module(module, EMPTY, limits=Limits(max_memory=MiB))


def test_memory_growth_stops_at_the_cap_with_a_clear_error():
    with pytest.raises(WasmLimitError) as info:
        run_module(MEMORY_HOG, EMPTY, limits=Limits(max_memory=2 * MiB))
    err = info.value
    assert err.limit == "memory"
    assert "reached its memory limit (2 MiB of 2 MiB) and then trapped" in err.message
    assert "raise --max-memory" in (err.hint or "")


def test_memory_cap_then_exit_is_flagged_in_the_result():
    result = run_module(MEMORY_HOG_EXIT, EMPTY, limits=Limits(max_memory=2 * MiB))
    assert result.exit_code == 70
    assert result.memory_at_limit and result.memory_bytes == 2 * MiB
    assert result.stderr == b"out of memory\n"


def test_time_limit_stops_an_endless_loop():
    started = time.monotonic()
    with pytest.raises(WasmLimitError, match=r"ran past its time limit of 0\.3 s") as info:
        run_module(SPIN, EMPTY, limits=Limits(timeout=0.3))
    assert info.value.limit == "time"
    assert time.monotonic() - started < 10


def test_fuel_limit_stops_an_endless_loop_deterministically():
    with pytest.raises(WasmLimitError, match="ran out of fuel") as info:
        run_module(SPIN, EMPTY, limits=Limits(fuel=100_000, timeout=None))
    assert info.value.limit == "fuel"


def test_fuel_consumed_is_reported():
    result = run_module(CAT, EMPTY, stdin=b"abc", limits=Limits(fuel=10_000_000))
    assert result.ok and 0 < (result.fuel_consumed or 0) < 10_000_000


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256MiB", 256 * MiB),
        ("1GiB", 1024**3),
        ("64k", 64_000),
        ("1048576", MiB),
        ("1.5 MiB", int(1.5 * MiB)),
    ],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "ten", "5 parsecs", "-1MiB"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(InvalidInputError):
        parse_size(text)


@pytest.mark.parametrize(
    "kwargs", [{"max_memory": 100}, {"timeout": 0}, {"fuel": 0}, {"max_output": -1}]
)
def test_limits_are_validated(kwargs):
    with pytest.raises(InvalidInputError):
        Limits(**kwargs)


# ------------------------------------------------------------ the source's failures
class TamperedSource(InMemoryTensorSource):
    """A source whose second tensor fails verification."""

    def read(self, name: str, offset: int, length: int) -> bytes:
        if name == "b":
            raise IntegrityError(f"chunk of {name} hashes to sha256:bad")
        return super().read(name, offset, length)


def test_a_tampered_chunk_ends_the_run_before_the_module_sees_it():
    src = TamperedSource({"a": ("U8", (4,), b"good"), "b": ("U8", (4,), b"evil")})
    module = guest(
        """
        (drop (call $tensor_read (i32.const 0) (i64.const 0) (i32.const 1024) (i32.const 4)))
        (call $out (i32.const 1024) (i32.const 4))
        (drop (call $tensor_read (i32.const 1) (i64.const 0) (i32.const 2048) (i32.const 4)))
        (call $out (i32.const 2048) (i32.const 4))
        """
    )
    records: list[ReadRecord] = []
    out = io.BytesIO()
    with pytest.raises(IntegrityError, match="hashes to sha256:bad"):
        run_module(module, src, stdout=out, on_read=records.append)
    assert records == [ReadRecord("a", 0, 4)]
    assert out.getvalue() == b"good"  # the module never got past the failed read


# ------------------------------------------------------------------ the example
def test_example_matches_the_numpy_reference(example: Example):
    reference = load_script("reference")
    with SafetensorsFileSource(example.weights) as src:
        result = run_module(example.wasm.read_bytes(), src, stdin=example.inputs)
        read = src.bytes_read
    assert result.ok, result.stderr
    expected = example.expected()
    logits, classes = reference.decode(result.stdout)
    want_logits, want_classes = reference.decode(expected)
    assert logits.shape == (64, 4)
    assert (classes == want_classes).all()
    assert abs(logits - want_logits).max() <= 1e-6
    assert result.stdout == expected  # same f32 operations in the same order: bit-exact
    labels = example.labels.read_bytes()
    assert sum(int(c) == lab for c, lab in zip(classes, labels, strict=True)) >= 56  # ~95%
    # only the four layers were read: never aux.embedding (1 MiB)
    assert result.tensors_read == ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
    assert read == result.bytes_copied == (64 * 16 + 64 + 4 * 64 + 4) * 4
    assert example.weights.stat().st_size > 1024 * 1024


def test_example_refuses_a_partial_feature_vector(example: Example):
    with SafetensorsFileSource(example.weights) as src:
        result = run_module(example.wasm.read_bytes(), src, stdin=b"\x00" * 10)
    assert result.exit_code == 65
    assert b"not a whole number of feature vectors" in result.stderr


def test_example_reports_a_missing_layer(example: Example):
    src = InMemoryTensorSource({"fc1.weight": ("F32", (2, 2), b"\x00" * 16)})
    result = run_module(example.wasm.read_bytes(), src)
    assert result.exit_code == 65
    assert result.stderr == b"mlp: missing or malformed tensor fc1.bias\n"


def test_example_runs_out_of_memory_cleanly(example: Example):
    with SafetensorsFileSource(example.weights) as src:
        result = run_module(
            example.wasm.read_bytes(),
            src,
            stdin=b"\x00" * (3 * MiB),
            limits=Limits(max_memory=MiB),
        )
    assert result.exit_code == 70 and result.memory_at_limit
    assert result.stderr == b"mlp: out of memory\n"


def test_local_source_checks_its_digest(example: Example):
    import hashlib

    good = "sha256:" + hashlib.sha256(example.weights.read_bytes()).hexdigest()
    with SafetensorsFileSource(example.weights, digest=good) as src:
        assert [t.name for t in src.tensors()][:2] == ["fc1.weight", "fc1.bias"]
    with pytest.raises(IntegrityError, match="expected sha256:00"):
        SafetensorsFileSource(example.weights, digest="sha256:" + "0" * 64)


def test_results_serialise(example: Example):
    with SafetensorsFileSource(example.weights) as src:
        result = run_module(example.wasm.read_bytes(), src, stdin=b"")
    doc = result.to_dict()
    assert doc["exitCode"] == 0 and doc["outputBytes"] == 0
    assert doc["tensorsRead"] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert doc["bytesCopied"] == struct.calcsize("<1348f")
