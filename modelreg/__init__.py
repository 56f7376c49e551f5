"""modelreg: machine-learning models as OCI artifacts.

The library behind the ``modelreg`` CLI, the admission webhook and the CI step::

    import modelreg
    modelreg.push("./my-model", "localhost:5000/team/llm:v1")
    modelreg.pull("localhost:5000/team/llm:v1", "./llm")
    info = modelreg.inspect("llm:v1")          # no host: the embedded local store

Every function raises :class:`modelreg.errors.ModelRegError` subclasses on failure
and never prints; pass ``progress=`` to receive transfer events.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from modelreg._version import __version__

if TYPE_CHECKING:
    from modelreg.client import Client, InspectResult, PullResult, PushResult, RemoteOptions
    from modelreg.copy import CopyResult
    from modelreg.errors import ModelRegError
    from modelreg.events import Event, ProgressCallback
    from modelreg.lazy import ModelHandle
    from modelreg.model.pack import ModelMetadata
    from modelreg.oci import Descriptor, Digest, Index, Manifest, Reference
    from modelreg.settings import Settings

# The public names below are imported when first asked for (PEP 562), so that
# ``import modelreg`` (and with it every ``modelreg.x`` submodule import, and the CLI's
# ``--help``) does not pay for the HTTP client, TLS and crypto until a name needs them.
_LAZY: dict[str, str] = {
    "Client": "modelreg.client",
    "InspectResult": "modelreg.client",
    "PullResult": "modelreg.client",
    "PushResult": "modelreg.client",
    "RemoteOptions": "modelreg.client",
    "CopyResult": "modelreg.copy",
    "ModelRegError": "modelreg.errors",
    "Event": "modelreg.events",
    "ProgressCallback": "modelreg.events",
    "ModelHandle": "modelreg.lazy",
    "ModelMetadata": "modelreg.model.pack",
    "Descriptor": "modelreg.oci",
    "Digest": "modelreg.oci",
    "Index": "modelreg.oci",
    "Manifest": "modelreg.oci",
    "Reference": "modelreg.oci",
    "Settings": "modelreg.settings",
}


def __getattr__(name: str) -> Any:
    """A public name of :data:`_LAZY`, imported from its module on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # the next lookup is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "Client",
    "CopyResult",
    "Descriptor",
    "Digest",
    "Event",
    "Index",
    "InspectResult",
    "Manifest",
    "ModelMetadata",
    "ModelRegError",
    "ProgressCallback",
    "PullResult",
    "PushResult",
    "Reference",
    "RemoteOptions",
    "Settings",
    "__version__",
    "copy",
    "inspect",
    "load",
    "load_iter",
    "open",
    "pull",
    "push",
    "tags",
]


def open(
    ref: str,
    *,
    options: RemoteOptions | None = None,
    settings: Settings | None = None,
    **kwargs: Any,
) -> ModelHandle:
    """Open a model lazily: files, tensors and reads fetch only what is needed, verified.

    The handle keeps a client open; close it (or use ``with``) when done.
    """
    from modelreg.client import Client
    from modelreg.lazy import open_model

    client = Client(options, settings=settings)
    try:
        handle = open_model(client, ref, **kwargs)
    except BaseException:
        client.close()
        raise
    handle.adopt(client.close)
    return handle


def load(
    ref: str,
    *,
    framework: Literal["numpy", "torch"] = "numpy",
    device: str = "cpu",
    files: Collection[str] | None = None,
    tensors: Collection[str] | Callable[[str], bool] | None = None,
    tensor_parallel: tuple[int, int] | None = None,
    split: Mapping[str, int | None] | Callable[[Any], int | None] | None = None,
    concurrency: int = 4,
    options: RemoteOptions | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Load a model's tensors straight from the registry into memory: ``{name: array}``.

    Concurrent Range requests land in each tensor's own buffer; every byte is
    verified before its tensor is returned (per chunk with a chunk index, per
    blob without); nothing touches the disk. ``framework="torch"`` returns torch
    tensors without a copy. ``files``: globs; ``tensors``: names or a predicate;
    ``tensor_parallel=(rank, world)``: only this rank's shards (2-D tensors split
    by rows unless ``split`` says otherwise). See :mod:`modelreg.lazy.load`.
    """
    from modelreg.client import Client
    from modelreg.lazy.load import load_model

    with Client(options, settings=settings) as client:
        return load_model(
            client,
            ref,
            framework=framework,
            device=device,
            files=files,
            tensors=tensors,
            tensor_parallel=tensor_parallel,
            split=split,
            concurrency=concurrency,
        )


def load_iter(
    ref: str,
    *,
    framework: Literal["numpy", "torch"] = "numpy",
    device: str = "cpu",
    files: Collection[str] | None = None,
    tensors: Collection[str] | Callable[[str], bool] | None = None,
    tensor_parallel: tuple[int, int] | None = None,
    split: Mapping[str, int | None] | Callable[[Any], int | None] | None = None,
    concurrency: int = 4,
    options: RemoteOptions | None = None,
    settings: Settings | None = None,
) -> Iterator[tuple[str, Any]]:
    """:func:`load` as a generator: ``(name, array)`` as each tensor is verified."""
    from modelreg.client import Client
    from modelreg.lazy.load import iter_load

    with Client(options, settings=settings) as client:
        yield from iter_load(
            client,
            ref,
            framework=framework,
            device=device,
            files=files,
            tensors=tensors,
            tensor_parallel=tensor_parallel,
            split=split,
            concurrency=concurrency,
        )


def push(
    path: str | Path,
    ref: str,
    *,
    options: RemoteOptions | None = None,
    settings: Settings | None = None,
    **kwargs: Any,
) -> PushResult:
    """Pack the model directory ``path`` and push it to ``ref``."""
    from modelreg.client import Client

    with Client(options, settings=settings) as client:
        return client.push(path, ref, **kwargs)


def pull(
    ref: str,
    output: str | Path,
    *,
    options: RemoteOptions | None = None,
    settings: Settings | None = None,
    **kwargs: Any,
) -> PullResult:
    """Pull the model ``ref`` into the directory ``output``, verifying every byte."""
    from modelreg.client import Client

    with Client(options, settings=settings) as client:
        return client.pull(ref, output, **kwargs)


def inspect(
    ref: str, *, options: RemoteOptions | None = None, settings: Settings | None = None
) -> InspectResult:
    """Describe a model: manifest, config, files, sizes and digests."""
    from modelreg.client import Client

    with Client(options, settings=settings) as client:
        return client.inspect(ref)


def copy(
    src: str,
    dst: str,
    *,
    options: RemoteOptions | None = None,
    settings: Settings | None = None,
    **kwargs: Any,
) -> CopyResult:
    """Copy an artifact (and with ``recursive=True`` its referrers) between targets."""
    from modelreg.client import Client

    with Client(options, settings=settings) as client:
        return client.copy(src, dst, **kwargs)


def tags(
    ref: str, *, options: RemoteOptions | None = None, settings: Settings | None = None
) -> list[str]:
    """The tags of a repository."""
    from modelreg.client import Client

    with Client(options, settings=settings) as client:
        return client.tags(ref)
