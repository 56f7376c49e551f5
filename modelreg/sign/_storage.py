"""Bundles as OCI referrers, in cosign v3's layout; legacy cosign tags on read.

Each bundle is its own manifest::

    {"schemaVersion": 2,
     "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
     "config": <the empty descriptor>,
     "layers": [{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", ...}],
     "subject": <the signed manifest's descriptor>,
     "annotations": {"dev.sigstore.bundle.content": "dsse-envelope",
                     "dev.sigstore.bundle.predicateType": "<predicate type>",
                     "org.opencontainers.image.created": "<RFC 3339>"}}

pushed with ``target.push`` (config, layer) and ``target.push_manifest``
(untagged); the target maintains the referrers index (the registry's referrers
API or the ``sha256-<hex>`` tag-schema fallback). Any number of bundles coexist.

Reading checks what a registry could lie about: the referrer really names the
subject, has one layer of a bundle media type, and every byte matches its
digest; counts and sizes are capped before anything is read whole.

Legacy cosign (before bundles): tags ``sha256-<hex>.sig`` (simple-signing
payloads, signature in the ``dev.cosignproject.cosign/signature`` annotation)
and ``sha256-<hex>.att`` (one DSSE envelope per layer). Read-only.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal

from modelreg.content.base import ReadOnlyTarget, Target, bytes_source, fetch_bytes
from modelreg.copy import fetch_node
from modelreg.errors import FormatError, ModelRegError, NotFoundError, SizeLimitError
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import Manifest, empty_config
from modelreg.sign._bundle import BUNDLE_MEDIA_TYPES, BUNDLE_V03, MAX_BUNDLE_BYTES

__all__ = [
    "ANN_BUNDLE_CONTENT",
    "ANN_PREDICATE_TYPE",
    "MAX_REFERRERS",
    "LegacyLayer",
    "StoredBundle",
    "attach_bundle",
    "bundle_referrer",
    "created_now",
    "iter_bundles",
    "legacy_layers",
    "legacy_tag",
]

ANN_BUNDLE_CONTENT: Final = "dev.sigstore.bundle.content"
ANN_PREDICATE_TYPE: Final = "dev.sigstore.bundle.predicateType"
MAX_REFERRERS: Final = 1000
"""Referrers examined per subject; more is refused (a registry-controlled count)."""

COSIGN_SIMPLESIGNING: Final = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_DSSE_LAYER: Final = "application/vnd.dsse.envelope.v1+json"
ANN_COSIGN_SIGNATURE: Final = "dev.cosignproject.cosign/signature"
ANN_COSIGN_CERTIFICATE: Final = "dev.sigstore.cosign/certificate"
ANN_COSIGN_PREDICATE: Final = "predicateType"


def created_now() -> str:
    """RFC 3339 UTC time for ``org.opencontainers.image.created``.

    Honours ``SOURCE_DATE_EPOCH`` for reproducible output.
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        moment = dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC)
    else:
        moment = dt.datetime.now(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def bundle_referrer(
    subject: Descriptor,
    bundle: bytes,
    *,
    predicate_type: str,
    content: str = "dsse-envelope",
    created: str | None = None,
    media_type: str = BUNDLE_V03,
) -> tuple[Manifest, Descriptor]:
    """The referrer manifest for a bundle, and the bundle's layer descriptor."""
    layer = Descriptor.for_bytes(media_type, bundle)
    manifest = Manifest(
        config=empty_config(),
        layers=(layer,),
        artifact_type=media_type,
        subject=Descriptor(subject.media_type, subject.digest, subject.size),
        annotations={
            ANN_BUNDLE_CONTENT: content,
            ANN_PREDICATE_TYPE: predicate_type,
            mt.ANN_CREATED: created or created_now(),
        },
    )
    return manifest, layer


def attach_bundle(
    target: Target,
    subject: Descriptor,
    bundle: bytes,
    *,
    predicate_type: str,
    content: str = "dsse-envelope",
    created: str | None = None,
) -> Descriptor:
    """Store ``bundle`` as a referrer of ``subject``; returns the referrer's descriptor."""
    manifest, layer = bundle_referrer(
        subject, bundle, predicate_type=predicate_type, content=content, created=created
    )
    target.push(empty_config(), bytes_source(mt.EMPTY_JSON))
    target.push(layer, bytes_source(bundle))
    desc = manifest.descriptor()
    target.push_manifest(desc, manifest.raw)
    return Descriptor(
        desc.media_type,
        desc.digest,
        desc.size,
        artifact_type=manifest.artifact_type,
        annotations=dict(manifest.annotations),
    )


# ------------------------------------------------------------------ reading


@dataclass(frozen=True, slots=True)
class StoredBundle:
    """A bundle found as a referrer: where it was, and its verified bytes."""

    referrer: Descriptor
    manifest: Manifest
    layer: Descriptor
    data: bytes

    @property
    def predicate_type_hint(self) -> str | None:
        """The annotation: unauthenticated, for listing only."""
        return self.manifest.annotations.get(ANN_PREDICATE_TYPE)

    @property
    def created(self) -> str | None:
        return self.manifest.annotations.get(mt.ANN_CREATED)


def _is_bundle_referrer(desc: Descriptor) -> bool:
    if desc.media_type not in mt.MANIFEST_TYPES:
        return False
    return desc.artifact_type is None or desc.artifact_type in BUNDLE_MEDIA_TYPES


def bundle_referrers(target: ReadOnlyTarget, subject: Descriptor) -> list[Descriptor]:
    """Referrer descriptors of ``subject`` that may hold bundles (capped)."""
    found = target.referrers(subject)
    if len(found) > MAX_REFERRERS:
        raise SizeLimitError(
            f"{subject.digest} has {len(found)} referrers, over the limit of {MAX_REFERRERS}",
            hint="the repository holds an unreasonable number of signatures for this digest",
        )
    out = [d for d in found if _is_bundle_referrer(d)]
    # newest first when the registry passed the annotation through; stable otherwise
    out.sort(key=lambda d: d.annotations.get(mt.ANN_CREATED, ""), reverse=True)
    return out


def load_bundle(target: ReadOnlyTarget, subject: Descriptor, referrer: Descriptor) -> StoredBundle:
    """Fetch one referrer and its bundle, checking what the registry could lie about."""
    node = fetch_node(target, referrer)
    if not isinstance(node, Manifest):
        raise FormatError(f"referrer {referrer.digest} is an index, not a bundle manifest")
    if node.subject is None or node.subject.digest != subject.digest:
        raise FormatError(
            f"referrer {referrer.digest} does not name {subject.digest} as its subject",
            hint="the registry listed a referrer of another manifest; it was ignored",
        )
    kind = node.artifact_type or node.config.media_type
    if kind not in BUNDLE_MEDIA_TYPES:
        raise FormatError(f"referrer {referrer.digest} is a {kind!r}, not a sigstore bundle")
    if len(node.layers) != 1:
        raise FormatError(
            f"referrer {referrer.digest} has {len(node.layers)} layers; a bundle has one"
        )
    layer = node.layers[0]
    if layer.media_type not in BUNDLE_MEDIA_TYPES:
        raise FormatError(f"referrer {referrer.digest}: layer media type {layer.media_type!r}")
    data = fetch_bytes(target, layer, limit=MAX_BUNDLE_BYTES, what=f"bundle {layer.digest}")
    return StoredBundle(referrer=referrer, manifest=node, layer=layer, data=data)


def iter_bundles(
    target: ReadOnlyTarget, subject: Descriptor
) -> Iterator[StoredBundle | tuple[Descriptor, ModelRegError]]:
    """Every bundle referrer of ``subject``; a referrer that cannot be read is
    yielded as ``(descriptor, error)`` so callers can report it and go on."""
    for referrer in bundle_referrers(target, subject):
        try:
            yield load_bundle(target, subject, referrer)
        except (FormatError, SizeLimitError, NotFoundError) as exc:
            yield referrer, exc


# ------------------------------------------------------------------- legacy


def legacy_tag(subject: Descriptor, suffix: Literal["sig", "att"]) -> str:
    return f"{subject.digest.algorithm}-{subject.digest.hex}.{suffix}"


@dataclass(frozen=True, slots=True)
class LegacyLayer:
    """One layer of a legacy ``.sig`` or ``.att`` manifest."""

    kind: Literal["sig", "att"]
    layer: Descriptor
    data: bytes
    signature: bytes | None
    """The ``.sig`` signature (base64-decoded); None for ``.att``."""
    has_certificate: bool


def legacy_layers(target: ReadOnlyTarget, subject: Descriptor) -> list[LegacyLayer]:
    """Layers of the legacy cosign ``.sig``/``.att`` manifests of ``subject``, if any."""
    from modelreg.sign._dsse import b64decode

    out: list[LegacyLayer] = []
    for suffix in ("sig", "att"):
        try:
            desc = target.resolve(legacy_tag(subject, suffix))
        except NotFoundError:
            continue
        node = fetch_node(target, desc)
        if not isinstance(node, Manifest):
            continue
        if len(node.layers) > 64:
            raise SizeLimitError(f"legacy .{suffix} manifest lists {len(node.layers)} layers")
        for layer in node.layers:
            if layer.media_type not in (COSIGN_SIMPLESIGNING, COSIGN_DSSE_LAYER):
                continue
            data = fetch_bytes(target, layer, limit=MAX_BUNDLE_BYTES, what=f"legacy {suffix}")
            sig: bytes | None = None
            if suffix == "sig":
                raw = layer.annotations.get(ANN_COSIGN_SIGNATURE)
                if raw is None:
                    continue
                try:
                    sig = b64decode(raw, "legacy cosign signature")
                except FormatError:
                    continue
            out.append(
                LegacyLayer(
                    kind=suffix,
                    layer=layer,
                    data=data,
                    signature=sig,
                    has_certificate=ANN_COSIGN_CERTIFICATE in layer.annotations,
                )
            )
    return out
