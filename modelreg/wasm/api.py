"""Pack a module with its model, and run a packed bundle: the two library doors.

::

    with Client() as client:
        packed = pack(client, "mlp.wasm", model="localhost:5000/team/mlp:v1",
                      ref="localhost:5000/team/mlp-wasm:v1")
        ran = run(client, packed.reference, stdin=features,
                  check=signature_check(policy))          # refuse unverified code or weights
        print(ran.result.stdout, ran.model_stats["remoteBytes"])

``run`` resolves the bundle tag once and works on digests from then on: the
module is the bundle's verified layer, the model the digest the bundle pins
(a ``model=`` override may change where the model is read from, never which
model it is).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from modelreg._json import camel_fields
from modelreg.copy import CopyResult, copy_graph, fetch_manifest
from modelreg.errors import InvalidInputError, InvalidReferenceError
from modelreg.oci.reference import Reference
from modelreg.wasm.abi import ReadRecord, check_imports
from modelreg.wasm.bundle import MAX_MODULE_BYTES, Bundle, build_bundle, module_kind, read_bundle
from modelreg.wasm.checks import ArtifactCheck
from modelreg.wasm.host import TensorSource, open_model_source
from modelreg.wasm.runtime import DEFAULT_LIMITS, Limits, RunResult, run_module

__all__ = ["BundleRun", "PackResult", "lint_module", "pack", "read_module_file", "run", "run_local"]


@dataclass(frozen=True)
class PackResult:
    reference: str
    """Where the bundle went, with tag and digest."""
    digest: str
    model: str
    """The pinned model, ``name@digest``."""
    module_digest: str
    imports: tuple[str, ...]
    transfer: CopyResult

    def to_dict(self) -> dict[str, Any]:
        return {
            **camel_fields(self, "reference", "digest", "model", "module_digest"),
            "abiImports": list(self.imports),
            "bytesSent": self.transfer.bytes_sent,
            "bytesSkipped": self.transfer.bytes_skipped,
        }


@dataclass(frozen=True)
class BundleRun:
    bundle: str
    """The bundle that ran, ``name@digest``."""
    model: str
    """The model it read, ``name@digest``."""
    result: RunResult
    model_stats: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "model": self.model,
            **self.result.to_dict(),
            "modelStats": dict(self.model_stats),
        }


def read_module_file(path: str | os.PathLike[str], limit: int = MAX_MODULE_BYTES) -> bytes:
    """Read a ``.wasm`` file, refusing it over ``limit`` before reading it whole."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise InvalidInputError(f"{str(p)!r} is not a file")
        if size > limit:
            raise InvalidInputError(f"{str(p)!r} is {size} bytes, over the {limit}-byte limit")
        return p.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {str(p)!r}: {exc.strerror}") from None


def lint_module(module: bytes) -> tuple[str, ...]:
    """Compile ``module`` and check its imports; returns the ABI functions it uses."""
    from modelreg.wasm._wasmtime import wasmtime
    from modelreg.wasm.runtime import _compile

    module_kind(module)
    compiled = _compile(wasmtime.Engine(), module)
    used = tuple(check_imports(compiled))
    if not any(e.name == "_start" for e in compiled.exports):
        raise InvalidInputError(
            "the module exports no _start function",
            hint='build it as a WASI command (wasm32-wasip1), or export "_start"',
        )
    return used


def pack(
    client: Any,
    module: bytes | str | os.PathLike[str],
    *,
    model: str,
    ref: str,
    title: str | None = None,
    created: str | None = None,
    author: str | None = None,
    annotations: Mapping[str, str] | None = None,
    subject: bool = False,
) -> PackResult:
    """Bundle ``module`` with the model ``model`` (resolved now, pinned by digest) and
    push the bundle to ``ref`` (tag defaults to ``latest``). The weights do not move."""
    if isinstance(module, bytes):
        data, name = module, title or "module.wasm"
    else:
        data, name = read_module_file(module), title or os.path.basename(os.fspath(module))
    imports = lint_module(data)
    dst = Reference.parse(ref)
    if dst.digest is not None:
        raise InvalidReferenceError(
            f"cannot push to a digest reference {ref!r}",
            hint="push to a tag; the digest is computed from the content",
        )
    tag = dst.tag or "latest"
    model_ref, model_target, model_desc = client.resolve(model)
    fetch_manifest(  # checked only: a bundle pins one model manifest, never an index
        model_target,
        model_desc,
        expected="a model manifest",
        hint="pin one model manifest (by its digest)",
        name=model,
    )
    if subject and (dst.kind, dst.name) != (model_ref.kind, model_ref.name):
        raise InvalidInputError(
            f"--subject needs the bundle in the model's repository ({model_ref.name}), "
            f"not {dst.name}",
            hint="referrers live in one repository; push there or drop --subject",
        )
    built = build_bundle(
        data,
        model=model_ref,
        model_descriptor=model_desc,
        title=name,
        created=created,
        author=author,
        annotations=annotations,
        subject=subject,
    )
    transfer = copy_graph(built.as_target(), built.descriptor, client.target(dst), tag=tag)
    digest = built.descriptor.digest
    return PackResult(
        reference=str(dst.with_tag(tag).with_digest(digest)),
        digest=str(digest),
        model=str(model_ref.with_tag(None).with_digest(model_desc.digest)),
        module_digest=str(built.manifest.layers[0].digest),
        imports=imports,
        transfer=transfer,
    )


def _model_location(bundle: Bundle, override: str | None) -> Reference:
    """Where to read the pinned model: the pin, or ``override`` with the pinned digest."""
    if override is None:
        return bundle.model
    alt = Reference.parse(override)
    if alt.digest is not None and alt.digest != bundle.model_digest:
        raise InvalidInputError(
            f"--model {override!r} names {alt.digest}, but the bundle pins {bundle.model_digest}",
            hint="the bundle runs only the model it was packed with; give its digest or a "
            "repository that holds it",
        )
    return alt.with_tag(None).with_digest(bundle.model_digest)


def run(
    client: Any,
    ref: str,
    *,
    stdin: bytes | str | os.PathLike[str] | None = None,
    stdout: IO[bytes] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    check: ArtifactCheck | None = None,
    model: str | None = None,
    args: Sequence[str] = (),
    on_read: Callable[[ReadRecord], None] | None = None,
    max_module_bytes: int = MAX_MODULE_BYTES,
    lazy_options: Mapping[str, Any] | None = None,
) -> BundleRun:
    """Run the bundle ``ref`` on its pinned model.

    ``check`` (see :mod:`modelreg.wasm.checks`) runs for the bundle before its
    manifest is read and for the model before the model's manifest is read; it
    raises to refuse. ``model``: read the pinned model from another repository
    (the digest stays the bundle's). ``lazy_options`` go to
    :func:`modelreg.lazy.open_model`.
    """
    ref_obj, target, desc = client.resolve(ref)
    bundle_name = str(ref_obj.with_tag(None).with_digest(desc.digest))
    if check is not None:
        check("module", ref_obj.name, target, desc)
    bundle = read_bundle(target, desc, max_module_bytes=max_module_bytes)
    location = _model_location(bundle, model)

    def verify_model(model_target: Any, model_desc: Any) -> None:
        if model_desc.digest != bundle.model_digest:  # client.resolve checks too
            raise InvalidInputError(f"{location} resolved to {model_desc.digest}")
        if check is not None:
            check("model", location.name, model_target, model_desc)

    with open_model_source(
        client, str(location), verify=verify_model, **dict(lazy_options or {})
    ) as source:
        result = run_module(
            bundle.module,
            source,
            stdin=stdin,
            stdout=stdout,
            limits=limits,
            args=args,
            on_read=on_read,
        )
        stats = source.stats
    return BundleRun(bundle=bundle_name, model=str(location), result=result, model_stats=stats)


def run_local(
    module: bytes | str | os.PathLike[str],
    source: TensorSource,
    **kwargs: Any,
) -> RunResult:
    """Run a module from a file (or bytes) on ``source``: development, no bundle."""
    data = module if isinstance(module, bytes) else read_module_file(module)
    return run_module(data, source, **kwargs)
