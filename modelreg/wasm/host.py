"""Where a WebAssembly module's tensors come from: the :class:`TensorSource` protocol.

The host ABI (:mod:`modelreg.wasm.abi`) serves a module's ``tensor_*`` calls from
a ``TensorSource``: a list of tensors (name, dtype, shape, size) and a ``read``
that returns *verified* bytes of one tensor. Sources:

* :class:`LazyModelSource`: a model in a registry, the local store or an OCI
  layout, read through :mod:`modelreg.lazy` (only the chunks a read touches are
  fetched, each verified against the chunk index the manifest covers before it
  is returned; without a chunk index, each file is fetched whole and verified
  first). Open one with :func:`open_model_source`.
* :class:`SafetensorsFileSource`: a local ``.safetensors`` file (development and
  tests); with ``digest=`` the whole file is hashed at open and must match.
* :class:`InMemoryTensorSource`: tensors held in memory (tests).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from modelreg._closing import Closing
from modelreg.content.base import ReadOnlyTarget
from modelreg.errors import IntegrityError, InvalidInputError, NotFoundError
from modelreg.model.formats import FileSource, parse_safetensors
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest

if TYPE_CHECKING:
    from modelreg.lazy import ModelHandle

__all__ = [
    "InMemoryTensorSource",
    "LazyModelSource",
    "SafetensorsFileSource",
    "TensorMeta",
    "TensorSource",
    "TensorSpec",
    "open_model_source",
]


@runtime_checkable
class TensorMeta(Protocol):
    """What the host tells a module about a tensor (``modelreg.lazy.TensorRef`` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def dtype(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def nbytes(self) -> int: ...


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A plain :class:`TensorMeta`."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


@runtime_checkable
class TensorSource(Protocol):
    """Tensors a module may read. ``read`` returns verified bytes or raises."""

    def tensors(self) -> Sequence[TensorMeta]:
        """Every tensor, in a stable order (the ABI's indexes are positions in it)."""
        ...

    def read(self, name: str, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset`` of tensor ``name``'s data, verified.

        Raises :class:`~modelreg.errors.IntegrityError` when the bytes do not match
        what the model's digests say, before returning any of them.
        """
        ...


def _check_range(meta: TensorMeta, offset: int, length: int) -> None:
    if offset < 0 or length < 0 or offset + length > meta.nbytes:
        raise InvalidInputError(
            f"bytes [{offset}, {offset + length}) are outside tensor {meta.name!r} "
            f"({meta.nbytes} bytes)"
        )


def _check_tensor(
    by_name: Mapping[str, TensorSpec], owner: object, name: str, offset: int, length: int
) -> None:
    """Refuses a tensor ``owner`` does not have, or a range outside it."""
    spec = by_name.get(name)
    if spec is None:
        raise NotFoundError(f"{owner} has no tensor {name!r}")
    _check_range(spec, offset, length)


class InMemoryTensorSource:
    """Tensors given as ``{name: (dtype, shape, data)}`` (tests, small fixtures)."""

    def __init__(self, tensors: Mapping[str, tuple[str, Sequence[int], bytes]]) -> None:
        self._specs: list[TensorSpec] = []
        self._data: dict[str, bytes] = {}
        for name, (dtype, shape, data) in tensors.items():
            self._specs.append(TensorSpec(name, dtype, tuple(shape), len(data)))
            self._data[name] = bytes(data)
        self.bytes_read = 0

    def tensors(self) -> Sequence[TensorMeta]:
        return list(self._specs)

    def read(self, name: str, offset: int, length: int) -> bytes:
        data = self._data.get(name)
        if data is None:
            raise NotFoundError(f"no tensor {name!r}")
        spec = next(s for s in self._specs if s.name == name)
        _check_range(spec, offset, length)
        self.bytes_read += length
        return data[offset : offset + length]


class SafetensorsFileSource(Closing):
    """A local safetensors file. Headers are parsed and validated at open.

    A local file is trusted as it is unless ``digest`` is given: then the whole
    file is hashed at open and must match (it is read through the same open file
    afterwards). Close it, or use it as a context manager.
    """

    def __init__(self, path: str | os.PathLike[str], *, digest: str | Digest | None = None):
        self.path = os.fspath(path)
        self._file = FileSource(self.path)
        try:
            if digest is not None:
                self._verify(Digest.parse(str(digest)))
            info = parse_safetensors(self._file, name=os.path.basename(self.path))
        except BaseException:
            self._file.close()
            raise
        ordered = sorted(info.tensors, key=lambda t: (t.offset, t.name))
        self._specs = [TensorSpec(t.name, t.dtype, tuple(t.shape), t.nbytes) for t in ordered]
        self._offsets = {t.name: t.offset for t in ordered}
        self._by_name = {s.name: s for s in self._specs}
        self.bytes_read = 0

    def _verify(self, expected: Digest) -> None:
        hasher = hashlib.new(expected.algorithm)
        offset, size = 0, self._file.size
        while offset < size:
            block = self._file.read_at(offset, min(4 * 1024 * 1024, size - offset))
            if not block:
                break
            hasher.update(block)
            offset += len(block)
        actual = f"{expected.algorithm}:{hasher.hexdigest()}"
        if offset != size or actual != str(expected):
            raise IntegrityError(
                f"{self.path} hashes to {actual}, expected {expected}",
                hint="the file changed or is not the model you meant",
            )

    def tensors(self) -> Sequence[TensorMeta]:
        return list(self._specs)

    def read(self, name: str, offset: int, length: int) -> bytes:
        _check_tensor(self._by_name, self.path, name, offset, length)
        data = self._file.read_at(self._offsets[name] + offset, length)
        if len(data) != length:
            raise IntegrityError(f"{self.path} shrank while it was read")
        self.bytes_read += length
        return data

    def close(self) -> None:
        self._file.close()


class LazyModelSource:
    """The tensors of a remote (or stored) model, read lazily and verified.

    Every safetensors and GGUF file of the model contributes its tensors, files in
    manifest order, tensors in file order. A name found in more than one file is
    exposed as ``FILE:NAME`` for each (no tensor is silently shadowed).
    """

    def __init__(self, handle: ModelHandle) -> None:
        self.handle = handle
        refs = list(handle.tensors())
        counts: dict[str, int] = {}
        for ref in refs:
            counts[ref.name] = counts.get(ref.name, 0) + 1
        self._specs: list[TensorSpec] = []
        self._where: dict[str, tuple[str, int, int]] = {}
        for ref in refs:
            name = ref.name if counts[ref.name] == 1 else f"{ref.file}:{ref.name}"
            self._specs.append(TensorSpec(name, ref.dtype, tuple(ref.shape), ref.nbytes))
            self._where[name] = (ref.file, ref.offset, ref.nbytes)
        self._by_name = {s.name: s for s in self._specs}

    @property
    def digest(self) -> Digest:
        return self.handle.digest

    @property
    def stats(self) -> dict[str, int]:
        """Where bytes came from (``remoteBytes``, ``chunksFetched``, ...)."""
        return dict(self.handle.stats)

    def tensors(self) -> Sequence[TensorMeta]:
        return list(self._specs)

    def read(self, name: str, offset: int, length: int) -> bytes:
        _check_tensor(self._by_name, self.handle.reference, name, offset, length)
        path, start, _ = self._where[name]
        if length == 0:
            return b""
        data = self.handle.read(path, start + offset, length)
        if len(data) != length:
            raise IntegrityError(
                f"{self.handle.reference}: got {len(data)} bytes of tensor {name!r}, asked {length}"
            )
        return data

    def close(self) -> None:
        self.handle.close()


ModelVerifier = Callable[[ReadOnlyTarget, Descriptor], None]
"""``verify(target, manifest_descriptor)``: raise to refuse the model."""


@contextmanager
def open_model_source(
    client: Any,
    ref: str,
    *,
    verify: ModelVerifier | None = None,
    **lazy_options: Any,
) -> Iterator[LazyModelSource]:
    """Open ``ref`` (resolved once, by digest if it names one) as a lazy tensor source.

    ``verify`` runs before the model's manifest is read. ``lazy_options`` go to
    :func:`modelreg.lazy.open_model` (``cache``, ``concurrency``, ``readahead``, ...).
    """
    from modelreg.lazy import open_model

    handle = open_model(client, ref, verify=verify, **lazy_options)
    try:
        source = LazyModelSource(handle)
        yield source
    finally:
        handle.close()
