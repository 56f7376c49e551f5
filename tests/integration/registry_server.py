"""Run a real CNCF Distribution registry (``docker-registry`` 2.8) for tests.

Non-pytest API (usable from benchmarks too)::

    with start_registry(tmp_dir, auth="basic", tls=True) as server:
        httpx.get(f"{server.url}/v2/", verify=server.ssl_context(),
                  auth=(server.username, server.password))

Three flavours are supported:

* ``auth=None``: no authentication.
* ``auth="basic"``: htpasswd (bcrypt) basic auth.
* ``auth="token"``: Docker token auth; a :class:`TokenServer` runs in a thread
  and issues ES256 JWTs whose signing certificate chains to a generated CA.

``tls=True`` serves HTTPS with a certificate issued by a CA generated on the
fly (``server.ca_file``).  The registry config is written as JSON (valid YAML),
so PyYAML is not needed.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import http.client
import importlib
import ipaddress
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from modelreg.webhook.certs import key_usage

AuthKind = Literal["basic", "token"]
KeyHeader = Literal["x5c", "kid"]

REGISTRY_BIN_ENV = "MODELREG_TEST_REGISTRY_BIN"
DEFAULT_REGISTRY_BIN = "/usr/bin/docker-registry"
DEFAULT_USERNAME = "modelreg"
DEFAULT_PASSWORD = "s3cret-Passw0rd"
TOKEN_SERVICE = "modelreg-test-registry"
TOKEN_ISSUER = "modelreg-test-token-issuer"
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
_PORT_ATTEMPTS = 5


class RegistryError(RuntimeError):
    """The registry could not be started."""


class RegistryBinaryMissing(RegistryError):
    """``docker-registry`` is not installed."""


#: What the ``registry_factory`` fixture returns: call it like
#: :func:`start_registry` without ``tmp_dir``.
RegistryFactory = Callable[..., "RegistryServer"]


# --------------------------------------------------------------------------
# PKI
# --------------------------------------------------------------------------


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "modelreg tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass
class IssuedCert:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, cert_path: Path, key_path: Path) -> None:
        cert_path.write_bytes(_pem_cert(self.cert))
        key_path.write_bytes(_pem_key(self.key))
        key_path.chmod(0o600)


def _certificate(
    subject: x509.Name,
    issuer: x509.Name,
    public: ec.EllipticCurvePublicKey,
    *,
    ca: bool,
    days: int,
) -> x509.CertificateBuilder:
    """What the CA's and the leaves' certificates share: valid from an hour ago for
    ``days`` (an hour's leeway for clock skew), a CA's or an end entity's constraints
    and key usage, and the subject key identifier."""
    now = _utcnow()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(key_usage(sign=True, issue=ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


class CertificateAuthority:
    """A throw-away CA (ECDSA P-256) issuing server and signing certificates."""

    def __init__(self, common_name: str = "modelreg test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = _name(common_name)
        self.cert = _certificate(name, name, self.key.public_key(), ca=True, days=2).sign(
            self.key, hashes.SHA256()
        )

    @property
    def cert_pem(self) -> bytes:
        return _pem_cert(self.cert)

    def _leaf(
        self,
        common_name: str,
        extended_usage: list[x509.ObjectIdentifier],
        sans: list[x509.GeneralName] | None = None,
    ) -> IssuedCert:
        key = ec.generate_private_key(ec.SECP256R1())
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            _certificate(_name(common_name), self.cert.subject, key.public_key(), ca=False, days=1)
            .add_extension(x509.ExtendedKeyUsage(extended_usage), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return IssuedCert(builder.sign(self.key, hashes.SHA256()), key)

    def issue_server_cert(self, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> IssuedCert:
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        return self._leaf(hosts[0], [ExtendedKeyUsageOID.SERVER_AUTH], sans)

    def issue_signing_cert(self, common_name: str = "modelreg token signer") -> IssuedCert:
        return self._leaf(common_name, [ExtendedKeyUsageOID.CODE_SIGNING])


# --------------------------------------------------------------------------
# JWT (ES256) for the Docker token protocol
# --------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def libtrust_key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """The libtrust key ID: base32(sha256(DER SPKI)[:30]) in 4-char groups."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


class TokenSigner:
    """Signs JWTs with ES256; the key is identified by ``x5c`` or ``kid``."""

    def __init__(self, issued: IssuedCert, key_header: KeyHeader = "x5c") -> None:
        self.issued = issued
        self.key_header = key_header

    def header(self) -> dict[str, Any]:
        header: dict[str, Any] = {"typ": "JWT", "alg": "ES256"}
        if self.key_header == "x5c":
            der = self.issued.cert.public_bytes(serialization.Encoding.DER)
            header["x5c"] = [base64.b64encode(der).decode("ascii")]
        else:
            header["kid"] = libtrust_key_id(self.issued.key.public_key())
        return header

    def sign(self, claims: Mapping[str, Any]) -> str:
        def part(obj: Mapping[str, Any]) -> str:
            return b64url(json.dumps(obj, separators=(",", ":")).encode())

        signing_input = f"{part(self.header())}.{part(claims)}"
        der_sig = self.issued.key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der_sig)
        raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{b64url(raw)}"


def decode_jwt_claims(token: str) -> dict[str, Any]:
    """Decode (without verifying) the claims of a JWT; handy in tests."""
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload))
    return claims


# --------------------------------------------------------------------------
# Token server
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """A parsed ``type:name:actions`` scope."""

    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scope | None:
        resource_type, sep, rest = text.partition(":")
        name, sep2, actions = rest.rpartition(":")
        if not sep or not sep2 or not name:
            return None
        return cls(resource_type, name, tuple(a for a in actions.split(",") if a))


@dataclass(frozen=True)
class TokenRequest:
    """One request received by the token server."""

    method: str
    path: str
    service: str | None
    scopes: tuple[str, ...]
    username: str | None
    grant_type: str | None
    status: int


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenServer:
    """Docker token server (GET realm and OAuth2 POST) running in a thread.

    * Known users get every action they ask for, limited by ``user_actions``.
    * Anonymous requests get a token granting ``anonymous_actions`` (default:
      nothing, so the registry answers 401 with ``insufficient_scope``).
    * Wrong credentials get 401 from the token server itself.
    * Every request is recorded in :attr:`requests`.
    """

    def __init__(
        self,
        signer: TokenSigner,
        users: Mapping[str, str],
        *,
        service: str = TOKEN_SERVICE,
        issuer: str = TOKEN_ISSUER,
        user_actions: Mapping[str, frozenset[str]] | None = None,
        anonymous_actions: frozenset[str] = frozenset(),
        expires_in: int = 300,
        ssl_context: ssl.SSLContext | None = None,
        log_file: Path | None = None,
    ) -> None:
        self.signer = signer
        self.users = dict(users)
        self.service = service
        self.issuer = issuer
        self.user_actions = dict(user_actions or {})
        self.anonymous_actions = anonymous_actions
        self.expires_in = expires_in
        self.log_file = log_file
        self.requests: list[TokenRequest] = []
        self.refresh_tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._ssl_context = ssl_context
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("token server not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    def start(self) -> None:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        httpd.daemon_threads = True
        if self._ssl_context is not None:
            httpd.socket = self._ssl_context.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="modelreg-token-server",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection ----------------------------------------------------------

    def count(self, scope: str | None = None, method: str | None = None) -> int:
        """Number of recorded requests, optionally filtered by scope / method."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (scope is None or scope in r.scopes) and (method is None or r.method == method)
            )

    def reset(self) -> None:
        """Forget recorded requests (session-scoped servers are shared)."""
        with self._lock:
            self.requests.clear()

    def record(self, request: TokenRequest) -> None:
        with self._lock:
            self.requests.append(request)
            if self.log_file is not None:
                with self.log_file.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(request.__dict__) + "\n")

    # -- token logic ---------------------------------------------------------

    def check_password(self, username: str, password: str) -> bool:
        expected = self.users.get(username)
        return expected is not None and secrets.compare_digest(expected, password)

    def grant(self, username: str | None, scopes: list[str]) -> list[dict[str, Any]]:
        """Compute the ``access`` claim for a (possibly anonymous) user."""
        if username is None:
            allowed: frozenset[str] | None = self.anonymous_actions
        else:
            allowed = self.user_actions.get(username)
        access: list[dict[str, Any]] = []
        for text in scopes:
            scope = Scope.parse(text)
            if scope is None:
                continue
            actions = [a for a in scope.actions if allowed is None or a in allowed]
            if actions:
                access.append({"type": scope.type, "name": scope.name, "actions": actions})
        return access

    def issue(self, username: str | None, scopes: list[str]) -> tuple[str, float]:
        now = time.time()
        claims = {
            "iss": self.issuer,
            "sub": username or "",
            "aud": self.service,
            "exp": int(now) + self.expires_in,
            "nbf": int(now) - 1,
            "iat": int(now),
            "jti": secrets.token_hex(16),
            "access": self.grant(username, scopes),
        }
        return self.signer.sign(claims), now

    def new_refresh_token(self, username: str) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.refresh_tokens[token] = username
        return token

    def user_for_refresh_token(self, token: str) -> str | None:
        with self._lock:
            return self.refresh_tokens.get(token)


def _make_handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_TokenHandler):
        token_server = server

    return Handler


class _TokenHandler(BaseHTTPRequestHandler):
    token_server: TokenServer
    protocol_version = "HTTP/1.1"
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        log_file = self.token_server.log_file
        if log_file is not None:
            with log_file.open("a", encoding="utf-8") as fh:
                fh.write("access: " + (format % args) + "\n")

    # -- helpers -----------------------------------------------------------

    def _send_json(
        self, status: int, body: Mapping[str, Any], basic_challenge: bool = False
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if basic_challenge:
            self.send_header("WWW-Authenticate", 'Basic realm="modelreg-test-token"')
        self.end_headers()
        self.wfile.write(data)

    def _basic_credentials(self) -> tuple[str, str] | None:
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return user, password

    def _record(
        self,
        status: int,
        service: str | None,
        scopes: list[str],
        username: str | None,
        grant_type: str | None,
    ) -> None:
        path = urllib.parse.urlsplit(self.path).path
        self.token_server.record(
            TokenRequest(self.command, path, service, tuple(scopes), username, grant_type, status)
        )

    def _token_body(self, token: str, issued: float, scopes: list[str]) -> dict[str, Any]:
        return {
            "token": token,
            "access_token": token,
            "expires_in": self.token_server.expires_in,
            "issued_at": _iso(issued),
            "scope": " ".join(scopes),
        }

    # -- GET realm ---------------------------------------------------------

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        service = query.get("service", [None])[0]
        scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
        ts = self.token_server
        if url.path != "/token":
            self._record(404, service, scopes, None, None)
            self._send_json(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})
            return
        if service is not None and service != ts.service:
            self._record(400, service, scopes, None, None)
            self._send_json(400, {"errors": [{"code": "DENIED", "message": "unknown service"}]})
            return
        creds = self._basic_credentials()
        username = None
        if creds is not None:
            if not ts.check_password(*creds):
                self._record(401, service, scopes, creds[0], None)
                self._send_json(
                    401,
                    {"errors": [{"code": "UNAUTHORIZED", "message": "invalid credentials"}]},
                    basic_challenge=True,
                )
                return
            username = creds[0]
        token, issued = ts.issue(username, scopes)
        body = self._token_body(token, issued, scopes)
        if username is not None and query.get("offline_token", ["false"])[0] == "true":
            body["refresh_token"] = ts.new_refresh_token(username)
        self._record(200, service, scopes, username, None)
        self._send_json(200, body)

    # -- POST realm (OAuth2) -------------------------------------------------

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())

        def get(key: str) -> str | None:
            return form.get(key, [None])[0]

        service, grant_type = get("service"), get("grant_type")
        scopes = [s for value in form.get("scope", []) for s in value.split(" ") if s]
        ts = self.token_server
        if urllib.parse.urlsplit(self.path).path != "/token":
            self._record(404, service, scopes, None, grant_type)
            self._send_json(404, {"error": "not_found"})
            return
        username = self._oauth_user(grant_type, get)
        if isinstance(username, tuple):
            status, error = username
            self._record(status, service, scopes, get("username"), grant_type)
            self._send_json(status, {"error": error})
            return
        token, issued = ts.issue(username, scopes)
        body = self._token_body(token, issued, scopes)
        body.pop("token")
        body["refresh_token"] = (
            get("refresh_token")
            if grant_type == "refresh_token"
            else ts.new_refresh_token(username)
        )
        self._record(200, service, scopes, username, grant_type)
        self._send_json(200, body)

    def _oauth_user(
        self, grant_type: str | None, get: Callable[[str], str | None]
    ) -> str | tuple[int, str]:
        ts = self.token_server
        if grant_type == "password":
            user, password = get("username"), get("password")
            if user is None or password is None or not ts.check_password(user, password):
                return (401, "invalid_grant")
            return str(user)
        if grant_type == "refresh_token":
            user = ts.user_for_refresh_token(get("refresh_token") or "")
            return (401, "invalid_grant") if user is None else user
        return (400, "unsupported_grant_type")


# --------------------------------------------------------------------------
# Registry process
# --------------------------------------------------------------------------


@dataclass
class RegistryServer:
    """A running registry, as handed to tests."""

    host: str
    url: str
    scheme: str
    port: int
    auth: AuthKind | None
    username: str | None
    password: str | None
    ca_file: Path | None
    root_dir: Path
    log_file: Path
    config_file: Path
    token_server: TokenServer | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def ssl_context(self) -> ssl.SSLContext:
        """An SSL context trusting this registry's CA (system CAs otherwise).

        Pass it as ``verify=`` to httpx (httpx 0.28 deprecates path strings).
        """
        if self.ca_file is None:
            return ssl.create_default_context()
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        if self.username is None or self.password is None:
            return None
        return (self.username, self.password)

    def docker_config(self, tmp_path: Path) -> Path:
        """Write ``<tmp_path>/docker/config.json`` with ``auths`` for this host.

        Point ``DOCKER_CONFIG`` at the returned file's parent directory.
        """
        entry: dict[str, str] = {}
        if self.username is not None and self.password is not None:
            raw = f"{self.username}:{self.password}".encode()
            entry["auth"] = base64.b64encode(raw).decode("ascii")
        path = Path(tmp_path) / "docker" / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"auths": {self.host: entry}}, indent=2) + "\n")
        return path

    def log_text(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")


def registry_binary() -> Path:
    """The registry binary; raises :class:`RegistryBinaryMissing` if absent."""
    path = Path(os.environ.get(REGISTRY_BIN_ENV, DEFAULT_REGISTRY_BIN))
    if not path.is_file() or not os.access(path, os.X_OK):
        raise RegistryBinaryMissing(
            f"{path} not found: the integration tests need the Debian package "
            "'docker-registry' (CNCF Distribution 2.8); run `bash .ci/install-deps` "
            f"to install it (or set {REGISTRY_BIN_ENV})."
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``extra`` into a copy of ``base``."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def write_htpasswd(path: Path, username: str, password: str) -> None:
    """Write a bcrypt htpasswd file (``htpasswd -Bbn``, else python bcrypt)."""
    htpasswd = shutil.which("htpasswd")
    if htpasswd is not None:
        result = subprocess.run(
            [htpasswd, "-Bbn", username, password],
            check=True,
            capture_output=True,
            text=True,
        )
        path.write_text(result.stdout.strip() + "\n")
        return
    try:
        bcrypt = importlib.import_module("bcrypt")
    except ImportError as exc:
        raise RegistryError(
            "neither `htpasswd` (apache2-utils) nor python bcrypt is available; "
            "run `bash .ci/install-deps`"
        ) from exc
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()
    path.write_text(f"{username}:{hashed}\n")


def base_config(root_dir: Path, port: int) -> dict[str, Any]:
    return {
        "version": "0.1",
        "log": {
            "level": "info",
            "formatter": "text",
            "fields": {"service": "registry"},
        },
        "storage": {
            "filesystem": {"rootdirectory": str(root_dir)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {
            "addr": f"127.0.0.1:{port}",
            "secret": secrets.token_hex(16),
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
    }


@dataclass
class _Prepared:
    """Files and helpers prepared before the first start attempt."""

    config: dict[str, Any]
    username: str | None
    password: str | None
    ca_file: Path | None
    token_server: TokenServer | None


def _prepare(
    tmp_dir: Path,
    auth: AuthKind | None,
    tls: bool,
    username: str,
    password: str,
    token_options: Mapping[str, Any],
    stack: contextlib.ExitStack,
) -> _Prepared:
    pki_dir = tmp_dir / "pki"
    pki_dir.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {}
    ca: CertificateAuthority | None = None
    ca_file: Path | None = None
    server_ctx: ssl.SSLContext | None = None
    if tls or auth == "token":
        ca = CertificateAuthority()
        (pki_dir / "ca.pem").write_bytes(ca.cert_pem)
    if tls:
        ca_file = pki_dir / "ca.pem"
    if tls:
        assert ca is not None
        server = ca.issue_server_cert()
        server.write(pki_dir / "server.pem", pki_dir / "server-key.pem")
        config["http"] = {
            "tls": {
                "certificate": str(pki_dir / "server.pem"),
                "key": str(pki_dir / "server-key.pem"),
            }
        }
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(pki_dir / "server.pem", pki_dir / "server-key.pem")
    token_server: TokenServer | None = None
    if auth == "basic":
        write_htpasswd(pki_dir / "htpasswd", username, password)
        config["auth"] = {
            "htpasswd": {
                "realm": "modelreg-test-registry",
                "path": str(pki_dir / "htpasswd"),
            }
        }
    elif auth == "token":
        assert ca is not None
        token_server = _start_token_server(
            ca, pki_dir, tmp_dir, username, password, server_ctx, token_options, stack
        )
        config["auth"] = {
            "token": {
                "realm": token_server.realm,
                "service": token_server.service,
                "issuer": token_server.issuer,
                "rootcertbundle": str(pki_dir / "token-roots.pem"),
            }
        }
    elif auth is not None:
        raise ValueError(f"unknown auth kind {auth!r}")
    if auth is None:
        username_out = password_out = None
    else:
        username_out, password_out = username, password
    return _Prepared(config, username_out, password_out, ca_file, token_server)


def _start_token_server(
    ca: CertificateAuthority,
    pki_dir: Path,
    tmp_dir: Path,
    username: str,
    password: str,
    server_ctx: ssl.SSLContext | None,
    token_options: Mapping[str, Any],
    stack: contextlib.ExitStack,
) -> TokenServer:
    options = dict(token_options)
    key_header: KeyHeader = options.pop("key_header", "x5c")
    users = {username: password, **options.pop("users", {})}
    signing = ca.issue_signing_cert()
    signing.write(pki_dir / "token-signer.pem", pki_dir / "token-signer-key.pem")
    # The CA (for x5c chains) and the signing cert itself (for kid lookups).
    (pki_dir / "token-roots.pem").write_bytes(ca.cert_pem + _pem_cert(signing.cert))
    server = TokenServer(
        TokenSigner(signing, key_header),
        users,
        ssl_context=server_ctx,
        log_file=tmp_dir / "token-server.log",
        **options,
    )
    stack.enter_context(server)
    return server


def _probe(host: str, port: int, ctx: ssl.SSLContext | None) -> int | None:
    """GET /v2/ once; the HTTP status, or None if not reachable yet."""
    conn: http.client.HTTPConnection
    if ctx is None:
        conn = http.client.HTTPConnection(host, port, timeout=2)
    else:
        conn = http.client.HTTPSConnection(host, port, timeout=2, context=ctx)
    try:
        conn.request("GET", "/v2/")
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def _launch(binary: Path, config_file: Path, log_file: Path) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as log:
        return subprocess.Popen(
            [str(binary), "serve", str(config_file)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _wait_ready(
    process: subprocess.Popen[bytes],
    port: int,
    ctx: ssl.SSLContext | None,
    timeout: float,
) -> bool:
    """True when /v2/ answers 200/401; False if the process exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if _probe("127.0.0.1", port, ctx) in (200, 401):
            return True
        time.sleep(0.02)
    raise TimeoutError


def _start_process(
    binary: Path,
    tmp_dir: Path,
    root_dir: Path,
    prepared: _Prepared,
    extra_config: Mapping[str, Any],
    timeout: float,
) -> tuple[subprocess.Popen[bytes], int]:
    config_file = tmp_dir / "config.yml"
    log_file = tmp_dir / "registry.log"
    ctx = None
    if prepared.ca_file is not None:
        ctx = ssl.create_default_context(cafile=str(prepared.ca_file))
    for _attempt in range(_PORT_ATTEMPTS):
        port = free_port()
        config = deep_merge(deep_merge(base_config(root_dir, port), prepared.config), extra_config)
        config_file.write_text(json.dumps(config, indent=2) + "\n")
        log_start = log_file.stat().st_size if log_file.exists() else 0
        process = _launch(binary, config_file, log_file)
        try:
            ready = _wait_ready(process, port, ctx, timeout)
        except TimeoutError:
            _stop_process(process)
            raise RegistryError(
                f"registry did not become ready within {timeout}s; log:\n{_read_log(log_file)}"
            ) from None
        except BaseException:
            _stop_process(process)
            raise
        if ready:
            return process, port
        _stop_process(process)
        new_log = _read_log(log_file)[log_start:]
        if "address already in use" not in new_log:
            raise RegistryError(f"registry exited with {process.returncode}; log:\n{new_log}")
    raise RegistryError(f"could not bind a free port after {_PORT_ATTEMPTS} attempts")


def _read_log(log_file: Path) -> str:
    try:
        return log_file.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "<no log file>"


@contextlib.contextmanager
def start_registry(
    tmp_dir: Path | str,
    auth: AuthKind | None = None,
    tls: bool = False,
    *,
    extra_config: Mapping[str, Any] | None = None,
    username: str = DEFAULT_USERNAME,
    password: str = DEFAULT_PASSWORD,
    token_options: Mapping[str, Any] | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> Iterator[RegistryServer]:
    """Start ``docker-registry`` in ``tmp_dir``; stop it (and any token server) on exit.

    ``extra_config`` is deep-merged into the generated config (e.g.
    ``{"http": {"relativeurls": True}}``).  ``token_options`` are passed to
    :class:`TokenServer` (``anonymous_actions``, ``user_actions``,
    ``expires_in``, extra ``users``) plus ``key_header`` ("x5c" or "kid").
    """
    binary = registry_binary()
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    root_dir = tmp_dir / "storage"
    root_dir.mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        prepared = _prepare(tmp_dir, auth, tls, username, password, token_options or {}, stack)
        process, port = _start_process(
            binary, tmp_dir, root_dir, prepared, extra_config or {}, startup_timeout
        )
        stack.callback(_stop_process, process)
        scheme = "https" if tls else "http"
        yield RegistryServer(
            host=f"127.0.0.1:{port}",
            url=f"{scheme}://127.0.0.1:{port}",
            scheme=scheme,
            port=port,
            auth=auth,
            username=prepared.username,
            password=prepared.password,
            ca_file=prepared.ca_file,
            root_dir=root_dir,
            log_file=tmp_dir / "registry.log",
            config_file=tmp_dir / "config.yml",
            token_server=prepared.token_server,
            process=process,
        )
