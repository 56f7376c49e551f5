"""Recognise pickle-based model files without ever unpickling them.

Detection is by magic bytes (``\\x80`` + protocol 2..5, the legacy
``torch.save`` prefix) and, for zip archives, by the member names in the
central directory (``data.pkl``, any ``*.pkl``). Nothing is loaded.

:func:`scan_pickle` lists what a pickle *would import* (GLOBAL, INST and
STACK_GLOBAL opcodes) by walking opcodes with :func:`pickletools.genops`, which
decodes opcodes and their arguments but executes nothing, over a capped byte
range. The STACK_GLOBAL attribution tracks a simplified value stack and memo:
it is best-effort reporting, not a security boundary. Every pickle is unsafe
whatever it imports.
"""

from __future__ import annotations

import io
import pickletools
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_SCAN_LIMIT",
    "TORCH_LEGACY_MAGIC",
    "PickleScan",
    "is_raw_pickle",
    "looks_like_pickle",
    "scan_pickle",
]

DEFAULT_SCAN_LIMIT: Final = 1024 * 1024

#: What ``torch.save`` (non-zip, before PyTorch 1.6) writes first: the pickled magic number.
TORCH_LEGACY_MAGIC: Final = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."

_STRING_OPS: Final = frozenset(
    {
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
        "UNICODE",
        "BINUNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE8",
    }
)
_PUT_OPS: Final = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET_OPS: Final = frozenset({"GET", "BINGET", "LONG_BINGET"})

_SAFE_BUILTINS: Final = frozenset(
    {
        "set",
        "frozenset",
        "slice",
        "range",
        "complex",
        "bytearray",
        "bytes",
        "dict",
        "list",
        "tuple",
        "int",
        "float",
        "bool",
        "str",
        "object",
    }
)
_EXPECTED: Final = frozenset(
    {
        "collections.OrderedDict",
        "collections.defaultdict",
        "collections.Counter",
        "_codecs.encode",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.ndarray",
        "numpy.dtype",
    }
)


def is_expected_import(qualified: str) -> bool:
    """True for globals a plain tensor checkpoint normally imports (torch, numpy
    arrays, OrderedDict...). Anything else deserves a look."""
    module, _, attr = qualified.rpartition(".")
    if qualified in _EXPECTED:
        return True
    if module in ("builtins", "__builtin__") and attr in _SAFE_BUILTINS:
        return True
    if module.startswith("numpy.dtypes"):
        return True
    return module == "torch" or module.startswith("torch.")


def is_raw_pickle(first_bytes: bytes) -> bool:
    """A pickle of protocol 2 to 5 (they all start with PROTO)."""
    return len(first_bytes) >= 2 and first_bytes[0] == 0x80 and 2 <= first_bytes[1] <= 5


@dataclass(frozen=True, slots=True)
class PickleScan:
    protocol: int | None
    imports: tuple[str, ...]  # "module.name", in first-seen order
    unexpected_imports: tuple[str, ...]
    opcodes: int
    complete: bool  # reached STOP within the scanned bytes

    def describe(self) -> str:
        if not self.imports:
            return "imports nothing" + ("" if self.complete else " in the scanned part")
        shown = ", ".join(self.imports[:12])
        more = f" (+{len(self.imports) - 12} more)" if len(self.imports) > 12 else ""
        text = f"imports {shown}{more}"
        if self.unexpected_imports:
            text += "; unexpected: " + ", ".join(self.unexpected_imports[:12])
        if not self.complete:
            text += " (partial scan)"
        return text


_MARK: Final = object()


def scan_pickle(data: bytes, *, limit: int = DEFAULT_SCAN_LIMIT) -> PickleScan:
    """List the imports of the first pickle in ``data[:limit]`` without executing it."""
    stream = io.BytesIO(data[:limit])
    stack: list[object] = []
    memo: dict[object, object] = {}
    imports: list[str] = []
    protocol: int | None = None
    count = 0
    complete = False

    def pop() -> object:
        return stack.pop() if stack else None

    def add(module: object, attr: object) -> None:
        if isinstance(module, str) and isinstance(attr, str):
            q = f"{module}.{attr}"
        else:
            q = "<unresolved STACK_GLOBAL>"
        if q not in imports:
            imports.append(q)

    try:
        for op, arg, _pos in pickletools.genops(stream):
            count += 1
            name = op.name
            if name == "PROTO":
                protocol = int(arg) if isinstance(arg, int) else None
                continue
            if name in ("GLOBAL", "INST"):
                g_module, _, g_attr = str(arg).partition(" ")
                add(g_module, g_attr)
                if name == "INST":
                    while stack and stack.pop() is not _MARK:
                        pass
                stack.append(None)
            elif name == "STACK_GLOBAL":
                attr = pop()
                module = pop()
                add(module, attr)
                stack.append(None)
            elif name in _STRING_OPS:
                stack.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else None
            elif name in _PUT_OPS:
                memo[arg] = stack[-1] if stack else None
            elif name in _GET_OPS:
                stack.append(memo.get(arg))
            elif name == "STOP":
                complete = True
                break
            else:
                _generic(op, stack)
    except Exception:  # hostile bytes: any decoding failure ends the scan
        complete = False
    unexpected = tuple(q for q in imports if not is_expected_import(q))
    return PickleScan(protocol, tuple(imports), unexpected, count, complete)


def _generic(op: pickletools.OpcodeInfo, stack: list[object]) -> None:
    before = op.stack_before
    if pickletools.stackslice in before:
        while stack and stack.pop() is not _MARK:
            pass
        extra = sum(1 for x in before if x not in (pickletools.stackslice, pickletools.markobject))
    else:
        extra = len(before)
    for _ in range(extra):
        if stack:
            stack.pop()
    for item in op.stack_after:
        stack.append(_MARK if item is pickletools.markobject else None)


def looks_like_pickle(data: bytes, *, min_opcodes: int = 16) -> bool:
    """Heuristic for pickles without a PROTO header (protocols 0 and 1).

    True when the bytes decode as pickle opcodes up to STOP, or for at least
    ``min_opcodes`` opcodes. Random binary data fails within a few bytes.
    """
    if is_raw_pickle(data):
        return True
    if not data or data[0] in b"\x00 \t\r\n#{[<":
        return False
    count = 0
    try:
        for op, _arg, _pos in pickletools.genops(io.BytesIO(data[:65536])):
            count += 1
            if op.name == "STOP":
                return count >= 2
            if count >= min_opcodes:
                return True
    except Exception:  # anything that fails to decode is not a pickle prefix
        return False
    return False
