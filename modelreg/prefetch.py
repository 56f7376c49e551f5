"""Preheating: warm a pull-through cache or a mirror before a rollout.

``modelreg prefetch REF --via MIRROR`` reads every blob of a model (with
``referrers``, its signatures, attestations and chunk index too) *through* a mirror,
so that the mirror keeps them, and keeps nothing itself. Two hundred nodes started
afterwards find every blob in the cache: the upstream sends the model once, at a time
chosen by the operator, instead of once per cold miss (Distribution's proxy mode
fetches a blob it lacks once per concurrent request: see deploy/mirrors/README.md).

How it is built, from parts that exist:

* **The walk and the engine.** :func:`modelreg.copy.walk_graph` on a
  :class:`~modelreg.transfer.Transfer` whose destination is :class:`Discard`: a
  target that holds nothing, reads each blob it is handed to its end through the
  source's verifying reader, and drops the bytes. So prefetch has the engine's one
  concurrency limit, its progress events ("start", "advance", "done" per blob) and
  its result, and every byte is verified as a pull verifies it: a mirror serving
  wrong bytes is found out here, before the rollout, not by the nodes.
* **The source.** The reference's repository read through *one* mirror, the one
  being warmed, with the registry behind it
  (:class:`~modelreg.content.registry.mirrors.MirroredTarget`). Blobs and manifests
  go to the mirror by digest; the tag is resolved once beforehand, as a pull resolves
  it; referrer lists go to the registry (they describe the origin's state, which a
  cache may not know) and what they name is fetched through the mirror.
* **Fallback stays on, and is counted.** A mirror that fails a blob (down, 404, an
  error) gives way to the registry, as in a pull; the summary gives the bytes each
  host served, so "mirror X, upstream 0" is the answer to "is it warm", and
  :attr:`MirrorWarmth.warm` says it. A mirror that serves a wrong blob is
  distrusted (:class:`~modelreg.errors.MirrorIntegrityError`): :class:`Discard`
  reads that blob again from its first byte, now from the registry; nothing was
  kept, so there is nothing to clean up.
* **Which mirrors.** Each ``via`` in turn (one walk each: a rollout's nodes may use
  any of them), named as in ``hosts.toml`` (``http://cache:5000`` or ``HOST:PORT``);
  a ``via`` the host's configuration lists is used with its configured settings
  (CA, headers, credentials under its host). Without ``via``: every configured
  mirror of the host with the ``pull`` capability.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from modelreg.content.base import CHUNK, BlobSource, PushResult, VerifyingReader
from modelreg.copy import walk_graph
from modelreg.errors import (
    InvalidInputError,
    MirrorIntegrityError,
    NotFoundError,
    UnsupportedError,
)
from modelreg.events import Event, ProgressCallback, emit
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.reference import Reference
from modelreg.transfer import Transfer

if TYPE_CHECKING:
    from modelreg.client import Client
    from modelreg.content.registry.client import RegistryClient
    from modelreg.content.registry.mirrors import Mirror

__all__ = ["Discard", "MirrorWarmth", "PrefetchResult", "prefetch"]


@dataclass(frozen=True)
class MirrorWarmth:
    """What warming one mirror did: bytes it served, bytes the registry had to serve."""

    mirror: str
    from_mirror: int
    from_upstream: int
    untrusted: bool

    @property
    def warm(self) -> bool:
        """The mirror served everything: it holds the model now (a pull-through cache)."""
        return self.from_upstream == 0 and not self.untrusted

    def to_dict(self) -> dict[str, Any]:
        return {
            "mirror": self.mirror,
            "bytesFromMirror": self.from_mirror,
            "bytesFromUpstream": self.from_upstream,
            "untrusted": self.untrusted,
            "warm": self.warm,
        }


@dataclass
class PrefetchResult:
    """What ``prefetch`` read: the model's graph, once per mirror warmed."""

    reference: str
    digest: str
    upstream: str
    blobs: int = 0
    blob_bytes: int = 0
    manifests: int = 0
    referrers: int = 0
    mirrors: list[MirrorWarmth] = field(default_factory=list)

    @property
    def warm(self) -> bool:
        return all(m.warm for m in self.mirrors)

    def served(self) -> dict[str, int]:
        """Bytes received per host over every walk (the mirrors and the upstream)."""
        out = {m.mirror: m.from_mirror for m in self.mirrors}
        out[self.upstream] = sum(m.from_upstream for m in self.mirrors)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "upstream": self.upstream,
            "blobs": self.blobs,
            "blobBytes": self.blob_bytes,
            "manifests": self.manifests,
            "referrers": self.referrers,
            "mirrors": [m.to_dict() for m in self.mirrors],
            "served": self.served(),
            "warm": self.warm,
        }


class Discard:
    """A destination that keeps nothing: each blob is read to its end (verified by
    the source's reader) and dropped. A blob a mirror served wrong is read again from
    its first byte, at most ``attempts`` times in all (each failure distrusts a mirror,
    so the next read comes from the next source)."""

    def __init__(self, attempts: int) -> None:
        self._attempts = max(1, attempts)

    @property
    def name(self) -> str:
        return "nowhere (prefetch)"

    def fetch(self, desc: Descriptor) -> VerifyingReader:
        raise UnsupportedError("prefetch keeps nothing to read back")

    def fetch_range(self, desc: Descriptor, offset: int, length: int) -> bytes:
        raise UnsupportedError("prefetch keeps nothing to read back")

    def exists(self, desc: Descriptor) -> bool:
        return False  # every blob is read: reading it is what warms the mirror

    def resolve(self, reference: str) -> Descriptor:
        raise NotFoundError(f"prefetch keeps nothing: no {reference!r}")

    def referrers(self, desc: Descriptor, artifact_type: str | None = None) -> list[Descriptor]:
        return []

    def tags(self) -> Iterator[str]:
        return iter(())

    def push(self, desc: Descriptor, source: BlobSource) -> PushResult:
        for attempt in itertools.count(1):
            try:
                return PushResult(sent=_drain(source(0)))
            except MirrorIntegrityError:
                if attempt >= self._attempts:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def push_manifest(self, desc: Descriptor, data: bytes, tag: str | None = None) -> None:
        return None

    def tag(self, desc: Descriptor, tag: str) -> None:
        return None


def _drain(stream: BinaryIO) -> int:
    """Read to the end (where the verifying reader checks the digest), keeping nothing."""
    total = 0
    with stream:
        while block := stream.read(CHUNK):
            total += len(block)
    return total


def prefetch(
    client: Client,
    ref: Reference | str,
    *,
    via: Sequence[str] = (),
    referrers: bool = False,
    progress: ProgressCallback | None = None,
) -> PrefetchResult:
    """Warm ``via`` (default: the configured mirrors) with the model ``ref`` names."""
    from modelreg.content.registry.mirrors import MirroredTarget

    parsed = Reference.parse(ref) if isinstance(ref, str) else ref
    if parsed.kind != "registry" or parsed.registry is None:
        raise InvalidInputError(
            f"{str(parsed)!r} is not in a registry: there is no mirror to warm",
            hint="give a reference such as registry.example.com/team/model:tag",
        )
    host = parsed.registry
    parsed, _, desc = client.resolve(parsed)
    origin = client.registry(host)
    warming, extra = _mirrors(client, origin, host, via)
    result = PrefetchResult(
        reference=str(parsed.with_digest(desc.digest)),
        digest=str(desc.digest),
        upstream=origin.api_host,
    )
    try:
        for mirror in warming:
            emit(progress, Event("message", f"warming {mirror.host} with {result.reference}"))
            source = MirroredTarget(origin, parsed.repository, [mirror])
            mirror_before = mirror.client.stats.bytes_received
            origin_before = origin.stats.bytes_received
            with Transfer(
                Discard(attempts=2),
                src=source,
                concurrency=client.options.concurrency,
                progress=progress,
            ) as engine:
                copied = walk_graph(engine, source, desc, recursive=referrers)
            result.blobs = copied.blobs_sent
            result.blob_bytes = copied.bytes_sent
            result.manifests = len(copied.manifests)
            result.referrers = len(copied.referrers)
            result.mirrors.append(
                MirrorWarmth(
                    mirror=mirror.host,
                    from_mirror=mirror.client.stats.bytes_received - mirror_before,
                    from_upstream=origin.stats.bytes_received - origin_before,
                    untrusted=mirror.distrusted,
                )
            )
    finally:
        for mirror in extra:
            mirror.client.close()
    return result


def _mirrors(
    client: Client, origin: RegistryClient, host: str, via: Sequence[str]
) -> tuple[list[Mirror], list[Mirror]]:
    """The mirrors to warm, in order, and those of them made for ``via`` (the caller
    closes their clients)."""
    from modelreg.content.registry import CredentialStore
    from modelreg.content.registry.hosts import parse_endpoint
    from modelreg.content.registry.mirrors import extra_mirror

    configured = {m.host: m for m in origin.mirrors if m.endpoint.can("pull")}
    if not via:
        if not configured:
            raise InvalidInputError(
                f"no mirror of {host} to warm: its configuration lists none that may pull",
                hint="name one with --via HOST[:PORT] or http(s)://HOST[:PORT], or list it "
                "in hosts.toml (see `modelreg hosts`)",
            )
        return list(configured.values()), []
    warming: list[Mirror] = []
    extra: list[Mirror] = []
    options = client.options
    for text in via:
        endpoint = parse_endpoint(text, source="--via", capabilities=frozenset({"pull"}))
        if endpoint.host == origin.api_host:
            raise InvalidInputError(
                f"--via {text} is the registry itself, not a mirror of it",
                hint="name the pull-through cache or mirror to warm",
            )
        known = configured.get(endpoint.host)
        if known is not None:
            warming.append(known)
            continue
        made = extra_mirror(
            host,
            endpoint,
            credentials=CredentialStore(options.docker_config),
            on_warning=options.on_warning,
            timeout=options.timeout,
            document_deadline=options.document_deadline,
            min_throughput=options.min_throughput,
            throughput_window=options.throughput_window,
        )
        warming.append(made)
        extra.append(made)
    return warming, extra
