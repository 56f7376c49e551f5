"""The WebAssembly bundle: a CNCF TAG Runtime Wasm OCI artifact pinned to a model.

Layout (see ``docs/wasm.md``)::

    manifest  application/vnd.oci.image.manifest.v1+json   (no artifactType: the
              config media type is the artifact type, as the Wasm layout asks)
      config  application/vnd.wasm.config.v0+json
              {"created": RFC 3339, "architecture": "wasm", "os": "wasip1",
               "layerDigests": ["sha256:<the module>"]}
              ``component`` is left out: it describes a component's WIT world and is
              required only for ``os: wasip2``; modelreg bundles core modules.
      layers  [application/wasm]  the module (title annotation = its file name)
      annotations
              dev.modelreg.wasm.model      REGISTRY/REPO@sha256:...  the model, by digest
              dev.modelreg.wasm.abi        modelreg/1  the host ABI the module imports
              org.opencontainers.image.created
      subject (optional) the model manifest, when the bundle lives in the model's
              repository and the caller asked for it

Why an annotation, not an index entry or a layer: the model is a separate
artifact (its own manifest, signatures, chunk index) and must stay one. An image
index holding both would make every ``pull`` of the bundle pull the weights; a
layer would copy them. The annotation is inside the manifest, so the manifest
digest (and every signature of the bundle) covers the pin; the digest in it is
what the runner enforces, the location is only where to look first.

``subject`` is optional because referrers live in one repository: it only
works when the bundle is pushed next to its model. It makes the bundle show up
among the model's referrers (and lets registries that delete referrers with
their subject clean it up), but it is not a garbage-collection root for the
model: neither is the annotation. Keep the model tagged in its repository.

Parsing is strict: config and module sizes are capped before anything is read,
every byte is verified against its descriptor, the config must agree with the
manifest (``layerDigests``), and the module must start with the core-module
preamble.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from modelreg._json import loads_strict
from modelreg.content.base import ReadOnlyTarget, fetch_bytes
from modelreg.copy import fetch_manifest
from modelreg.errors import FormatError, InvalidInputError, InvalidReferenceError
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import Manifest, canonical_json
from modelreg.oci.reference import Reference
from modelreg.settings import Settings

__all__ = [
    "ABI_NAME",
    "ANN_ABI",
    "ANN_MODEL",
    "MAX_CONFIG_BYTES",
    "MAX_MODULE_BYTES",
    "WASM_CONFIG_MEDIA_TYPE",
    "WASM_LAYER_MEDIA_TYPE",
    "BuiltBundle",
    "Bundle",
    "WasmConfig",
    "build_bundle",
    "module_kind",
    "read_bundle",
]

WASM_CONFIG_MEDIA_TYPE: Final = "application/vnd.wasm.config.v0+json"
WASM_LAYER_MEDIA_TYPE: Final = "application/wasm"
WASM_ARCHITECTURE: Final = "wasm"
MODULE_OS: Final = "wasip1"
COMPONENT_OS: Final = "wasip2"

ANN_MODEL: Final = "dev.modelreg.wasm.model"
"""``REGISTRY/REPO@sha256:...``: the model the module reads, pinned by digest."""
ANN_ABI: Final = "dev.modelreg.wasm.abi"
"""The host ABI the module was built for (``modelreg/1``)."""
ABI_NAME: Final = "modelreg/1"

MAX_CONFIG_BYTES: Final = 64 * 1024
MAX_MODULE_BYTES: Final = 256 * 1024 * 1024
"""Default cap on a module (the largest layer ``run`` will read into memory)."""

_CORE_PREAMBLE: Final = b"\x00asm\x01\x00\x00\x00"
_COMPONENT_PREFIX: Final = b"\x00asm"


def module_kind(data: bytes) -> str:
    """``module`` (core, version 1) or ``component``; FormatError for anything else."""
    if data[:8] == _CORE_PREAMBLE:
        return "module"
    if data[:4] == _COMPONENT_PREFIX and len(data) >= 8 and data[6:8] == b"\x01\x00":
        return "component"
    raise FormatError(
        "not a WebAssembly binary (no \\0asm preamble)",
        hint="give a compiled .wasm file (WAT text must be compiled first, e.g. wat2wasm)",
    )


def _rfc3339(created: _dt.datetime | str | None) -> str:
    if isinstance(created, str):
        try:
            _dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidInputError(f"created time {created!r} is not RFC 3339") from exc
        return created
    if created is None:
        created = Settings.from_env().now()
    if created.tzinfo is None:
        created = created.replace(tzinfo=_dt.UTC)
    return created.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class WasmConfig:
    """The ``application/vnd.wasm.config.v0+json`` document."""

    created: str
    layer_digests: tuple[str, ...]
    architecture: str = WASM_ARCHITECTURE
    os: str = MODULE_OS
    author: str | None = None
    component: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"created": self.created}
        if self.author:
            out["author"] = self.author
        out["architecture"] = self.architecture
        out["os"] = self.os
        out["layerDigests"] = list(self.layer_digests)
        if self.component is not None:
            out["component"] = dict(self.component)
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def parse(cls, data: bytes) -> WasmConfig:
        where = "wasm config"
        if len(data) > MAX_CONFIG_BYTES:
            raise FormatError(f"{where} is {len(data)} bytes, over {MAX_CONFIG_BYTES}")
        obj = loads_strict(data, what=where)
        if not isinstance(obj, dict):
            raise FormatError(f"{where} must be a JSON object")
        created = obj.get("created")
        arch = obj.get("architecture")
        os_name = obj.get("os")
        digests = obj.get("layerDigests")
        author = obj.get("author")
        component = obj.get("component")
        if not isinstance(created, str):
            raise FormatError(f"{where}: 'created' must be an RFC 3339 string")
        if arch != WASM_ARCHITECTURE:
            raise FormatError(f"{where}: architecture is {arch!r}, expected 'wasm'")
        if os_name not in (MODULE_OS, COMPONENT_OS):
            raise FormatError(f"{where}: os is {os_name!r}, expected 'wasip1' or 'wasip2'")
        if not isinstance(digests, list) or not all(isinstance(d, str) for d in digests):
            raise FormatError(f"{where}: 'layerDigests' must be a list of digests")
        for d in digests:
            try:
                Digest.parse(d)
            except InvalidInputError as exc:
                raise FormatError(f"{where}: layerDigests: {exc.message}") from None
        if author is not None and not isinstance(author, str):
            raise FormatError(f"{where}: 'author' must be a string")
        if component is not None and not isinstance(component, dict):
            raise FormatError(f"{where}: 'component' must be an object")
        return cls(
            created=created,
            layer_digests=tuple(digests),
            architecture=arch,
            os=os_name,
            author=author,
            component=component,
        )


@dataclass(frozen=True)
class BuiltBundle:
    """A bundle ready to push: the manifest and the two blobs it names."""

    manifest: Manifest
    config: bytes
    module: bytes = field(repr=False)

    @property
    def descriptor(self) -> Descriptor:
        return self.manifest.descriptor()

    def as_target(self) -> ReadOnlyTarget:
        from modelreg.content.base import bytes_source
        from modelreg.content.memory import MemoryTarget

        staged = MemoryTarget()
        staged.push(self.manifest.config, bytes_source(self.config))
        staged.push(self.manifest.layers[0], bytes_source(self.module))
        staged.push_manifest(self.descriptor, self.manifest.raw)
        return staged


def model_pin(model: Reference, digest: Digest) -> str:
    """The annotation value: the model's name with the digest, never a tag."""
    return str(model.with_tag(None).with_digest(digest))


def parse_model_pin(value: str) -> Reference:
    """Parse ``dev.modelreg.wasm.model``; it must name a digest."""
    try:
        ref = Reference.parse(value)
    except InvalidReferenceError as exc:
        raise FormatError(f"annotation {ANN_MODEL}: {exc.message}") from None
    if ref.digest is None:
        raise FormatError(
            f"annotation {ANN_MODEL} is {value!r}, which names no digest",
            hint="the bundle must pin its model by digest; pack it again with modelreg",
        )
    return ref


def build_bundle(
    module: bytes,
    *,
    model: Reference,
    model_descriptor: Descriptor,
    title: str = "module.wasm",
    created: _dt.datetime | str | None = None,
    author: str | None = None,
    annotations: Mapping[str, str] | None = None,
    subject: bool = False,
) -> BuiltBundle:
    """Build the manifest and config for ``module`` pinned to ``model_descriptor``.

    ``created`` defaults to ``SOURCE_DATE_EPOCH`` when set (reproducible builds),
    else now. ``subject``: also set the manifest's ``subject`` to the model
    (only meaningful when the bundle is pushed to the model's repository).
    """
    kind = module_kind(module)
    if kind != "module":
        raise InvalidInputError(
            "this is a WebAssembly component; modelreg bundles core modules (wasip1)",
            hint="build the module for wasm32-wasip1 (a core module) and import the "
            "modelreg host functions",
        )
    if len(module) > MAX_MODULE_BYTES:
        raise InvalidInputError(f"module is {len(module)} bytes, over {MAX_MODULE_BYTES}")
    layer = Descriptor.for_bytes(
        WASM_LAYER_MEDIA_TYPE, module, annotations={mt.ANN_TITLE: os.path.basename(title)}
    )
    stamp = _rfc3339(created)
    config = WasmConfig(created=stamp, layer_digests=(str(layer.digest),), author=author)
    config_bytes = config.to_bytes()
    config_desc = Descriptor.for_bytes(WASM_CONFIG_MEDIA_TYPE, config_bytes)
    manifest_annotations = dict(annotations or {})
    manifest_annotations.update(
        {
            ANN_MODEL: model_pin(model, model_descriptor.digest),
            ANN_ABI: ABI_NAME,
            mt.ANN_CREATED: stamp,
        }
    )
    subject_desc = (
        Descriptor(model_descriptor.media_type, model_descriptor.digest, model_descriptor.size)
        if subject
        else None
    )
    manifest = Manifest(
        config=config_desc,
        layers=(layer,),
        subject=subject_desc,
        annotations=manifest_annotations,
    )
    return BuiltBundle(manifest=manifest, config=config_bytes, module=module)


@dataclass(frozen=True)
class Bundle:
    """A bundle read back from a target: every byte verified."""

    descriptor: Descriptor
    manifest: Manifest
    config: WasmConfig
    module: bytes = field(repr=False)
    model: Reference
    """The pinned model (``name@digest``)."""

    @property
    def model_digest(self) -> Digest:
        assert self.model.digest is not None
        return self.model.digest

    @property
    def abi(self) -> str | None:
        return self.manifest.annotations.get(ANN_ABI)


def read_bundle(
    target: ReadOnlyTarget, desc: Descriptor, *, max_module_bytes: int = MAX_MODULE_BYTES
) -> Bundle:
    """Fetch and check a bundle's manifest, config and module (all verified)."""
    node = fetch_manifest(
        target, desc, expected="a WebAssembly bundle", hint="run one of its manifests by digest"
    )
    if node.config.media_type != WASM_CONFIG_MEDIA_TYPE:
        raise FormatError(
            f"{desc.digest} is not a WebAssembly bundle: its config is "
            f"{node.config.media_type!r}, not {WASM_CONFIG_MEDIA_TYPE!r}",
            hint="make one with `modelreg wasm pack`",
        )
    if len(node.layers) != 1 or node.layers[0].media_type != WASM_LAYER_MEDIA_TYPE:
        raise FormatError(
            f"bundle {desc.digest} must have exactly one {WASM_LAYER_MEDIA_TYPE} layer, "
            f"has {[layer.media_type for layer in node.layers]}",
        )
    config = WasmConfig.parse(
        fetch_bytes(target, node.config, limit=MAX_CONFIG_BYTES, what="wasm config")
    )
    layer = node.layers[0]
    if config.layer_digests != (str(layer.digest),):
        raise FormatError(
            f"bundle {desc.digest}: config layerDigests {list(config.layer_digests)} do not "
            f"match the manifest's layer {layer.digest}",
        )
    if config.os != MODULE_OS or config.component is not None:
        raise FormatError(
            f"bundle {desc.digest} holds a WebAssembly component (os {config.os!r}); "
            "modelreg runs core modules (wasip1)",
        )
    pin = node.annotations.get(ANN_MODEL)
    if pin is None:
        raise FormatError(
            f"bundle {desc.digest} names no model (annotation {ANN_MODEL})",
            hint="pack it with `modelreg wasm pack MODULE --model REF`",
        )
    model = parse_model_pin(pin)
    if node.subject is not None and node.subject.digest != model.digest:
        raise FormatError(
            f"bundle {desc.digest}: its subject {node.subject.digest} and its model pin "
            f"{model.digest} disagree",
        )
    abi = node.annotations.get(ANN_ABI)
    if abi is not None and abi != ABI_NAME:
        raise FormatError(
            f"bundle {desc.digest} was built for host ABI {abi!r}; this modelreg provides "
            f"{ABI_NAME!r}",
            hint="upgrade modelreg",
        )
    module = fetch_bytes(target, layer, limit=max_module_bytes, what=f"module {layer.digest}")
    if module_kind(module) != "module":
        raise FormatError(f"bundle {desc.digest}: the layer is a component, not a core module")
    return Bundle(descriptor=desc, manifest=node, config=config, module=module, model=model)
