"""One connection to one registry host: scheme, TLS, auth, retries, counters.

:class:`RegistryClient` is thread-safe and meant to be shared by the threads of
a copy; :meth:`RegistryClient.repository` hands out the
:class:`~modelreg.content.registry.target.RegistryTarget` of one repository.

Scheme rule (predictable, decided once per client):

* ``plain_http=True``: HTTP.
* a non-loopback host: HTTPS, always.
* a loopback host (``localhost``, ``127.0.0.0/8``, ``::1``) with ``ca_file`` or
  ``insecure``: HTTPS, always.
* any other loopback host: HTTPS is tried first (``GET /v2/``); if the TLS handshake
  fails because the server does not speak TLS, the client switches to HTTP for the
  rest of its life. A certificate that fails verification does *not* fall back:
  the server speaks TLS and the error says to pass ``--ca-file`` or ``--insecure``.

Bulk blob bodies (downloads of at least :data:`BULK_MIN` bytes) are read through
a lean :mod:`http.client` path when no proxy applies and no custom transport was
given, over a small pool of kept-alive connections: see
:mod:`modelreg.content.registry._bulk` for the measurements and the pooling rules.

Every request is bounded in total time as well as by the idle ``timeout`` (see
:mod:`modelreg.content.registry.deadlines`): :meth:`RegistryClient.request` runs
all attempts and auth rounds of one logical request under one
:class:`~modelreg.content.registry.deadlines.DocumentDeadline` (or the bound the
caller passes), so the status line and headers can never be trickled, and
:meth:`RegistryClient.read_body` reads a document under the deadline its request
used. A tripped bound is never retried.

Per-host configuration (:mod:`modelreg.content.registry.hosts`) reaches a client as an
:class:`~modelreg.content.registry.hosts.Endpoint`: the host and API root requests go
to (containerd's ``server`` and ``override_path``), extra CAs, client certificates,
headers and a connect timeout. A client with ``mirrors`` hands out
:class:`~modelreg.content.registry.mirrors.MirroredTarget` repositories, which read
through the mirrors first (see :mod:`modelreg.content.registry.mirrors`).
"""

from __future__ import annotations

import logging
import re
import ssl
import threading
import urllib.request
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import httpx

from modelreg._version import __version__
from modelreg.content.registry import _bulk
from modelreg.content.registry._hosts import is_loopback, split_host
from modelreg.content.registry.auth import MAX_TOKEN_RESPONSE, Authenticator
from modelreg.content.registry.credentials import (
    DOCKER_HUB,
    Credential,
    CredentialProvider,
    normalize_host,
)
from modelreg.content.registry.deadlines import (
    DEFAULT_DOCUMENT_DEADLINE,
    DEFAULT_MIN_THROUGHPUT,
    DEFAULT_THROUGHPUT_WINDOW,
    BoundedTransport,
    BoundExceeded,
    DocumentDeadline,
    ThroughputFloor,
    TransferBound,
    active,
)
from modelreg.content.registry.errors import (
    MAX_ERROR_BODY,
    error_for_response,
    is_permanent,
    is_tls_protocol_failure,
    network_error,
)
from modelreg.content.registry.retry import RETRY_STATUSES, RetryPolicy, parse_retry_after
from modelreg.content.registry.streams import iter_raw, read_capped
from modelreg.errors import AuthenticationError, InvalidInputError, ModelRegError, NetworkError

__all__ = [
    "BULK_MIN",
    "ClientStats",
    "RegistryClient",
    "StatsSnapshot",
    "is_loopback",
    "split_host",
]

BULK_MIN: Final = 1024 * 1024
"""Downloads at least this large use the lean body path."""
MAX_REDIRECTS: Final = 10
_URL_MEMO: Final = 1024
"""Parsed request URLs a client keeps (cleared when full; see RegistryClient.url)."""
USER_AGENT: Final = f"modelreg/{__version__}"
DOCKER_HUB_API: Final = "registry-1.docker.io"

_HOST_RE: Final = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$"
)
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
_LIMITS: Final = httpx.Limits(max_connections=64, max_keepalive_connections=32)

_log = logging.getLogger("modelreg.registry")

if TYPE_CHECKING:
    from modelreg.content.registry.hosts import Endpoint
    from modelreg.content.registry.mirrors import Mirror
    from modelreg.content.registry.target import RegistryTarget


# --------------------------------------------------------------------------- hosts


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host.lower(), url.port or default


# --------------------------------------------------------------------------- stats


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


class ClientStats:
    """Thread-safe counters: HTTP requests, blob bytes sent, blob bytes received."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = 0
        self._sent = 0
        self._received = 0

    def add_request(self, n: int = 1) -> None:
        with self._lock:
            self._requests += n

    def add_sent(self, n: int) -> None:
        with self._lock:
            self._sent += n

    def add_received(self, n: int) -> None:
        with self._lock:
            self._received += n

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    @property
    def bytes_sent(self) -> int:
        with self._lock:
            return self._sent

    @property
    def bytes_received(self) -> int:
        with self._lock:
            return self._received

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(self._requests, self._sent, self._received)

    def __repr__(self) -> str:
        snap = self.snapshot()
        return (
            f"ClientStats(requests={snap.requests}, bytes_sent={snap.bytes_sent}, "
            f"bytes_received={snap.bytes_received})"
        )


# --------------------------------------------------------------------------- client

Content = bytes | Iterable[bytes] | None


class RegistryClient:
    """A thread-safe client for one registry host.

    ``host`` is ``name[:port]`` (``docker.io`` is served by ``registry-1.docker.io``).
    ``credentials`` is consulted once, when the registry first asks. ``transport``
    replaces the network (tests pass an :class:`httpx.MockTransport`); ``retry``
    sets the retry budget; ``upload_chunk_size`` makes large uploads use PATCH
    chunks of at most that many bytes (for registries that cap request bodies).
    ``on_warning`` receives warnings meant for the user (default: the
    ``modelreg.registry`` logger).

    Scheme: HTTPS, except with ``plain_http=True``, or for a loopback host given
    neither ``ca_file`` nor ``insecure``, which is probed once with HTTPS and falls
    back to HTTP only if the server does not speak TLS (see the module docstring).
    """

    def __init__(
        self,
        host: str,
        *,
        credentials: CredentialProvider | None = None,
        plain_http: bool = False,
        insecure: bool = False,
        ca_file: str | None = None,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        on_warning: Callable[[str], None] | None = None,
        timeout: float = 60.0,
        upload_chunk_size: int | None = None,
        document_deadline: float | None = None,
        min_throughput: float = DEFAULT_MIN_THROUGHPUT,
        throughput_window: float = DEFAULT_THROUGHPUT_WINDOW,
        endpoint: Endpoint | None = None,
        query: Mapping[str, str] | None = None,
        mirrors: Sequence[Mirror] = (),
    ) -> None:
        if not isinstance(host, str) or "://" in host or not _HOST_RE.match(host):
            raise InvalidInputError(
                f"invalid registry host {host!r}",
                hint=(
                    "give HOST[:PORT] without a scheme, e.g. registry.example.com:5000; "
                    "use --plain-http for an HTTP-only registry"
                ),
            )
        if upload_chunk_size is not None and upload_chunk_size < 1:
            raise InvalidInputError(
                f"upload chunk size must be a positive number of bytes, got {upload_chunk_size!r}"
            )
        for name, value in (
            ("document deadline", document_deadline),
            ("minimum throughput", min_throughput),
            ("throughput window", throughput_window),
        ):
            if value is not None and not 0 < value < float("inf"):
                raise InvalidInputError(f"the {name} must be a positive number, not {value!r}")
        self.host = host
        self.api_host = DOCKER_HUB_API if normalize_host(host) == DOCKER_HUB else host
        self.endpoint = endpoint
        self.api_root = "/v2"
        if endpoint is not None:
            # the configured server (or mirror) answers for ``host``: credentials are
            # still looked up under ``host``, requests go to the endpoint
            self.api_host = endpoint.host
            self.api_root = endpoint.api_root
        self.query = dict(query or {})
        """Query parameters sent with every registry request (``ns=`` to a mirror)."""
        self.mirrors = tuple(mirrors)
        self.plain_http = plain_http
        self.insecure = insecure
        self.ca_file = ca_file
        self.timeout = timeout
        self.document_deadline = (
            document_deadline
            if document_deadline is not None
            else max(DEFAULT_DOCUMENT_DEADLINE, timeout)
        )
        """Seconds a document (and the headers of any answer) may take in total."""
        self.min_throughput = min_throughput
        self.throughput_window = throughput_window
        self.upload_chunk_size = upload_chunk_size
        self.retry = retry or RetryPolicy()
        self.stats = ClientStats()
        self.supports_range: bool | None = None
        """None until a ranged read was tried; False once the registry ignored ``Range``."""
        self._warn = on_warning or _log.warning
        self._credentials_provider = credentials
        self._credential: Credential | None = None
        self._credential_loaded = False
        self._lock = threading.Lock()
        self._scheme_lock = threading.Lock()
        self._closed = False
        self._custom_transport = transport is not None
        self._ssl_context = self._make_ssl_context()
        self._bulk_pool = _bulk.BulkPool()
        self._urls: dict[str, httpx.URL] = {}
        """Kept-alive connections of the bulk path (closed with the client)."""
        if transport is None:
            # our own sockets, so that every read and write honours the transfer bounds
            transport = BoundedTransport(
                ssl_context=self._ssl_context or httpx.create_ssl_context(),
                limits=_LIMITS,
            )
        if plain_http:
            self._scheme: str | None = "http"
        elif is_loopback(self.api_host) and not (
            ca_file or insecure or (endpoint is not None and endpoint.explicit)
        ):
            self._scheme = None
        else:
            self._scheme = "https"
        connect = endpoint.dial_timeout if endpoint is not None else None
        self._http = httpx.Client(
            verify=self._ssl_context if self._ssl_context is not None else True,
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=connect or timeout),
            follow_redirects=False,
            max_redirects=MAX_REDIRECTS,
            headers=[("User-Agent", USER_AGENT), *(endpoint.headers if endpoint else ())],
            limits=_LIMITS,
            event_hooks={"request": [self._count_request]},
            trust_env=True,
        )
        self.auth = Authenticator(
            self.host,
            credentials=self.credential,
            fetch=self._token_request,
            plain_text=self._plain_text_remote,
            on_warning=self._warn,
            clock=self.retry.clock,
        )
        self._referrer_locks: dict[str, threading.Lock] = {}

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._http.close()
        self._bulk_pool.close()
        for mirror in self.mirrors:
            mirror.client.close()

    def __repr__(self) -> str:
        return f"RegistryClient(host={self.host!r}, scheme={self._scheme!r})"

    # ------------------------------------------------------------------ setup
    def _make_ssl_context(self) -> ssl.SSLContext | None:
        if self.plain_http:
            return None
        if self.insecure:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self._warn(
                f"TLS certificate verification is disabled for {self.host} (--insecure): "
                "anyone on the network path can read and change what is sent and received"
            )
            return ctx
        ctx = httpx.create_ssl_context()
        configured = self.endpoint.ca_files if self.endpoint is not None else ()
        for ca_file in (self.ca_file,) if self.ca_file else configured:
            try:
                ctx.load_verify_locations(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise InvalidInputError(
                    f"cannot load the CA certificate file {ca_file!r}: {exc}",
                    hint=(
                        "--ca-file takes a PEM file holding the registry's CA certificate(s)"
                        if ca_file == self.ca_file
                        else f"fix `ca` in {self.endpoint.source if self.endpoint else ''}"
                    ),
                ) from exc
        for cert, key in self.endpoint.client_certs if self.endpoint is not None else ():
            try:
                ctx.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as exc:
                raise InvalidInputError(
                    f"cannot load the client certificate {cert!r}"
                    + (f" with key {key!r}" if key else "")
                    + f": {exc}",
                    hint=f"fix `client` in {self.endpoint.source if self.endpoint else ''}",
                ) from exc
        return ctx

    def warn(self, message: str) -> None:
        """Hand a warning meant for the user to ``on_warning``."""
        self._warn(message)

    def _count_request(self, request: httpx.Request) -> None:
        self.stats.add_request()

    def credential(self) -> Credential | None:
        """The credential for this host (looked up once, on first need)."""
        with self._lock:
            if not self._credential_loaded:
                provider = self._credentials_provider
                self._credential = provider.get(self.host) if provider is not None else None
                self._credential_loaded = True
            return self._credential

    def _plain_text_remote(self) -> bool:
        return self.scheme == "http" and not is_loopback(self.api_host)

    # ------------------------------------------------------------------ scheme
    @property
    def scheme(self) -> str:
        """``https`` or ``http`` (probing a loopback registry on first use)."""
        scheme = self._scheme
        if scheme is None:
            with self._scheme_lock:
                scheme = self._scheme
                if scheme is None:
                    scheme, definitive = self._probe_scheme()
                    if definitive:
                        self._scheme = scheme
        return scheme

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.api_host}"

    def _probe_scheme(self) -> tuple[str, bool]:
        """(scheme, definitive): a registry that could not be reached is probed again."""
        try:
            # bounded like any request: a server trickling its answer would stall the probe
            with active(self.deadline("check whether the registry speaks TLS")):
                response = self._http.get(f"https://{self.api_host}/v2/")
                response.close()
        except httpx.TransportError as exc:
            if is_tls_protocol_failure(exc):
                _log.debug("%s does not speak TLS; using plain HTTP (loopback)", self.host)
                return "http", True
            if is_permanent(exc):  # e.g. an untrusted certificate: it does speak TLS
                return "https", True
            return "https", False
        return "https", True

    def url(self, path: str) -> httpx.URL:
        """Absolute URL of a registry path (``/v2/...``) or of an absolute URL given back."""
        if path.startswith(("http://", "https://")):
            text = path
        else:
            if self.api_root != "/v2" and (path == "/v2" or path.startswith("/v2/")):
                path = self.api_root + path[3:]
            text = f"{self.base_url}{path}"
        # parsed once per distinct URL: lazy reads send hundreds of Range requests for the
        # same blob, and parsing its URL anew each time was ~7% of the engine's GIL time
        url = self._urls.get(text)
        if url is None:
            url = httpx.URL(text)
            if len(self._urls) >= _URL_MEMO:
                self._urls.clear()
            self._urls[text] = url
        return url

    def same_origin(self, url: httpx.URL) -> bool:
        return _origin(url) == _origin(self.url(self.base_url))

    # ------------------------------------------------------------------ requests
    def request(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        scopes: Sequence[str],
        what: str,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        content: Content = None,
        idempotent: bool | None = None,
        ok: Collection[int] = (200,),
        follow_redirects: bool = False,
        bulk: bool = False,
        timeout: httpx.Timeout | None = None,
        repository: str | None = None,
        subject: str | None = None,
        bound: TransferBound | None = None,
    ) -> httpx.Response:
        """Send one logical request (authenticating and retrying as allowed).

        Returns the streamed response when its status is in ``ok`` (the caller
        closes it); otherwise raises the mapped :class:`ModelRegError`. A body given
        as an iterable is sent once, never retried: a failure raises at once and a
        ``401`` is returned to the caller (with the refused token forgotten).

        Every attempt runs under ``bound`` (default: a new :meth:`deadline`), which
        a caller reading a document passes on to :meth:`read_body`.
        """
        if self._closed:
            raise InvalidInputError(f"the client for {self.host} is closed")
        target = url if isinstance(url, httpx.URL) else self.url(url)
        if bound is None:
            bound = self.deadline(what, target)
        with active(bound):
            return self._request(
                method,
                target,
                scopes=scopes,
                what=what,
                headers=headers,
                params=params,
                content=content,
                idempotent=idempotent,
                ok=ok,
                follow_redirects=follow_redirects,
                bulk=bulk,
                timeout=timeout,
                repository=repository,
                subject=subject,
            )

    def deadline(self, what: str, url: httpx.URL | None = None) -> DocumentDeadline:
        """A new document deadline for the operation ``what``, starting now."""
        return DocumentDeadline(self.document_deadline, self.host, what, url)

    def floor(
        self,
        what: str,
        url: httpx.URL | None = None,
        *,
        expected: int | None = None,
        then: float | None = None,
    ) -> ThroughputFloor:
        """A new throughput floor for a blob transfer (see ``deadlines``)."""
        return ThroughputFloor(
            self.min_throughput,
            self.throughput_window,
            self.host,
            what,
            url,
            expected=expected,
            then=self.document_deadline if then is None else then,
        )

    def _request(
        self,
        method: str,
        target: httpx.URL,
        *,
        scopes: Sequence[str],
        what: str,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        content: Content,
        idempotent: bool | None,
        ok: Collection[int],
        follow_redirects: bool,
        bulk: bool,
        timeout: httpx.Timeout | None,
        repository: str | None,
        subject: str | None,
    ) -> httpx.Response:
        if idempotent is None:
            idempotent = method in _IDEMPOTENT
        replayable = content is None or isinstance(content, bytes)
        state = self.retry.start()
        while True:
            state.begin()
            try:
                response = self._send_authenticated(
                    method,
                    target,
                    scopes=scopes,
                    headers=headers,
                    params=params,
                    content=content,
                    replayable=replayable,
                    follow_redirects=follow_redirects,
                    bulk=bulk,
                    timeout=timeout,
                )
            except httpx.TransportError as exc:
                if replayable and self._retryable_exception(exc, idempotent) and state.wait():
                    _log.debug("retrying %s %s after %r", method, target.path, exc)
                    continue
                raise self.network_error(exc, what=what, attempts=state.attempts) from exc
            status = response.status_code
            if status in ok:
                return response
            if status in RETRY_STATUSES and replayable and (idempotent or status == 429):
                retry_after = None
                if status in (429, 503):
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                if state.can_retry():
                    self._discard(response)
                    if state.wait(retry_after):
                        _log.debug("retrying %s %s after %d", method, target.path, status)
                        continue
                    raise self._status_error(
                        status, response.headers, b"", what, repository, subject, state.attempts
                    )
            body = self._error_body(response)
            raise self._status_error(
                status, response.headers, body, what, repository, subject, state.attempts
            )

    def _status_error(
        self,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        what: str,
        repository: str | None,
        subject: str | None,
        attempts: int,
    ) -> ModelRegError:
        if status == 401:
            auth_header = getattr(headers, "get_list", None)
            values = auth_header("www-authenticate") if auth_header else []
            scheme = self.auth.unsupported_scheme(values)
            if scheme is not None:
                return AuthenticationError(
                    f"{self.host} asks for {scheme!r} authentication to {what}, which modelreg "
                    "does not support",
                    hint="use a registry account that works with Basic or Bearer token auth",
                    status=401,
                )
        return error_for_response(
            status,
            headers,
            body,
            host=self.host,
            what=what,
            repository=repository,
            subject=subject,
            attempts=attempts,
            has_credentials=self.auth.has_credentials(),
        )

    def network_error(self, exc: BaseException, *, what: str, attempts: int = 1) -> NetworkError:
        return network_error(
            exc, host=self.host, what=what, attempts=attempts, scheme=self._scheme or "https"
        )

    @staticmethod
    def _retryable_exception(exc: httpx.TransportError, idempotent: bool) -> bool:
        if isinstance(exc, BoundExceeded) or is_permanent(exc):
            return False
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return True  # nothing reached the server
        if not idempotent:
            return False
        return isinstance(
            exc,
            httpx.ReadTimeout
            | httpx.ReadError
            | httpx.WriteError
            | httpx.WriteTimeout
            | httpx.RemoteProtocolError,
        )

    def _send_authenticated(
        self,
        method: str,
        url: httpx.URL,
        *,
        scopes: Sequence[str],
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        content: Content,
        replayable: bool,
        follow_redirects: bool,
        bulk: bool,
        timeout: httpx.Timeout | None,
    ) -> httpx.Response:
        # The scheme may be unknown until now (loopback probe): resolve relative to it.
        same_origin = self.same_origin(url)
        auth_header = self.auth.authorization(scopes) if same_origin else None
        rounds = 0
        while True:
            response = self._send_once(
                method,
                url,
                auth_header=auth_header,
                headers=headers,
                params=params,
                content=content,
                follow_redirects=follow_redirects,
                bulk=bulk,
                timeout=timeout,
            )
            if response.status_code != 401 or not same_origin:
                return response
            challenges = response.headers.get_list("www-authenticate")
            if not replayable:
                self.auth.invalidate(auth_header)
                return response
            if rounds >= 2:
                return response
            try:
                new_header = self.auth.respond(challenges, scopes, auth_header)
            except BaseException:
                response.close()
                raise
            if new_header is None:
                return response
            self._discard(response)
            auth_header = new_header
            rounds += 1

    def _send_once(
        self,
        method: str,
        url: httpx.URL,
        *,
        auth_header: str | None,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        content: Content,
        follow_redirects: bool,
        bulk: bool,
        timeout: httpx.Timeout | None,
    ) -> httpx.Response:
        merged = dict(headers or {})
        if auth_header is not None:
            merged["Authorization"] = auth_header
        if self.query and self.same_origin(url):
            params = {**self.query, **(params or {})}
        request = self._http.build_request(
            method,
            url,
            headers=merged,
            params=params,
            content=content,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        if bulk and method == "GET" and self._bulk_allowed(request.url):
            return self._send_bulk(request, follow_redirects=follow_redirects)
        return self._http.send(request, stream=True, follow_redirects=follow_redirects)

    # ------------------------------------------------------------------ bulk path
    def _bulk_allowed(self, url: httpx.URL) -> bool:
        if self._custom_transport:
            return False
        proxies = urllib.request.getproxies_environment()
        if not proxies:
            return True
        bypass = getattr(urllib.request, "proxy_bypass_environment", None)
        if bypass is not None and bypass(url.host, proxies):
            return True
        return not ({url.scheme, "all"} & {k.lower() for k in proxies})

    def _send_bulk(self, request: httpx.Request, *, follow_redirects: bool) -> httpx.Response:
        timeout = request.extensions.get("timeout", {}).get("read") or self.timeout
        for _hop in range(MAX_REDIRECTS + 1):
            self.stats.add_request()
            response = _bulk.send(
                request, ssl_context=self._ssl_context, timeout=timeout, pool=self._bulk_pool
            )
            location = response.headers.get("location")
            if not (follow_redirects and response.status_code in _REDIRECTS and location):
                return response
            response.close()
            next_url = request.url.join(location)
            next_headers = httpx.Headers(request.headers)
            if _origin(next_url) != _origin(request.url):
                upgrade = (
                    request.url.scheme == "http"
                    and next_url.scheme == "https"
                    and request.url.host == next_url.host
                )
                if not upgrade:
                    next_headers.pop("Authorization", None)
                next_headers["Host"] = next_url.netloc.decode("ascii")
            request = httpx.Request(
                "GET", next_url, headers=next_headers, extensions=request.extensions
            )
            if not self._bulk_allowed(next_url):
                return self._http.send(request, stream=True, follow_redirects=True)
        raise httpx.TooManyRedirects("too many redirects", request=request)

    # ------------------------------------------------------------------ bodies
    def _discard(self, response: httpx.Response) -> None:
        """Read a small body so the connection can be reused, then close."""
        try:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) <= MAX_ERROR_BODY:
                response.read()
        except httpx.HTTPError:
            pass
        finally:
            response.close()

    def _error_body(self, response: httpx.Response) -> bytes:
        out = bytearray()
        try:
            for chunk in iter_raw(response):
                out += chunk
                if len(out) >= MAX_ERROR_BODY:
                    break
        except httpx.HTTPError:
            pass
        finally:
            response.close()
        return bytes(out[:MAX_ERROR_BODY])

    def read_body(
        self,
        response: httpx.Response,
        cap: int,
        *,
        what: str,
        bound: TransferBound | None = None,
    ) -> bytes:
        """A whole small body (manifests, JSON), capped; transport errors translated.

        Read under ``bound``: the deadline its request ran under, so that one
        deadline covers the whole document (a new one when none is given).
        """
        try:
            with active(bound or self.deadline(f"read {what}", response.request.url)):
                return read_capped(response, cap, what=what)
        except httpx.TransportError as exc:
            raise self.network_error(exc, what=f"read {what}") from exc

    # ------------------------------------------------------------------ token service
    def _token_request(
        self,
        method: str,
        url: str,
        *,
        params: list[tuple[str, str]] | None,
        data: dict[str, str] | None,
        headers: dict[str, str],
        what: str,
    ) -> tuple[int, Mapping[str, str], bytes]:
        host = httpx.URL(url).host
        # the token service's own deadline: its retries and body included
        deadline = DocumentDeadline(self.document_deadline, host, what, httpx.URL(url))
        with active(deadline):
            state = self.retry.start()
            while True:
                state.begin()
                try:
                    request = self._http.build_request(
                        method,
                        url,
                        params=httpx.QueryParams(tuple(params)) if params else None,
                        data=data,
                        headers=headers,
                    )
                    response = self._http.send(request, stream=True, follow_redirects=True)
                except httpx.TransportError as exc:
                    final = isinstance(exc, BoundExceeded) or is_permanent(exc)
                    if not final and state.wait():
                        continue
                    raise network_error(
                        exc,
                        host=host,
                        what=what,
                        attempts=state.attempts,
                        scheme=httpx.URL(url).scheme,
                    ) from exc
                status = response.status_code
                if status in RETRY_STATUSES and state.can_retry():
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                    self._discard(response)
                    if state.wait(retry_after):
                        continue
                    return status, response.headers, b""
                try:
                    body = read_capped(response, MAX_TOKEN_RESPONSE, what=f"the answer to {what}")
                except httpx.TransportError as exc:
                    raise network_error(exc, host=host, what=what) from exc
                return status, response.headers, body

    # ------------------------------------------------------------------ public API
    def ping(self) -> None:
        """``GET /v2/``: checks that the registry answers and that the credentials work."""
        what = "check the registry API (/v2/)"
        deadline = self.deadline(what)
        response = self.request("GET", "/v2/", scopes=(), what=what, bound=deadline)
        with active(deadline):
            self._discard(response)

    def repository(self, name: str) -> RegistryTarget:
        """The target for one repository of this registry (read through its mirrors, if
        it has any)."""
        from modelreg.content.registry.target import RegistryTarget

        if self.mirrors:
            from modelreg.content.registry.mirrors import MirroredTarget

            return MirroredTarget(self, name, self.mirrors)
        return RegistryTarget(self, name)

    def referrers_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._referrer_locks.setdefault(key, threading.Lock())
