"""Reading a repository through its mirrors, with the origin's safety.

A cluster puts pull-through caches and node-local mirrors (Distribution in proxy
mode, Harbor proxy projects, zot, Spegel, Dragonfly) between its nodes and the
registry; the nodes' ``hosts.toml`` lists them (:mod:`.hosts`). :func:`connect` builds
the :class:`~modelreg.content.registry.client.RegistryClient` of a host from that
configuration, and a client with mirrors hands out :class:`MirroredTarget`
repositories. The rules, as containerd applies them and as SECURITY.md needs them:

* **Order.** Mirrors are tried in the order the file lists them, then the server.
  Only reads go to mirrors, and only those the mirror's ``capabilities`` allow:
  ``pull`` for content by digest (blobs, manifests, ranges of blobs), ``resolve`` for
  tags. Pushes, existence checks, tag lists and referrers go to the server: they
  describe the origin's state, which a cache may not know.
* **Fallback.** Any failure at a mirror moves on to the next source: connection
  errors and timeouts, a 404 (a mirror that is not a pull-through cache may simply
  lack the blob), any other error status, and content that fails verification. A
  mirror that could not be reached is skipped for :data:`DOWN_FOR` seconds, so a
  pull of a hundred blobs does not wait for a dead mirror a hundred times; one that
  served wrong content is never used again by this client. Each skip is reported
  through the client's ``on_warning`` (a 404 only to the debug log: for a mirror
  that is not a cache, a miss is normal).
* **Verification.** A mirror is untrusted. What it serves is read by the same
  :class:`~modelreg.content.registry.target.RegistryTarget` code as the server's:
  manifests hashed against the digest asked for, blobs through the verifying reader.
  A tag resolved at a mirror yields a digest, and from then on everything is checked
  against that digest. Manifests and ranges are read whole before they are returned,
  so wrong bytes from a mirror are refused and the next source is asked; so are
  manifests fetched by descriptor (they are small). A blob is streamed to its
  consumer, so its bytes cannot be taken back: when they fail verification, the
  mirror is distrusted at once (and reported), and the consumer sees
  :class:`~modelreg.errors.MirrorIntegrityError` at the blob's end, keeps nothing of
  it, and fetches the blob again from byte 0: the next fetch skips that mirror and
  reads the next source (``Client.pull`` and ``prefetch`` do this; containerd does it
  for manifests). Only the last source's failure is a plain
  :class:`~modelreg.errors.IntegrityError`.
* **Credentials.** Each mirror has its own client, which looks credentials up under
  the mirror's host: the origin's are never sent to a mirror unless the docker config
  holds them for that mirror too. Requests to a mirror carry ``ns=<origin host>``, as
  containerd sends them, so one mirror can serve several upstreams.
* **Which host served what.** Every mirror's client counts the bytes it received
  (``ClientStats``); :meth:`MirroredTarget.served` sums them per host.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from modelreg.content.base import VerifyingReader, fetch_bytes
from modelreg.content.registry.client import RegistryClient
from modelreg.content.registry.credentials import DOCKER_HUB, CredentialProvider, normalize_host
from modelreg.content.registry.hosts import Endpoint, HostConfig, HostOverride
from modelreg.content.registry.retry import RetryPolicy
from modelreg.content.registry.streams import ResponseReader
from modelreg.content.registry.target import RegistryTarget
from modelreg.errors import (
    IntegrityError,
    InvalidInputError,
    MirrorIntegrityError,
    ModelRegError,
    NetworkError,
    NotFoundError,
    PermissionDeniedError,
)
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import MAX_MANIFEST_BYTES

__all__ = ["DOWN_FOR", "MIRROR_RETRY", "Mirror", "MirroredTarget", "connect", "extra_mirror"]

DOWN_FOR = 60.0
"""Seconds a mirror that could not be reached is skipped before it is tried again."""
MIRROR_RETRY = RetryPolicy(max_attempts=2, base_delay=0.1, max_delay=1.0, total_deadline=10.0)
"""A mirror gets one retry: the server is the real fallback, and waiting on a dead
mirror is what a cache exists to avoid."""
MIRROR_CONNECT_TIMEOUT = 5.0
"""Seconds to connect to a mirror when its ``dial_timeout`` does not say."""

_log = logging.getLogger("modelreg.registry")
T = TypeVar("T")


@dataclass
class Mirror:
    """One configured mirror of a host and what this process learned about it."""

    client: RegistryClient
    endpoint: Endpoint
    _down_until: float = 0.0
    _distrusted: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def host(self) -> str:
        return self.endpoint.host

    @property
    def distrusted(self) -> bool:
        """True once it served content that does not match its digest."""
        with self._lock:
            return self._distrusted

    def usable(self, capability: str) -> bool:
        if not self.endpoint.can(capability):
            return False
        with self._lock:
            return not self._distrusted and time.monotonic() >= self._down_until

    def failed(self, exc: ModelRegError, what: str) -> None:
        """Remember a failure: unreachable -> skipped for a while; lying -> for good."""
        if isinstance(exc, NotFoundError):
            _log.debug("mirror %s lacks %s; trying the next source", self.host, what)
            return
        with self._lock:
            if isinstance(exc, IntegrityError):
                self._distrusted = True
            elif isinstance(exc, NetworkError):
                self._down_until = time.monotonic() + DOWN_FOR
        if isinstance(exc, IntegrityError):
            note = "it served content that does not match its digest: untrusted, not used again"
        elif isinstance(exc, NetworkError):
            note = f"skipped for {DOWN_FOR:.0f}s"
        else:
            note = "trying the next source"
        self.client.warn(f"mirror {self.host} failed to {what}: {exc.message} ({note})")


class _MirrorReader(VerifyingReader):
    """A blob streamed from a mirror: a mismatch distrusts the mirror at once and
    raises :class:`MirrorIntegrityError`, so that its consumer fetches it again."""

    def __init__(self, stream: ResponseReader, desc: Descriptor, what: str, mirror: Mirror) -> None:
        super().__init__(stream, desc, what=what)
        self._mirror = mirror

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            return super().readinto(buffer)
        except MirrorIntegrityError:
            raise
        except IntegrityError as exc:
            self._mirror.failed(exc, f"download {self.descriptor.digest}")
            raise MirrorIntegrityError(
                exc.message,
                hint=(
                    f"mirror {self._mirror.host} is not used again by this client; fetch "
                    "the blob again to read it from the next source"
                ),
                digest=str(self.descriptor.digest),
                mirror=self._mirror.host,
            ) from exc


class _MirrorRepository(RegistryTarget):
    """A repository at one mirror: its blob readers name and distrust the mirror."""

    def __init__(self, mirror: Mirror, repository: str) -> None:
        super().__init__(mirror.client, repository)
        self.mirror = mirror

    def _verifying(self, stream: ResponseReader, desc: Descriptor, what: str) -> VerifyingReader:
        return _MirrorReader(stream, desc, what, self.mirror)


class MirroredTarget(RegistryTarget):
    """A repository read through mirrors first, the server last (see the module doc).

    Everything that is not a read by digest or a tag resolution is the server's
    :class:`~modelreg.content.registry.target.RegistryTarget` unchanged.
    """

    def __init__(self, client: RegistryClient, repository: str, mirrors: Sequence[Mirror]) -> None:
        super().__init__(client, repository)
        # the server's repository name (Docker Hub's library/ added) is the mirrors' too
        self._mirrors = [(m, _MirrorRepository(m, self.repository)) for m in mirrors]

    def __repr__(self) -> str:
        hosts = ", ".join(m.host for m, _ in self._mirrors)
        return f"MirroredTarget({self.name!r}, mirrors=[{hosts}])"

    @property
    def mirrors(self) -> tuple[Mirror, ...]:
        return tuple(m for m, _ in self._mirrors)

    def served(self) -> dict[str, int]:
        """Blob bytes received per host so far (mirrors and the server)."""
        out = {m.host: m.client.stats.bytes_received for m, _ in self._mirrors}
        out[self.client.api_host] = self.client.stats.bytes_received
        return out

    def _through(
        self,
        capability: str,
        what: str,
        read: Callable[[RegistryTarget], T],
        origin: Callable[[], T],
    ) -> T:
        skipped: list[str] = []
        for mirror, target in self._mirrors:
            if not mirror.usable(capability):
                continue
            try:
                result = read(target)
            except InvalidInputError:
                raise  # our own request was wrong: no other host would take it
            except ModelRegError as exc:
                if not isinstance(exc, MirrorIntegrityError):  # else its reader said so
                    mirror.failed(exc, what)
                skipped.append(f"{mirror.host} ({type(exc).__name__})")
                continue
            _log.info("%s: served by mirror %s", what, mirror.host)
            return result
        try:
            return origin()
        except ModelRegError as exc:
            exc.hint = _with_mirror_note(exc.hint, capability, skipped, self._mirrors)
            raise

    # ------------------------------------------------------------------ reads
    def fetch(self, desc: Descriptor) -> VerifyingReader:
        if self._is_manifest(desc):
            # read whole at the mirror, so that a wrong one moves on to the next source
            def whole(target: RegistryTarget) -> VerifyingReader:
                data = fetch_bytes(target, desc, limit=MAX_MANIFEST_BYTES)
                return VerifyingReader(io.BytesIO(data), desc, what=f"manifest {desc.digest}")

            return self._through(
                "pull",
                f"download manifest {desc.digest}",
                whole,
                lambda: super(MirroredTarget, self).fetch(desc),
            )
        return self._through(
            "pull",
            f"download {desc.digest}",
            lambda t: t.fetch(desc),
            lambda: super(MirroredTarget, self).fetch(desc),
        )

    def fetch_range(self, desc: Descriptor, offset: int, length: int) -> bytes:
        # a range has no digest of its own: the chunk index or the caller verifies it,
        # exactly as it does for the server's bytes
        return self._through(
            "pull",
            f"read {length} bytes of {desc.digest}",
            lambda t: t.fetch_range(desc, offset, length),
            lambda: super(MirroredTarget, self).fetch_range(desc, offset, length),
        )

    def fetch_range_into(self, desc: Descriptor, offset: int, views: list[memoryview]) -> None:
        # a failed mirror may have filled part of the views: the origin fills them all again
        self._through(
            "pull",
            f"read {sum(len(v) for v in views)} bytes of {desc.digest}",
            lambda t: t.fetch_range_into(desc, offset, views),
            lambda: super(MirroredTarget, self).fetch_range_into(desc, offset, views),
        )

    def resolve(self, reference: str) -> Descriptor:
        capability = "resolve" if self._check_reference(reference) is None else "pull"
        return self._through(
            capability,
            f"resolve {reference!r} in {self.repository}",
            lambda t: t.resolve(reference),
            lambda: super(MirroredTarget, self).resolve(reference),
        )

    def fetch_manifest(self, reference: str) -> tuple[Descriptor, bytes]:
        capability = "resolve" if self._check_reference(reference) is None else "pull"
        return self._through(
            capability,
            f"fetch manifest {reference!r} of {self.repository}",
            lambda t: t.fetch_manifest(reference),
            lambda: super(MirroredTarget, self).fetch_manifest(reference),
        )


def _with_mirror_note(
    hint: str | None,
    capability: str,
    skipped: Sequence[str],
    mirrors: Sequence[tuple[Mirror, RegistryTarget]],
) -> str | None:
    if skipped:
        note = f"the mirrors failed first: {', '.join(skipped)}"
    elif capability == "resolve" and not any(m.endpoint.can("resolve") for m, _ in mirrors):
        note = (
            'no configured mirror may resolve tags (capability "resolve"); pull by digest '
            "to read from the mirrors while the registry is unreachable"
        )
    else:
        return hint
    return f"{hint}; {note}" if hint else note


# ------------------------------------------------------------------ building clients


def connect(
    host: str,
    config: HostConfig,
    *,
    credentials: CredentialProvider | None,
    plain_http: bool = False,
    insecure: bool = False,
    ca_file: str | None = None,
    override: HostOverride | None = None,
    on_warning: Callable[[str], None] | None = None,
    timeout: float = 60.0,
    upload_chunk_size: int | None = None,
    document_deadline: float | None = None,
    min_throughput: float = 1024.0,
    throughput_window: float = 30.0,
) -> RegistryClient:
    """The client for ``host``: its server and mirrors as ``config`` says.

    Settings for the server, most specific first: ``override`` (``cp``'s
    ``--from-*``/``--to-*`` flags), then the flags given to every host (``plain_http``,
    ``insecure``, ``ca_file``), then the configuration file. Mirrors take their
    settings from the file alone. The remaining keywords are
    :class:`~modelreg.content.registry.client.RegistryClient`'s, the same for every host.
    """
    if config.blocked:
        raise PermissionDeniedError(
            f"{host} is blocked by {', '.join(config.files)}",
            hint="the machine's registries.conf forbids pulling from this registry",
        )
    override = override or HostOverride()
    server = config.server
    chosen_plain = override.plain_http if override.plain_http is not None else plain_http
    chosen_insecure = override.insecure if override.insecure is not None else insecure
    common = _Common(
        timeout, upload_chunk_size, document_deadline, min_throughput, throughput_window
    )
    mirrors = tuple(_mirror(host, m, credentials, on_warning, common) for m in config.mirrors)
    return RegistryClient(
        host,
        credentials=credentials,
        plain_http=chosen_plain or server.plain_http,
        insecure=chosen_insecure or server.skip_verify,
        ca_file=override.ca_file or ca_file,
        on_warning=on_warning,
        endpoint=server,
        mirrors=mirrors,
        timeout=common.timeout,
        upload_chunk_size=common.upload_chunk_size,
        document_deadline=common.document_deadline,
        min_throughput=common.min_throughput,
        throughput_window=common.throughput_window,
    )


def extra_mirror(
    host: str,
    endpoint: Endpoint,
    *,
    credentials: CredentialProvider | None,
    on_warning: Callable[[str], None] | None = None,
    timeout: float = 60.0,
    document_deadline: float | None = None,
    min_throughput: float = 1024.0,
    throughput_window: float = 30.0,
) -> Mirror:
    """A mirror of ``host`` that no file configures (``prefetch --via``); the caller
    closes its client."""
    common = _Common(timeout, None, document_deadline, min_throughput, throughput_window)
    return _mirror(host, endpoint, credentials, on_warning, common)


@dataclass(frozen=True)
class _Common:
    """The client settings every host of one :class:`~modelreg.client.Client` shares."""

    timeout: float
    upload_chunk_size: int | None
    document_deadline: float | None
    min_throughput: float
    throughput_window: float


def _mirror(
    host: str,
    endpoint: Endpoint,
    credentials: CredentialProvider | None,
    on_warning: Callable[[str], None] | None,
    common: _Common,
) -> Mirror:
    if endpoint.dial_timeout is None:
        endpoint = dataclasses.replace(endpoint, dial_timeout=MIRROR_CONNECT_TIMEOUT)
    client = RegistryClient(
        endpoint.host,
        credentials=credentials,
        plain_http=endpoint.plain_http,
        insecure=endpoint.skip_verify,
        on_warning=on_warning,
        endpoint=endpoint,
        query={"ns": normalize_host(host) if normalize_host(host) == DOCKER_HUB else host},
        retry=MIRROR_RETRY,
        timeout=common.timeout,
        document_deadline=common.document_deadline,
        min_throughput=common.min_throughput,
        throughput_window=common.throughput_window,
    )
    return Mirror(client, endpoint)
