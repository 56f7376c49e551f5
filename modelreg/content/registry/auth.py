"""Registry authentication: challenges, scopes, the token protocol, and a token cache.

* :func:`parse_www_authenticate` reads ``WWW-Authenticate`` values (RFC 9110 §11.6.1):
  several challenges per header and several headers, quoted values holding commas
  and escaped quotes, ``token68`` forms.
* :class:`Authenticator` answers a ``401`` for one registry: ``Basic`` with the
  stored username/password, or ``Bearer`` through the token service named by the
  challenge (``GET realm?service=…&scope=…`` anonymously or with Basic credentials,
  or the OAuth2 ``POST`` with ``grant_type=refresh_token`` for identity tokens).
  Tokens are cached per (realm, service, sorted scopes) until ``expires_in`` (60s
  when absent) and reused preemptively by later requests needing no more than the
  scopes they grant.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import httpx

from modelreg.content.registry._hosts import is_loopback
from modelreg.content.registry.credentials import Credential
from modelreg.content.registry.errors import error_for_response, sanitize
from modelreg.errors import AuthenticationError, ModelRegError

__all__ = [
    "Authenticator",
    "Challenge",
    "TokenCache",
    "TokenFetcher",
    "covers",
    "merge_scopes",
    "parse_scope",
    "parse_www_authenticate",
    "repository_scope",
]

DEFAULT_EXPIRES_IN: Final = 60
MAX_TOKEN_RESPONSE: Final = 1024 * 1024
CLIENT_ID: Final = "modelreg"
FRESH_WINDOW: Final = 5.0
"""A token refused within this many seconds of being issued is not fetched again."""

_TCHAR: Final = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN_RE: Final = re.compile(_TCHAR)
_TOKEN68_RE: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_WS: Final = " \t"


# --------------------------------------------------------------------------- challenges


@dataclass(frozen=True, slots=True)
class Challenge:
    """One authentication challenge: a scheme (lowercase) and its parameters."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)
    token68: str | None = None

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(s for s in (self.params.get("scope") or "").split(" ") if s)

    @property
    def error(self) -> str | None:
        return self.params.get("error")


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _quoted(text: str, pos: int) -> tuple[str, int]:
    """Parse a quoted-string starting at ``text[pos] == '"'``; unterminated runs to the end."""
    out = []
    pos += 1
    while pos < len(text):
        ch = text[pos]
        if ch == "\\" and pos + 1 < len(text):
            out.append(text[pos + 1])
            pos += 2
            continue
        if ch == '"':
            return "".join(out), pos + 1
        out.append(ch)
        pos += 1
    return "".join(out), pos


def _parse_one_header(text: str) -> list[Challenge]:
    challenges: list[Challenge] = []
    pos = 0
    n = len(text)
    while pos < n:
        pos = _skip(text, pos, _WS + ",")
        if pos >= n:
            break
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            # Garbage: skip to the next comma and try again.
            nxt = text.find(",", pos)
            pos = n if nxt < 0 else nxt + 1
            continue
        scheme = match.group().lower()
        pos = _skip(text, match.end(), _WS)
        params: dict[str, str] = {}
        token68: str | None = None
        if pos >= n or text[pos] == ",":
            challenges.append(Challenge(scheme, params, None))
            continue
        m68 = _TOKEN68_RE.match(text, pos)
        if m68 is not None:
            after = _skip(text, m68.end(), _WS)
            if after >= n or text[after] == ",":
                # "Negotiate abc==": a token68 credential instead of parameters.
                token68 = m68.group()
                challenges.append(Challenge(scheme, params, token68))
                pos = after
                continue
        while pos < n:
            start = _skip(text, pos, _WS + ",")
            name_match = _TOKEN_RE.match(text, start)
            if name_match is None:
                pos = start
                break
            eq = _skip(text, name_match.end(), _WS)
            if eq >= n or text[eq] != "=":
                # Not "name=": the start of the next challenge.
                pos = start
                break
            value_pos = _skip(text, eq + 1, _WS)
            if value_pos < n and text[value_pos] == '"':
                value, pos = _quoted(text, value_pos)
            else:
                value_match = _TOKEN_RE.match(text, value_pos)
                value = value_match.group() if value_match else ""
                pos = value_match.end() if value_match else value_pos
            params.setdefault(name_match.group().lower(), value)
            pos = _skip(text, pos, _WS)
            if pos < n and text[pos] != ",":
                # Junk after a value: skip to the next separator.
                nxt = text.find(",", pos)
                pos = n if nxt < 0 else nxt
        challenges.append(Challenge(scheme, params, token68))
    return challenges


def parse_www_authenticate(values: Iterable[str] | str) -> list[Challenge]:
    """Every challenge in one or several ``WWW-Authenticate`` header values."""
    if isinstance(values, str):
        values = [values]
    out: list[Challenge] = []
    for value in values:
        out.extend(_parse_one_header(value))
    return out


# --------------------------------------------------------------------------- scopes


def repository_scope(name: str, *actions: str) -> str:
    """``repository:NAME:pull,push``."""
    return f"repository:{name}:{','.join(actions)}"


def parse_scope(scope: str) -> tuple[str, str, frozenset[str]] | None:
    """``type:name:actions`` -> (type, name, actions); None when it does not parse."""
    resource_type, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not resource_type or not name:
        return None
    return resource_type, name, frozenset(a for a in actions.split(",") if a)


def merge_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Merge actions per resource and sort: a canonical form for cache keys."""
    merged: dict[tuple[str, str], set[str]] = {}
    opaque: set[str] = set()
    for scope in scopes:
        parsed = parse_scope(scope)
        if parsed is None:
            if scope:
                opaque.add(scope)
            continue
        merged.setdefault((parsed[0], parsed[1]), set()).update(parsed[2])
    out = [f"{t}:{n}:{','.join(sorted(a))}" for (t, n), a in merged.items()]
    return tuple(sorted(out) + sorted(opaque))


def covers(have: Sequence[str], want: Sequence[str]) -> bool:
    """True when a token granted for ``have`` is enough for ``want``."""
    granted: dict[tuple[str, str], set[str]] = {}
    opaque = set()
    for scope in have:
        parsed = parse_scope(scope)
        if parsed is None:
            opaque.add(scope)
        else:
            granted.setdefault((parsed[0], parsed[1]), set()).update(parsed[2])
    for scope in want:
        parsed = parse_scope(scope)
        if parsed is None:
            if scope not in opaque:
                return False
            continue
        actions = granted.get((parsed[0], parsed[1]))
        if actions is None or not (parsed[2] <= actions or "*" in actions):
            return False
    return True


# --------------------------------------------------------------------------- token cache


@dataclass(frozen=True)
class _Token:
    value: str = field(repr=False)
    scopes: tuple[str, ...]
    obtained: float
    expires_at: float

    def __repr__(self) -> str:
        return f"_Token(scopes={self.scopes!r}, expires_at={self.expires_at!r})"


CacheKey = tuple[str, str, tuple[str, ...]]


class TokenCache:
    """Bearer tokens per (realm, service, sorted scopes); thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[CacheKey, _Token] = {}
        self._lock = threading.Lock()

    def _valid(self, token: _Token, now: float) -> bool:
        lifetime = token.expires_at - token.obtained
        margin = min(10.0, lifetime / 10)
        return now < token.expires_at - margin

    def get(self, key: CacheKey) -> _Token | None:
        """The token for exactly these scopes, else one whose scopes cover them."""
        now = self._clock()
        with self._lock:
            token = self._tokens.get(key)
            if token is not None and self._valid(token, now):
                return token
            for (realm, service, scopes), candidate in self._tokens.items():
                if (
                    realm == key[0]
                    and service == key[1]
                    and self._valid(candidate, now)
                    and covers(scopes, key[2])
                ):
                    return candidate
        return None

    def put(self, key: CacheKey, value: str, expires_in: float) -> _Token:
        now = self._clock()
        token = _Token(value, key[2], now, now + expires_in)
        with self._lock:
            self._tokens = {k: t for k, t in self._tokens.items() if self._valid(t, now)}
            self._tokens[key] = token
        return token

    def find(self, value: str) -> tuple[CacheKey, _Token] | None:
        with self._lock:
            for key, token in self._tokens.items():
                if token.value == value:
                    return key, token
        return None

    def invalidate(self, value: str) -> None:
        with self._lock:
            self._tokens = {k: t for k, t in self._tokens.items() if t.value != value}

    def __len__(self) -> int:
        with self._lock:
            return len(self._tokens)


# --------------------------------------------------------------------------- authenticator


class TokenFetcher(Protocol):
    """Sends a request to a token service: returns (status, headers, capped body)."""

    def __call__(
        self,
        method: str,
        url: str,
        *,
        params: list[tuple[str, str]] | None,
        data: dict[str, str] | None,
        headers: dict[str, str],
        what: str,
    ) -> tuple[int, Mapping[str, str], bytes]: ...


def basic_header(credential: Credential) -> str:
    raw = f"{credential.username}:{credential.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


class Authenticator:
    """Authentication state for one registry: the scheme it asked for and the tokens.

    ``credentials`` is called lazily (at most once per need) and may return None
    (anonymous). ``plain_text`` tells whether requests to the registry travel
    unencrypted over a non-loopback network, to warn before sending a password.
    """

    def __init__(
        self,
        host: str,
        *,
        credentials: Callable[[], Credential | None],
        fetch: TokenFetcher,
        plain_text: Callable[[], bool],
        on_warning: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self._credentials = credentials
        self._fetch = fetch
        self._plain_text = plain_text
        self._warn = on_warning
        self._clock = clock
        self.cache = TokenCache(clock)
        self._lock = threading.Lock()
        self._key_locks: dict[CacheKey, threading.Lock] = {}
        self._scheme: str | None = None
        self._bearer: tuple[str, str] | None = None
        self._warned_plain = False

    def __repr__(self) -> str:
        return f"Authenticator(host={self.host!r}, scheme={self._scheme!r})"

    @property
    def scheme(self) -> str | None:
        """``basic``, ``bearer`` or None until the registry challenged us."""
        return self._scheme

    def has_credentials(self) -> bool:
        credential = self._credentials()
        return credential is not None and not credential.is_empty

    # ------------------------------------------------------------------ headers
    def authorization(self, scopes: Sequence[str]) -> str | None:
        """The header to send before any challenge, from what earlier answers taught us."""
        if self._scheme == "basic":
            return self._basic()
        if self._scheme == "bearer" and self._bearer is not None:
            realm, service = self._bearer
            return self._bearer_header((realm, service, merge_scopes(scopes)), sent=None)
        return None

    def respond(
        self, www_authenticate: Sequence[str], scopes: Sequence[str], sent: str | None
    ) -> str | None:
        """The header to retry a request answered ``401`` with, or None to give up."""
        challenges = parse_www_authenticate(www_authenticate)
        bearer = next((c for c in challenges if c.scheme == "bearer" and c.realm), None)
        if bearer is not None:
            assert bearer.realm is not None
            service = bearer.service or ""
            with self._lock:
                self._scheme = "bearer"
                self._bearer = (bearer.realm, service)
            key = (bearer.realm, service, merge_scopes([*scopes, *bearer.scopes]))
            if sent is not None and sent.startswith("Bearer "):
                found = self.cache.find(sent[len("Bearer ") :])
                if found is not None:
                    sent_key, token = found
                    if covers(sent_key[2], key[2]) and (
                        self._clock() - token.obtained < FRESH_WINDOW
                    ):
                        # A token issued moments ago for these very scopes was refused:
                        # another one would be refused too.
                        return None
                self.cache.invalidate(sent[len("Bearer ") :])
            return self._bearer_header(key, sent=sent)
        if any(c.scheme == "basic" for c in challenges):
            with self._lock:
                self._scheme = "basic"
            header = self._basic()
            return None if header is None or header == sent else header
        return None

    def invalidate(self, sent: str | None) -> None:
        """Forget a token the registry refused (so the next request fetches another)."""
        if sent and sent.startswith("Bearer "):
            self.cache.invalidate(sent[len("Bearer ") :])

    def unsupported_scheme(self, www_authenticate: Sequence[str]) -> str | None:
        """The scheme named when no challenge is one we speak (for the error message)."""
        challenges = parse_www_authenticate(www_authenticate)
        if not challenges or any(c.scheme in ("basic", "bearer") for c in challenges):
            return None
        return challenges[0].scheme

    # ------------------------------------------------------------------ basic
    def _basic(self) -> str | None:
        credential = self._credentials()
        if credential is None or not credential.has_password:
            return None
        if self._plain_text() and not self._warned_plain:
            self._warned_plain = True
            self._warn(
                f"sending the password for {self.host} over plain HTTP (--plain-http): anyone on "
                "the network path can read it"
            )
        return basic_header(credential)

    # ------------------------------------------------------------------ bearer
    def _bearer_header(self, key: CacheKey, *, sent: str | None) -> str | None:
        token = self.cache.get(key)
        if token is not None and f"Bearer {token.value}" != sent:
            return f"Bearer {token.value}"
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            token = self.cache.get(key)
            if token is not None and f"Bearer {token.value}" != sent:
                return f"Bearer {token.value}"
            value, expires_in = self._request_token(key)
            token = self.cache.put(key, value, expires_in)
        header = f"Bearer {token.value}"
        return None if header == sent else header

    def _request_token(self, key: CacheKey) -> tuple[str, float]:
        realm, service, scopes = key
        url = httpx.URL(realm)
        realm_label = sanitize(f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}{url.path}")
        if url.scheme not in ("http", "https") or not url.host:
            raise AuthenticationError(
                f"{self.host} named an invalid token service {realm_label!r}",
                hint="the registry's auth configuration is broken; report it to its operator",
            )
        credential = self._credentials()
        if credential is not None and credential.is_empty:
            credential = None
        if (
            credential is not None
            and url.scheme == "http"
            and not is_loopback(url.host)
            and not self._plain_text()
        ):
            raise AuthenticationError(
                f"{self.host} sends logins to the plain-HTTP token service {realm_label!r}; "
                "refusing to send credentials unencrypted",
                hint="the registry's token realm should be https; ask its operator to fix it",
            )
        what = f"get a token for {self.host} from {realm_label}"
        headers = {"Accept": "application/json"}
        data: dict[str, str] | None = None
        params: list[tuple[str, str]] | None = None
        if credential is not None and credential.identity_token:
            method = "POST"
            data = {
                "grant_type": "refresh_token",
                "refresh_token": credential.identity_token,
                "client_id": CLIENT_ID,
            }
            if service:
                data["service"] = service
            if scopes:
                data["scope"] = " ".join(scopes)
        else:
            method = "GET"
            params = []
            if service:
                params.append(("service", service))
            params.extend(("scope", s) for s in scopes)
            if credential is not None and credential.has_password:
                params.append(("account", credential.username))
                headers["Authorization"] = basic_header(credential)
        status, resp_headers, body = self._fetch(
            method, realm, params=params, data=data, headers=headers, what=what
        )
        if status in (401, 403):
            if credential is None:
                raise AuthenticationError(
                    f"the token service {realm_label} refused an anonymous token for {self.host} "
                    f"({status})",
                    hint=f"run `modelreg login {self.host}`",
                    status=status,
                )
            raise AuthenticationError(
                f"the token service {realm_label} rejected the credentials for {self.host} "
                f"({status})",
                hint=f"check the username and password (`modelreg login {self.host}`)",
                status=status,
            )
        if status != 200:
            error: ModelRegError = error_for_response(
                status, resp_headers, body, host=url.host, what=what
            )
            raise error
        return self._parse_token(body, realm_label)

    def _parse_token(self, body: bytes, realm_label: str) -> tuple[str, float]:
        try:
            obj = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            obj = None
        if not isinstance(obj, dict):
            raise AuthenticationError(
                f"the token service {realm_label} for {self.host} answered with something "
                "that is not a JSON token",
                hint="the registry's auth configuration is broken; report it to its operator",
            )
        value = obj.get("token") or obj.get("access_token")
        if not isinstance(value, str) or not value:
            raise AuthenticationError(
                f"the token service {realm_label} for {self.host} answered without a token",
                hint="the registry's auth configuration is broken; report it to its operator",
            )
        if any(ch in value for ch in "\r\n\x00"):
            raise AuthenticationError(
                f"the token service {realm_label} for {self.host} answered with a malformed token"
            )
        expires_in = obj.get("expires_in")
        if (
            not isinstance(expires_in, int | float)
            or isinstance(expires_in, bool)
            or (expires_in <= 0)
        ):
            expires_in = DEFAULT_EXPIRES_IN
        return value, float(expires_in)
