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

from pathlib import Path
from typing import Any

from modelreg._version import __version__
from modelreg.client import Client, InspectResult, PullResult, PushResult, RemoteOptions
from modelreg.copy import CopyResult
from modelreg.errors import ModelRegError
from modelreg.events import Event, ProgressCallback
from modelreg.lazy import ModelHandle
from modelreg.model.pack import ModelMetadata
from modelreg.oci import Descriptor, Digest, Index, Manifest, Reference

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
    "__version__",
    "copy",
    "inspect",
    "open",
    "pull",
    "push",
    "tags",
]


def open(ref: str, *, options: RemoteOptions | None = None, **kwargs: Any) -> ModelHandle:
    """Open a model lazily: files, tensors and reads fetch only what is needed, verified.

    The handle keeps a client open; close it (or use ``with``) when done.
    """
    from modelreg.lazy import open_model

    client = Client(options)
    try:
        handle = open_model(client, ref, **kwargs)
    except BaseException:
        client.close()
        raise
    handle.adopt(client.close)
    return handle


def push(
    path: str | Path,
    ref: str,
    *,
    options: RemoteOptions | None = None,
    **kwargs: Any,
) -> PushResult:
    """Pack the model directory ``path`` and push it to ``ref``."""
    with Client(options) as client:
        return client.push(path, ref, **kwargs)


def pull(
    ref: str,
    output: str | Path,
    *,
    options: RemoteOptions | None = None,
    **kwargs: Any,
) -> PullResult:
    """Pull the model ``ref`` into the directory ``output``, verifying every byte."""
    with Client(options) as client:
        return client.pull(ref, output, **kwargs)


def inspect(ref: str, *, options: RemoteOptions | None = None) -> InspectResult:
    """Describe a model: manifest, config, files, sizes and digests."""
    with Client(options) as client:
        return client.inspect(ref)


def copy(src: str, dst: str, *, options: RemoteOptions | None = None, **kwargs: Any) -> CopyResult:
    """Copy an artifact (and with ``recursive=True`` its referrers) between targets."""
    with Client(options) as client:
        return client.copy(src, dst, **kwargs)


def tags(ref: str, *, options: RemoteOptions | None = None) -> list[str]:
    """The tags of a repository."""
    with Client(options) as client:
        return client.tags(ref)
