"""Tensor-aligned parts for big weight files: unchanged tensors keep their digest.

With ``--split``, a safetensors (or GGUF) file larger than the part size is
stored as several layers instead of one: a *header part* (bytes ``[0, first
tensor)``) and *tensor parts*, each holding whole tensors, back to back, so that
the concatenation of the parts in order is the file, byte for byte.

Where parts end
---------------

Boundaries are content-defined on the sequence of tensors (in file order) by a
rule that looks at one tensor at a time, its name and its size, and at nothing
else, with ``T`` the target part size:

1. a tensor of ``T`` bytes or more gets a part of its own (a boundary before
   and after it);
2. otherwise a boundary follows tensor ``t`` when
   ``SHA-256(name)[:8] / 2**64 < size(t) / T``: each byte "votes" for a
   boundary with probability ``1/T``, so parts average about ``T`` bytes;
3. a boundary is forced before a tensor that would make the current part
   larger than ``2 T`` (bounds the tail of rule 2).

Rules 1 and 2 depend only on the tensor itself, so two versions of a model with
the same tensor names and sizes get the same boundaries, and a tensor that
changes size moves at most the boundaries next to it (rule 3 resynchronises at
the next rule-1/2 boundary). A part's digest covers only tensor bytes, never
offsets: when a tensor in the middle grows, the header part changes (it holds
the offsets), the part holding that tensor changes, and every other part keeps
its digest. GGUF padding between tensors travels with the tensor before it.

When a file would need more than :data:`MAX_PARTS_PER_FILE` parts, ``T`` is
doubled until it does not (deterministically, from the file's own sizes).

Hashing
-------

:func:`hash_spans` reads the file once, block by block, feeding each block to
the part hasher(s) and, on a second thread, to the whole-file hasher (hashlib
releases the GIL), so splitting costs one read pass and no extra wall time on
two cores. :class:`~modelreg.model.digests.DigestCache` keeps the result, keyed
on the file's identity and on the spans: pushing an unchanged file again hashes
nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

from modelreg.errors import InvalidInputError
from modelreg.model.formats import ModelFileInfo
from modelreg.oci.digest import Digest, Hasher

__all__ = [
    "DEFAULT_PART_SIZE",
    "MAX_PARTS_PER_FILE",
    "MIN_PART_SIZE",
    "SPLITTABLE_FORMATS",
    "Span",
    "hash_spans",
    "parse_size",
    "plan_spans",
    "spans_key",
]

DEFAULT_PART_SIZE: Final = 32 * 1024 * 1024
"""Target part size, chosen by measurement (README, "Split weight files"): every
matrix of a 7B/8B Llama (32-112 MiB in bf16) gets a part of its own, so a fine-tune
sends exactly the tensors it changed; 64 MiB already sends 1.3-1.4x that when only
q/v projections change, 256 MiB 4.6-8x."""
MIN_PART_SIZE: Final = 4 * 1024
MAX_PARTS_PER_FILE: Final = 1000
SPLITTABLE_FORMATS: Final = frozenset({"safetensors", "gguf"})
_BLOCK: Final = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Span:
    """Bytes ``[offset, offset + length)`` of a file."""

    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


def parse_size(text: str | int) -> int:
    """``"64MiB"``, ``"256m"``, ``"1GB"`` or a number of bytes (:mod:`modelreg.units`);
    at least 4 KiB."""
    from modelreg.units import parse_size as parse_bytes

    value = parse_bytes(text, "part size")
    if value < MIN_PART_SIZE:
        raise InvalidInputError(
            f"part size {value} bytes is too small", hint=f"use at least {MIN_PART_SIZE} bytes"
        )
    return value


def _votes_for_boundary(name: str, size: int, target: int) -> bool:
    h = int.from_bytes(hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()[:8], "big")
    return h * target < size * (1 << 64)


def _segments(info: ModelFileInfo, file_size: int) -> tuple[int, list[tuple[str, int, int]]]:
    """(header end, [(tensor name, start, length)]) covering the file exactly."""
    tensors = sorted((t for t in info.tensors if t.offset >= 0), key=lambda t: (t.offset, t.name))
    if not tensors:
        return file_size, []
    header_end = tensors[0].offset
    out: list[tuple[str, int, int]] = []
    for i, t in enumerate(tensors):
        end = tensors[i + 1].offset if i + 1 < len(tensors) else file_size
        if end < t.offset or end > file_size:
            return file_size, []  # not a tiling we understand: do not split
        out.append((t.name, t.offset, end - t.offset))
    return header_end, out


def _plan(header_end: int, segments: list[tuple[str, int, int]], target: int) -> list[Span]:
    spans = [Span(0, header_end)]
    start = header_end
    length = 0
    limit = 2 * target

    def close() -> None:
        nonlocal start, length
        if length:
            spans.append(Span(start, length))
        start, length = start + length, 0

    for name, _, size in segments:
        big = size >= target
        if length and (big or length + size > limit):
            close()
        length += size
        if big or _votes_for_boundary(name, size, target):
            close()
    close()
    return spans


def plan_spans(info: ModelFileInfo, file_size: int, target: int) -> list[Span] | None:
    """The parts of a parsed weight file, or None when it should stay whole.

    Only formats whose tensors tile the file (safetensors, GGUF) are split, and
    only when the file is larger than ``target``.
    """
    if info.format not in SPLITTABLE_FORMATS or file_size <= target:
        return None
    header_end, segments = _segments(info, file_size)
    if not segments or header_end <= 0:
        return None
    while True:
        spans = _plan(header_end, segments, target)
        if len(spans) <= MAX_PARTS_PER_FILE:
            break
        target *= 2
    if len(spans) < 2:
        return None
    assert spans[-1].end == file_size and all(s.length > 0 for s in spans)
    return spans


def spans_key(spans: Sequence[Span]) -> str:
    """A compact, stable text key for a span list (digest-cache key)."""
    doc = [[s.offset, s.length] for s in spans]
    return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()


def _same(buf: bytearray, n: int, ref_fd: int, ref_buf: bytearray, pos: int) -> bool:
    """Are the ``n`` bytes in ``buf`` those of the reference file at ``pos``?"""
    got = os.preadv(ref_fd, [memoryview(ref_buf)[:n]], pos)
    if got != n:
        return False
    if n == len(buf):
        return buf == ref_buf  # memcmp, no copy
    return memoryview(buf)[:n].tobytes() == memoryview(ref_buf)[:n].tobytes()


def _feed(whole: Hasher, tap: Callable[[memoryview], None] | None, block: memoryview) -> None:
    whole.update(block)
    if tap is not None:
        tap(block)


def hash_spans(
    path: str | os.PathLike[str],
    spans: Sequence[Span],
    algorithm: str = "sha256",
    on_span: Callable[[int, Digest], None] | None = None,
    reference: tuple[str, Sequence[Digest]] | None = None,
    *,
    tap: Callable[[memoryview], None] | None = None,
) -> tuple[Digest, list[Digest], int]:
    """One read pass: (whole-file digest, one digest per span, bytes read).

    The spans must tile the file from 0 to its end; a file that changed size
    while being read raises :class:`InvalidInputError` (hash it again).
    ``on_span(index, digest)`` is called as soon as each span is hashed (a push
    starts uploading that part while the rest of the file is still being read).

    ``reference`` is ``(path, digests)`` of another file with the same spans whose
    span digests are known (the previous checkpoint of a series): a span whose
    bytes are equal to the reference's takes its digest without being hashed
    (comparing bytes costs a fraction of SHA-256), so a new version costs one
    SHA-256 pass (the whole file) instead of two. The caller checks that the
    reference did not change while it was read.

    ``tap(block)`` is fed every block of the file in order, on the thread that
    computes the whole-file digest (e.g. a chunk hasher for the chunk index).
    """
    whole = Hasher(algorithm)
    digests: list[Digest | None] = [None] * len(spans)
    # two buffers: the whole-file hasher works on one (another thread) while the next
    # block is read into the other and compared or hashed here
    buffers = (bytearray(_BLOCK), bytearray(_BLOCK))
    ref_buf = bytearray(_BLOCK if reference is not None else 0)
    turn = 0
    pos = 0
    pending: Future[None] | None = None
    with contextlib.ExitStack() as stack:
        fd = stack.enter_context(open(path, "rb", buffering=0)).fileno()
        ref_fd = -1
        if reference is not None and len(reference[1]) == len(spans):
            ref_fd = stack.enter_context(open(reference[0], "rb", buffering=0)).fileno()
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="hash"))
        for index, span in enumerate(spans):
            matching = ref_fd >= 0
            hasher = None if matching else Hasher(algorithm)
            while pos < span.end:
                buf = buffers[turn]
                turn ^= 1
                want = min(_BLOCK, span.end - pos)
                n = os.preadv(fd, [memoryview(buf)[:want]], pos)
                if n <= 0:
                    raise InvalidInputError(
                        f"{os.fspath(path)!r} changed size while it was hashed",
                        hint="push it again",
                    )
                block = memoryview(buf)[:n]
                if pending is not None:
                    pending.result()
                pending = pool.submit(_feed, whole, tap, block)
                if matching and not _same(buf, n, ref_fd, ref_buf, pos):
                    matching = False
                    hasher = Hasher(algorithm)  # hash what was skipped, then go on
                    at = span.offset
                    while at < pos:
                        earlier = os.pread(fd, min(_BLOCK, pos - at), at)
                        if not earlier:
                            break
                        hasher.update(earlier)
                        at += len(earlier)
                if hasher is not None:
                    hasher.update(block)
                pos += n
            if matching and reference is not None:
                digests[index] = reference[1][index]
            else:
                assert hasher is not None
                digests[index] = hasher.digest()
                if hasher.size != span.length:
                    raise InvalidInputError(
                        f"{os.fspath(path)!r} changed while it was hashed", hint="push it again"
                    )
            if on_span is not None:
                on_span(index, digests[index])  # type: ignore[arg-type]
        if pending is not None:
            pending.result()
        if os.pread(fd, 1, pos):
            raise InvalidInputError(
                f"{os.fspath(path)!r} grew while it was hashed", hint="push it again"
            )
    return whole.digest(), [d for d in digests if d is not None], pos
