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

Anyone who can push to the repository can push referrers, so a verification
must not cost one round trip per referrer pushed (issue 13: 200 signatures
took 2n+3 sequential requests). Reading is therefore shaped in three steps:

1. *Filter before fetching.* The listing asks for ``artifactType`` = the v0.3
   bundle type (what cosign v3 and modelreg write) and is filtered again here,
   because registries and the tag-schema fallback may ignore the parameter.
   Referrers of any other type (notation, SBOMs, junk) are never fetched.
2. *Order by what the listing says* (:func:`order_candidates`). Listing
   annotations are unauthenticated and only decide the order, never trust:
   referrers whose ``dev.modelreg.bundle.keyHint`` names a key the caller
   trusts come first, then those without a hint (cosign's, keyless), then
   those hinted for other keys; within a group the predicate types the caller
   needs first, then newest ``created`` first, then by digest, so the order
   depends only on the listed set, never on the registry's order or on thread
   timing.
3. *Fetch ahead, in order* (:func:`fetch_bundles`): manifests and bundle blobs
   are fetched by at most :data:`FETCH_CONCURRENCY` threads sharing the
   target's (thread-safe) client and its connection pool, and handed to the
   caller strictly in candidate order, so the caller can stop as soon as its
   decision is made; fetches not yet started are cancelled, those in flight
   are waited for (at most the window).

Each bundle referrer written here carries ``dev.modelreg.bundle.keyHint``
(the bundle's ``verificationMaterial.publicKey.hint``) so that a verifier with
a key can find its signature among many without fetching them all. A hint
costs an attacker nothing to copy: against a deliberate flood the caller's cap
(``modelreg.verify``) bounds the work and the decision fails closed.

Legacy cosign (before bundles): tags ``sha256-<hex>.sig`` (simple-signing
payloads, signature in the ``dev.cosignproject.cosign/signature`` annotation)
and ``sha256-<hex>.att`` (one DSSE envelope per layer). Read-only.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Collection, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, Literal

from modelreg.attest.bundle import BUNDLE_MEDIA_TYPES, BUNDLE_V03, MAX_BUNDLE_BYTES
from modelreg.attest.dsse import b64decode
from modelreg.content.base import ReadOnlyTarget, Target, bytes_source, fetch_bytes
from modelreg.copy import fetch_node
from modelreg.errors import FormatError, ModelRegError, NotFoundError, SizeLimitError
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import Manifest, empty_config
from modelreg.settings import Settings

__all__ = [
    "ANN_BUNDLE_CONTENT",
    "ANN_KEY_HINT",
    "ANN_PREDICATE_TYPE",
    "FETCH_CONCURRENCY",
    "MAX_REFERRERS",
    "LegacyLayer",
    "StoredBundle",
    "attach_bundle",
    "bundle_referrer",
    "bundle_referrers",
    "created_now",
    "fetch_bundles",
    "iter_bundles",
    "legacy_layers",
    "legacy_tag",
    "order_candidates",
]

ANN_BUNDLE_CONTENT: Final = "dev.sigstore.bundle.content"
ANN_PREDICATE_TYPE: Final = "dev.sigstore.bundle.predicateType"
ANN_KEY_HINT: Final = "dev.modelreg.bundle.keyHint"
"""The bundle's public-key hint, copied to the referrer: an ordering hint for readers."""
MAX_REFERRERS: Final = 1000
"""Referrers listed per subject; more is refused (a registry-controlled count)."""
FETCH_CONCURRENCY: Final = 8
"""Referrer manifests + bundles fetched at once by :func:`fetch_bundles`."""

COSIGN_SIMPLESIGNING: Final = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_DSSE_LAYER: Final = "application/vnd.dsse.envelope.v1+json"
ANN_COSIGN_SIGNATURE: Final = "dev.cosignproject.cosign/signature"
ANN_COSIGN_CERTIFICATE: Final = "dev.sigstore.cosign/certificate"
ANN_COSIGN_PREDICATE: Final = "predicateType"


def created_now() -> str:
    """RFC 3339 UTC time for ``org.opencontainers.image.created``.

    Honours ``SOURCE_DATE_EPOCH`` for reproducible output.
    """
    return Settings.from_env().now().strftime("%Y-%m-%dT%H:%M:%SZ")


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
    annotations = {
        ANN_BUNDLE_CONTENT: content,
        ANN_PREDICATE_TYPE: predicate_type,
        mt.ANN_CREATED: created or created_now(),
    }
    hint = _bundle_key_hint(bundle)
    if hint is not None:
        annotations[ANN_KEY_HINT] = hint
    manifest = Manifest(
        config=empty_config(),
        layers=(layer,),
        artifact_type=media_type,
        subject=Descriptor(subject.media_type, subject.digest, subject.size),
        annotations=annotations,
    )
    return manifest, layer


def _bundle_key_hint(bundle: bytes) -> str | None:
    """``verificationMaterial.publicKey.hint`` of a bundle, if it has a plain one."""
    try:
        doc = json.loads(bundle)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    material = doc.get("verificationMaterial") if isinstance(doc, dict) else None
    public_key = material.get("publicKey") if isinstance(material, dict) else None
    hint = public_key.get("hint") if isinstance(public_key, dict) else None
    # Bounded and printable: it is copied into a registry index that others read.
    if isinstance(hint, str) and 0 < len(hint) <= 256 and hint.isprintable():
        return hint
    return None


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
    return desc.media_type in mt.MANIFEST_TYPES and desc.artifact_type in BUNDLE_MEDIA_TYPES


def bundle_referrers(target: ReadOnlyTarget, subject: Descriptor) -> list[Descriptor]:
    """Referrer descriptors of ``subject`` whose artifactType is a sigstore bundle.

    Nothing is fetched but the listing; the order is the default of
    :func:`order_candidates` (newest first, then by digest).
    """
    # Ask the registry to filter (a flood of other types then never even travels),
    # and filter again: registries and the tag-schema fallback may ignore the ask.
    found = target.referrers(subject, BUNDLE_V03)
    if len(found) > MAX_REFERRERS:
        raise SizeLimitError(
            f"{subject.digest} has {len(found)} referrers, over the limit of {MAX_REFERRERS}",
            hint="the repository holds an unreasonable number of signatures for this digest",
        )
    return order_candidates([d for d in found if _is_bundle_referrer(d)])


def order_candidates(
    found: Sequence[Descriptor],
    *,
    key_hints: Collection[str] | None = None,
    predicate_types: Collection[str] | None = None,
) -> list[Descriptor]:
    """``found`` in the order a verifier should examine them (see the module notes).

    ``key_hints`` are the hints of the keys the verifier trusts (None: it has no
    key, so key-hinted bundles go last); ``predicate_types`` the statements it
    still needs (None: any). Ties fall to newest ``created``, then the digest.
    """

    def key_rank(desc: Descriptor) -> int:
        hint = desc.annotations.get(ANN_KEY_HINT)
        if hint is None:
            return 1
        return 0 if key_hints is not None and hint in key_hints else 2

    def type_rank(desc: Descriptor) -> int:
        if predicate_types is None:
            return 0
        return 0 if desc.annotations.get(ANN_PREDICATE_TYPE) in predicate_types else 1

    out = sorted(found, key=lambda d: str(d.digest))
    out.sort(key=lambda d: d.annotations.get(mt.ANN_CREATED, ""), reverse=True)  # stable
    out.sort(key=lambda d: (key_rank(d), type_rank(d)))
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


FetchedBundle = StoredBundle | tuple[Descriptor, ModelRegError]
"""A loaded bundle, or a referrer that could not be read and why."""


def _load(target: ReadOnlyTarget, subject: Descriptor, referrer: Descriptor) -> FetchedBundle:
    try:
        return load_bundle(target, subject, referrer)
    except (FormatError, SizeLimitError, NotFoundError) as exc:
        return referrer, exc


def fetch_bundles(
    target: ReadOnlyTarget,
    subject: Descriptor,
    referrers: Sequence[Descriptor],
    *,
    concurrency: int = FETCH_CONCURRENCY,
) -> Generator[FetchedBundle, None, None]:
    """Load ``referrers`` in parallel, yielding them in the given order.

    At most ``concurrency`` referrers are loaded or held at once. Closing the iterator
    early (``contextlib.closing``) cancels what has not started and waits for
    what has, so no request outlives the caller's decision. Errors other than a
    bad referrer (registry unreachable, tampered bytes) propagate: the caller
    could not verify and fails closed.
    """
    if concurrency <= 1 or len(referrers) <= 1:
        for referrer in referrers:
            yield _load(target, subject, referrer)
        return
    waiting = iter(referrers)
    pending: deque[Future[FetchedBundle]] = deque()
    pool = ThreadPoolExecutor(
        max_workers=min(concurrency, len(referrers)), thread_name_prefix="referrers"
    )
    try:
        for referrer in waiting:
            pending.append(pool.submit(_load, target, subject, referrer))
            if len(pending) >= concurrency:
                break
        while pending:
            yield pending.popleft().result()
            # only now: a consumer that stopped at the last item leaves nothing to cancel
            following = next(waiting, None)
            if following is not None:
                pending.append(pool.submit(_load, target, subject, following))
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)


def iter_bundles(target: ReadOnlyTarget, subject: Descriptor) -> Iterator[FetchedBundle]:
    """Every bundle referrer of ``subject``, newest first; a referrer that cannot
    be read is yielded as ``(descriptor, error)`` so callers can report it and go on."""
    yield from fetch_bundles(target, subject, bundle_referrers(target, subject))


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
