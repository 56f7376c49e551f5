"""Helpers for the lazy-reader tests (unit and integration): small models, the
pack-with-index-and-push integration, and a target wrapper that counts (and can
tamper with, or ignore Range for) what is read."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from modelreg.content.base import VerifyingReader
from modelreg.copy import copy_graph
from modelreg.lazy import chunk_index_annotations, push_chunk_index
from modelreg.model.pack import pack_directory, scan_directory
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor

CHUNK = 64 * 1024


def tensors_for_test() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    return {
        "a.weight": rng.standard_normal((256, 256)).astype(np.float32),  # 256 KiB
        "b.weight": rng.standard_normal((128, 300)).astype(np.float16),  # 75 KiB
        "c.bias": rng.standard_normal((7,)).astype(np.float32),
        "d.weight": rng.integers(-100, 100, (512, 300)).astype(np.int32),  # 600 KiB
        "e.scale": np.arange(10, dtype=np.float64),
    }


def write_model(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"architectures": ["TestModel"]}))
    (root / "tokenizer.json").write_text(json.dumps({"vocab": list(range(2000))}))
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "sub" / "run.sh").chmod(0o755)
    save_file(tensors_for_test(), str(root / "model.safetensors"), metadata={"format": "pt"})
    return root


def publish(
    target: Any,
    root: Path,
    *,
    chunk_size: int | None = CHUNK,
    tag: str = "v1",
    index: bool = True,
    algorithm: str = "blake3",
) -> Descriptor:
    """Pack ``root`` (with a chunk index unless ``index=False``), copy it to ``target``,
    push the index: the integration the lead wires into Client.push. ``algorithm="sha256"``
    writes the index as modelreg did before BLAKE3 chunk digests."""
    files = scan_directory(root)
    annotations: dict[str, str] = {}
    blob = desc = None
    if index:
        annotations, blob, desc = chunk_index_annotations(
            files, chunk_size=chunk_size, cache_dir=None, algorithm=algorithm
        )
    packed = pack_directory(root, annotations=annotations)
    copy_graph(packed.as_target(), packed.descriptor, target, tag=tag)
    if index:
        assert blob is not None and desc is not None
        push_chunk_index(target, packed.descriptor, blob, desc)
    return packed.descriptor


class CountingTarget:
    """Wraps a target: counts reads, optionally tampers with range reads or ignores Range.

    ``ignore_range=True`` behaves like RegistryTarget on a registry answering 200: the
    bytes asked for are returned (sliced from the whole blob, which is what "travels"),
    and ``client.supports_range`` becomes False. Like a RegistryTarget it is a
    :class:`~modelreg.content.base.RangeReader` whose knowledge lives in its client:
    pass ``client=other.client`` for another repository reached through the same one.
    """

    def __init__(
        self, inner: Any, *, host: str = "fake.example:1", client: Any | None = None
    ) -> None:
        self.inner = inner
        self.client = client or SimpleNamespace(host=host, supports_range=None)
        self.name = f"{self.client.host}/test"
        self.ignore_range = False
        self.tamper: Callable[[Descriptor, int, bytes], bytes] | None = None
        self.tamper_whole: Callable[[Descriptor, bytes], bytes] | None = None
        self.range_calls: list[tuple[str, int, int]] = []
        self.fetch_calls: list[str] = []
        self.bytes = 0
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.range_calls.clear()
            self.fetch_calls.clear()
            self.bytes = 0

    @property
    def supports_range(self) -> bool | None:
        return self.client.supports_range  # type: ignore[no-any-return]

    def fetch(self, desc: Descriptor) -> VerifyingReader:
        with self._lock:
            self.fetch_calls.append(str(desc.digest))
            if desc.media_type not in mt.ALL_MANIFEST_TYPES:
                self.bytes += desc.size
        if self.tamper_whole is not None and desc.media_type not in mt.ALL_MANIFEST_TYPES:
            with self.inner.fetch(desc) as reader:
                reader.read_to_end()
            data = self.inner.fetch_range(desc, 0, desc.size)
            return VerifyingReader(io.BytesIO(self.tamper_whole(desc, data)), desc)
        return self.inner.fetch(desc)

    def fetch_range(self, desc: Descriptor, offset: int, length: int) -> bytes:
        with self._lock:
            self.range_calls.append((str(desc.digest), offset, length))
            self.bytes += (offset + length) if self.ignore_range else length
        if self.ignore_range:
            self.client.supports_range = False
        data = self.inner.fetch_range(desc, offset, length)
        if self.tamper is not None:
            data = self.tamper(desc, offset, data)
        return bytes(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
