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
  :class:`~modelreg.content.registry.target.RegistryTarget` code as the server's and
  checked the same way: manifests hashed against the digest asked for, blobs hashed
  whole against theirs. A tag resolved at a mirror yields a digest, and from then on
  everything is checked against that digest. Manifests and ranges are read whole before
  they are returned, so wrong bytes from a mirror are refused and the next source is
  asked; so are manifests fetched by descriptor (they are small).
* **One blob at a time.** A blob is streamed to its consumer from one source at a time
  (:class:`_Failover`). A source that breaks mid-blob (cut, refused, too slow) hands
  over to the next source *at the offset reached*: the rest comes from the next mirror
  or the server, and the whole blob is still hashed against its digest, so nothing
  unverified is ever kept and the bytes already received are not fetched twice. Bytes
  that fail verification cannot be taken back from the consumer: every mirror that
  served part of the blob is distrusted at once (and reported), and the consumer sees
  :class:`~modelreg.errors.MirrorIntegrityError`, throws away that blob and reads it
  again from byte 0, now from the next source
  (:func:`modelreg.content.refetch.refetching`: the pull, ``cp``, ``prefetch``); the
  other blobs in flight go on. Ranges verified by their caller (lazy reads against the
  chunk index) are read again the same way (:func:`modelreg.content.refetch.checked`,
  through :meth:`MirroredTarget.served_by` and :meth:`MirroredTarget.distrust`). Only
  the last source's failure is a plain error, and its hint names every source tried for
  that blob and what each did.
* **Credentials.** Each mirror has its own client, which looks credentials up under
  the mirror's host: the origin's are never sent to a mirror unless the docker config
  holds them for that mirror too. Requests to a mirror carry ``ns=<origin host>``, as
  containerd sends them, so one mirror can serve several upstreams.
* **Which host served what.** Every mirror's client counts the bytes it received
  (``ClientStats``); :meth:`MirroredTarget.served` sums them per host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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
E = TypeVar("E", bound=ModelRegError)


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
        self._tried: dict[str, list[str]] = {}
        self._tried_lock = threading.Lock()
        self._local = threading.local()

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

    # ------------------------------------------------------------ who did what
    def tried(self, key: str) -> list[str]:
        """What each source that failed ``key`` (a digest, or a reference) did."""
        with self._tried_lock:
            return list(self._tried.get(key, ()))

    def _failed(self, mirror: Mirror, exc: ModelRegError, what: str, key: str) -> None:
        if not isinstance(exc, MirrorIntegrityError):  # else its reader said so already
            mirror.failed(exc, what)
        with self._tried_lock:
            self._tried.setdefault(key, []).append(f"{mirror.host}: {_failure(exc)}")

    def _last(self, exc: E, capability: str, key: str) -> E:
        """The server's failure, its hint naming every source tried for ``key`` before."""
        exc.hint = _with_mirror_note(exc.hint, capability, self.tried(key), self._mirrors)
        return exc

    @contextlib.contextmanager
    def served_by(self) -> Iterator[list[str]]:
        """The hosts that serve this thread's reads by digest inside the block."""
        hosts: list[str] = []
        stack: list[list[str]] = self._local.__dict__.setdefault("stack", [])
        stack.append(hosts)
        try:
            yield hosts
        finally:
            stack.remove(hosts)

    def _served(self, host: str) -> None:
        for hosts in self._local.__dict__.get("stack", ()):
            if host not in hosts:
                hosts.append(host)

    def distrust(self, hosts: Sequence[str], exc: IntegrityError) -> bool:
        """Never read from the mirrors among ``hosts`` again: they served bytes that
        ``exc`` says are wrong. True if one of them was a mirror."""
        found = False
        for mirror, _ in self._mirrors:
            if mirror.host in hosts:
                mirror.failed(exc, "serve verified bytes")
                found = True
        return found

    def _blame(
        self, served: Sequence[Mirror | None], exc: IntegrityError, desc: Descriptor
    ) -> IntegrityError:
        """The error for a blob whose bytes did not verify, once they were all read."""
        key = str(desc.digest)
        hosts = [m.host if m is not None else self.client.api_host for m in served]
        mirrors = [m for m in served if m is not None]
        for mirror in mirrors:
            mirror.failed(exc, f"download {key}")
            with self._tried_lock:
                self._tried.setdefault(key, []).append(f"{mirror.host}: {_failure(exc)}")
        if not mirrors:
            return self._last(exc, "pull", key)
        return MirrorIntegrityError(
            f"{exc.message} (served by {', '.join(hosts)})",
            hint=(
                f"mirror {mirrors[0].host} is not used again by this client; fetch the blob "
                "again to read it from the next source"
            ),
            digest=key,
            mirror=mirrors[0].host,
        )

    def _sources(self, capability: str) -> list[tuple[Mirror | None, RegistryTarget]]:
        """The mirrors that may serve ``capability`` now, in order, then the server."""
        out: list[tuple[Mirror | None, RegistryTarget]] = [
            (m, t) for m, t in self._mirrors if m.usable(capability)
        ]
        out.append((None, self))  # its open_blob is the server's own
        return out

    def _through(
        self,
        capability: str,
        what: str,
        read: Callable[[RegistryTarget], T],
        origin: Callable[[], T],
        key: str,
    ) -> T:
        for mirror, target in self._mirrors:
            if not mirror.usable(capability):
                continue
            try:
                result = read(target)
            except InvalidInputError:
                raise  # our own request was wrong: no other host would take it
            except ModelRegError as exc:
                self._failed(mirror, exc, what, key)
                continue
            _log.info("%s: served by mirror %s", what, mirror.host)
            self._served(mirror.host)
            return result
        try:
            result = origin()
        except ModelRegError as exc:
            raise self._last(exc, capability, key) from None
        self._served(self.client.api_host)
        return result

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
                str(desc.digest),
            )
        return _FailoverReader(self, desc)

    @property
    def streams_ranges(self) -> bool:
        # each range read picks its source and is checked on its own (a mirror that
        # served bad bytes is distrusted and the read goes to the next): one long body
        # would pin every later read to whichever source answered first
        return False

    def fetch_range(self, desc: Descriptor, offset: int, length: int) -> bytes:
        # a range has no digest of its own: the chunk index or the caller verifies it,
        # exactly as it does for the server's bytes (modelreg.content.refetch.checked)
        return self._through(
            "pull",
            f"read {length} bytes of {desc.digest}",
            lambda t: t.fetch_range(desc, offset, length),
            lambda: super(MirroredTarget, self).fetch_range(desc, offset, length),
            str(desc.digest),
        )

    def fetch_range_into(self, desc: Descriptor, offset: int, views: list[memoryview]) -> None:
        # a failed mirror may have filled part of the views: the next source fills them all
        self._through(
            "pull",
            f"read {sum(len(v) for v in views)} bytes of {desc.digest}",
            lambda t: t.fetch_range_into(desc, offset, views),
            lambda: super(MirroredTarget, self).fetch_range_into(desc, offset, views),
            str(desc.digest),
        )

    def _by_reference(
        self, reference: str, what: str, method: Callable[[RegistryTarget, str], T]
    ) -> T:
        """A read by tag or digest: a tag needs a mirror trusted to ``resolve``, a digest
        one trusted to ``pull``. ``method`` is RegistryTarget's own, called on each mirror
        and, for the server, on this target (as ``super()`` would, past the override)."""
        capability = "resolve" if self._check_reference(reference) is None else "pull"
        return self._through(
            capability,
            what,
            lambda t: method(t, reference),
            lambda: method(self, reference),
            reference,
        )

    def resolve(self, reference: str) -> Descriptor:
        what = f"resolve {reference!r} in {self.repository}"
        return self._by_reference(reference, what, RegistryTarget.resolve)

    def fetch_manifest(self, reference: str) -> tuple[Descriptor, bytes]:
        what = f"fetch manifest {reference!r} of {self.repository}"
        return self._by_reference(reference, what, RegistryTarget.fetch_manifest)


class _Failover(io.RawIOBase):
    """The raw bytes of one blob from the first source that serves them.

    A mirror that fails to open the blob, or breaks while sending it (after its own
    resumes), is reported and skipped, and the next source continues at the offset
    reached (a ``Range`` request). The server, last, has no one to hand over to: its
    failure ends the read (``exhausted``), its hint naming what every source did.
    Nothing here is verified: :class:`_FailoverReader` hashes the whole blob.
    """

    def __init__(self, owner: MirroredTarget, desc: Descriptor) -> None:
        super().__init__()
        self._owner = owner
        self._desc = desc
        self._queue = owner._sources("pull")
        self._stream: ResponseReader | None = None
        self._mirror: Mirror | None = None
        self.offset = 0
        self.served: list[Mirror | None] = []
        """Each source that delivered bytes of this blob (None: the server)."""
        self.exhausted = False
        self._open(0)

    def readable(self) -> bool:
        return True

    def _give_up(self, exc: ModelRegError) -> ModelRegError:
        self.exhausted = True
        return self._owner._last(exc, "pull", str(self._desc.digest))

    def _open(self, offset: int) -> None:
        """Open the next source that serves the blob from byte ``offset`` on."""
        key = str(self._desc.digest)
        while self._queue:
            mirror, target = self._queue.pop(0)
            if mirror is not None and not mirror.usable("pull"):
                continue  # found down or lying meanwhile (by another blob)
            try:
                self._stream = target.open_blob(self._desc, offset)
            except InvalidInputError:
                raise
            except ModelRegError as exc:
                if mirror is None:
                    raise self._give_up(exc) from None
                self._owner._failed(mirror, exc, f"download {key}", key)
                continue
            self._mirror = mirror
            host = mirror.host if mirror is not None else self._owner.client.api_host
            if offset:
                _log.info("%s: continuing at byte %d from %s", key, offset, host)
            else:
                _log.info("download %s: served by %s", key, host)
            return
        raise AssertionError("the server is always the last source")  # pragma: no cover

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        key = str(self._desc.digest)
        view = memoryview(buffer).cast("B")
        got = 0
        while True:
            stream = self._stream
            assert stream is not None
            before = stream.offset
            try:
                got += stream.readinto(view[got:]) or 0
            except InvalidInputError:
                raise
            except ModelRegError as exc:
                # what reached the buffer before the break is kept (the hash covers it)
                got += stream.offset - before
                self._delivered(got)
                if self._mirror is None:
                    raise self._give_up(exc) from None
                what = f"download {key} (broke at byte {self.offset + got})"
                self._owner._failed(self._mirror, exc, what, key)
                stream.close()
                self._open(self.offset + got)
                if got < len(view):
                    continue
            self._delivered(got)
            self.offset += got
            return got

    def _delivered(self, got: int) -> None:
        if got and self._mirror not in self.served:
            self.served.append(self._mirror)
            host = self._mirror.host if self._mirror is not None else self._owner.client.api_host
            self._owner._served(host)

    def close(self) -> None:
        try:
            if self._stream is not None:
                self._stream.close()
        finally:
            super().close()


class _FailoverReader(VerifyingReader):
    """A blob read through :class:`_Failover`, hashed whole: a mismatch blames the
    mirrors that served it (:meth:`MirroredTarget._blame`)."""

    def __init__(self, owner: MirroredTarget, desc: Descriptor) -> None:
        self._failover = _Failover(owner, desc)
        super().__init__(self._failover, desc, what=f"blob {desc.digest} of {owner.name}")
        self._owner = owner

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            return super().readinto(buffer)
        except IntegrityError as exc:
            if self._failover.exhausted or isinstance(exc, MirrorIntegrityError):
                raise
            raise self._owner._blame(self._failover.served, exc, self.descriptor) from exc


def _failure(exc: ModelRegError) -> str:
    """What a source did, in a few words, for the list of sources tried."""
    if isinstance(exc, IntegrityError):
        kind = "wrong bytes"
    elif isinstance(exc, NotFoundError):
        kind = "does not have it"
    elif isinstance(exc, NetworkError):
        kind = "unreachable or broke off"
    else:
        kind = type(exc).__name__
    return f"{kind} ({exc.message})"


def _with_mirror_note(
    hint: str | None,
    capability: str,
    tried: Sequence[str],
    mirrors: Sequence[tuple[Mirror, RegistryTarget]],
) -> str | None:
    if tried:
        note = f"the mirrors failed first: {'; '.join(tried)}"
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
