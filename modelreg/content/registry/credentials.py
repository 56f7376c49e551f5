"""Registry credentials from docker's ``config.json`` (and podman's ``auth.json``).

Lookup for a host, first match wins:

1. ``credHelpers[host]``: run ``docker-credential-<helper> get``;
2. ``credsStore``: the same with the default helper;
3. ``auths[host]``: ``auth`` (base64 ``user:password``), or ``username``/``password``,
   and ``identitytoken`` (an OAuth2 refresh token);
4. read-only fallbacks: ``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``,
   ``~/.config/containers/auth.json`` (``auths`` only).

Keys match by host with or without a scheme or path (``https://host/v1/``), and
``docker.io`` also matches ``index.docker.io`` and ``https://index.docker.io/v1/``.
The docker config is ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``.

:func:`login` and :func:`logout` write the same file atomically (temporary file,
mode 0600, rename), keep every other key, and go through the configured helper
when there is one. Secrets are handed to helpers on stdin, never on the command
line, and never appear in a ``repr``, a log or an error message.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from modelreg._fs import atomic_write
from modelreg.content.registry.errors import sanitize
from modelreg.errors import AuthenticationError, InvalidInputError

__all__ = [
    "Credential",
    "CredentialProvider",
    "CredentialStore",
    "StaticCredentials",
    "default_config_path",
    "login",
    "logout",
]

DOCKER_HUB: Final = "docker.io"
DOCKER_HUB_ALIASES: Final = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_KEY: Final = "https://index.docker.io/v1/"
IDENTITY_TOKEN_USER: Final = "<token>"  # noqa: S105 - a marker, not a secret
HELPER_TIMEOUT: Final = 30.0
_MAX_HELPER_OUTPUT: Final = 1024 * 1024
_MAX_CONFIG_BYTES: Final = 16 * 1024 * 1024
_HELPER_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NOT_FOUND_MARKERS: Final = ("credentials not found", "not found in native keychain")


@dataclass(frozen=True)
class Credential:
    """A username with a password, or an identity (refresh) token. Secrets never print."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)

    def __repr__(self) -> str:
        parts = [f"username={self.username!r}"]
        if self.password:
            parts.append("password='***'")
        if self.identity_token:
            parts.append("identity_token='***'")
        return f"Credential({', '.join(parts)})"

    __str__ = __repr__

    @property
    def has_password(self) -> bool:
        return bool(self.username and self.password)

    @property
    def is_empty(self) -> bool:
        return not (self.password or self.identity_token)


class CredentialProvider(Protocol):
    """Anything that can answer "which credential for this registry host?"."""

    def get(self, host: str) -> Credential | None: ...


class StaticCredentials:
    """The same credential for any host (``--username``/``--password``, tests, login checks)."""

    def __init__(
        self,
        credential: Credential | None = None,
        *,
        username: str = "",
        password: str = "",
        identity_token: str = "",
    ) -> None:
        self._credential = credential or Credential(username, password, identity_token)

    def get(self, host: str) -> Credential | None:
        return None if self._credential.is_empty else self._credential

    def __repr__(self) -> str:
        return f"StaticCredentials({self._credential!r})"


# ------------------------------------------------------------------------ host keys


def normalize_host(key: str) -> str:
    """``https://Host:5000/v1/`` -> ``host:5000``; docker hub aliases -> ``docker.io``."""
    text = key.strip()
    for prefix in ("https://", "http://"):
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
            break
    text = text.split("/", 1)[0].lower()
    if text in DOCKER_HUB_ALIASES:
        return DOCKER_HUB
    return text


def _server_urls(host: str) -> list[str]:
    """What to hand a credential helper, in order of preference."""
    if normalize_host(host) == DOCKER_HUB:
        return [DOCKER_HUB_KEY]
    return [host, f"https://{host}"]


def _matching_keys(mapping: Mapping[str, Any], host: str) -> list[str]:
    wanted = normalize_host(host)
    exact = [k for k in (host, f"https://{host}", f"http://{host}") if k in mapping]
    others = [k for k in mapping if k not in exact and normalize_host(k) == wanted]
    return exact + others


# ------------------------------------------------------------------------ config files


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$DOCKER_CONFIG/config.json`` else ``~/.docker/config.json``."""
    env = os.environ if env is None else env
    base = env.get("DOCKER_CONFIG")
    if base:
        return Path(base).expanduser() / "config.json"
    return Path.home() / ".docker" / "config.json"


def _resolve_config_path(path: str | os.PathLike[str] | None) -> Path:
    if path is None:
        return default_config_path()
    candidate = Path(path).expanduser()
    if candidate.is_dir():
        return candidate / "config.json"
    return candidate


def _read_json(path: Path, *, what: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InvalidInputError(
            f"cannot read the {what} {str(path)!r}: {exc.strerror or exc}",
            hint="check the file's permissions",
        ) from exc
    if len(data) > _MAX_CONFIG_BYTES:
        raise InvalidInputError(f"the {what} {str(path)!r} is over {_MAX_CONFIG_BYTES} bytes")
    if not data.strip():
        return {}
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        # The position only: the message must not quote content that may hold secrets.
        where = (
            f" at line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise InvalidInputError(
            f"the {what} {str(path)!r} is not valid JSON{where}",
            hint="fix or remove the file (`modelreg login` rewrites it)",
        ) from None
    if not isinstance(obj, dict):
        raise InvalidInputError(f"the {what} {str(path)!r} must hold a JSON object")
    return obj


def _auth_file_fallbacks(env: Mapping[str, str]) -> list[Path]:
    out = []
    if env.get("REGISTRY_AUTH_FILE"):
        out.append(Path(env["REGISTRY_AUTH_FILE"]).expanduser())
    if env.get("XDG_RUNTIME_DIR"):
        out.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    out.append(Path.home() / ".config" / "containers" / "auth.json")
    return out


def _credential_from_entry(entry: Any, path: Path, key: str) -> Credential | None:
    if not isinstance(entry, dict):
        return None
    username = entry.get("username") or ""
    password = entry.get("password") or ""
    raw = entry.get("auth")
    if isinstance(raw, str) and raw:
        try:
            decoded = base64.b64decode(raw, validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidInputError(
                f"the 'auth' entry for {key!r} in {str(path)!r} is not base64 'user:password'",
                hint=f"log in again with `modelreg login {normalize_host(key)}`",
            ) from exc
        user_part, sep, password_part = decoded.partition(":")
        if not sep:
            raise InvalidInputError(
                f"the 'auth' entry for {key!r} in {str(path)!r} does not hold 'user:password'",
                hint=f"log in again with `modelreg login {normalize_host(key)}`",
            )
        username, password = user_part, password_part
    identity = entry.get("identitytoken") or entry.get("identityToken") or ""
    if not isinstance(username, str) or not isinstance(password, str):
        return None
    if not isinstance(identity, str):
        identity = ""
    credential = Credential(username=username, password=password, identity_token=identity)
    return None if credential.is_empty else credential


# ------------------------------------------------------------------------ helpers


def _helper_command(name: str, path: Path) -> str:
    if not isinstance(name, str) or not _HELPER_NAME.match(name):
        raise InvalidInputError(
            f"invalid credential helper name {name!r} in {str(path)!r}",
            hint="a helper is named like 'desktop' or 'ecr-login' (docker-credential-<name>)",
        )
    return f"docker-credential-{name}"


def _run_helper(
    command: str, action: str, payload: str, *, timeout: float, host: str
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            [command, action],
            input=payload.encode("utf-8"),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise AuthenticationError(
            f"the credential helper {command!r} configured for {host} is not installed",
            hint=f"install {command} or remove it from the docker config (credsStore/credHelpers)",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise AuthenticationError(
            f"the credential helper {command!r} did not answer '{action}' for {host} "
            f"within {timeout:g}s",
            hint="unlock the keychain or check the helper; it may be waiting for input",
        ) from exc
    except OSError as exc:
        raise AuthenticationError(
            f"cannot run the credential helper {command!r} for {host}: {exc.strerror or exc}",
            hint=f"check that {command} is executable",
        ) from exc


def _helper_failure(command: str, action: str, host: str, result: Any) -> AuthenticationError:
    output = (result.stderr or result.stdout or b"")[:400].decode("utf-8", "replace")
    first = sanitize(output.strip().splitlines()[0] if output.strip() else "", 160)
    said = f": {first}" if first else ""
    return AuthenticationError(
        f"the credential helper {command!r} failed to {action} credentials for {host} "
        f"(exit {result.returncode}){said}",
        hint=f"run `{command} list` to check the helper, or log in again",
    )


def _is_not_found(result: subprocess.CompletedProcess[bytes]) -> bool:
    text = (result.stdout + result.stderr)[:4096].decode("utf-8", "replace").lower()
    return any(marker in text for marker in _NOT_FOUND_MARKERS)


def helper_get(
    name: str, host: str, *, path: Path, timeout: float = HELPER_TIMEOUT
) -> Credential | None:
    """Ask ``docker-credential-<name>`` for the credential of ``host``."""
    command = _helper_command(name, path)
    for server_url in _server_urls(host):
        result = _run_helper(command, "get", server_url, timeout=timeout, host=host)
        if result.returncode != 0:
            if _is_not_found(result):
                continue
            raise _helper_failure(command, "get", host, result)
        if len(result.stdout) > _MAX_HELPER_OUTPUT:
            raise AuthenticationError(f"the credential helper {command!r} answered too much data")
        try:
            obj = json.loads(result.stdout)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise AuthenticationError(
                f"the credential helper {command!r} answered 'get' for {host} with invalid JSON",
                hint=f"check the helper with `{command} list`",
            ) from None
        if not isinstance(obj, dict):
            continue
        username = obj.get("Username") or ""
        secret = obj.get("Secret") or ""
        if not isinstance(username, str) or not isinstance(secret, str) or not secret:
            continue
        if username == IDENTITY_TOKEN_USER:
            return Credential(identity_token=secret)
        return Credential(username=username, password=secret)
    return None


def _helper_store(
    name: str, host: str, username: str, password: str, *, path: Path, timeout: float
) -> None:
    command = _helper_command(name, path)
    server_url = _server_urls(host)[0]
    payload = json.dumps({"ServerURL": server_url, "Username": username, "Secret": password})
    result = _run_helper(command, "store", payload, timeout=timeout, host=host)
    if result.returncode != 0:
        raise _helper_failure(command, "store", host, result)


def _helper_erase(name: str, host: str, *, path: Path, timeout: float) -> bool:
    command = _helper_command(name, path)
    erased = False
    for server_url in _server_urls(host):
        result = _run_helper(command, "erase", server_url, timeout=timeout, host=host)
        if result.returncode == 0:
            erased = True
        elif not _is_not_found(result):
            raise _helper_failure(command, "erase", host, result)
    return erased


# ------------------------------------------------------------------------ the store


class CredentialStore:
    """Reads docker's config (and podman's auth.json) to find credentials for a host.

    ``config_path`` is the ``config.json`` file or the directory holding it; by
    default ``$DOCKER_CONFIG/config.json`` else ``~/.docker/config.json``. The
    file is read at each :meth:`get`, so a ``login`` in between is picked up.
    """

    def __init__(
        self,
        config_path: str | os.PathLike[str] | None = None,
        *,
        auth_files: list[Path] | None = None,
        env: Mapping[str, str] | None = None,
        helper_timeout: float = HELPER_TIMEOUT,
    ) -> None:
        self._env = dict(os.environ if env is None else env)
        if config_path is None:
            self.config_path = default_config_path(self._env)
        else:
            self.config_path = _resolve_config_path(config_path)
        self._auth_files = auth_files if auth_files is not None else _auth_file_fallbacks(self._env)
        self.helper_timeout = helper_timeout

    def __repr__(self) -> str:
        return f"CredentialStore(config_path={str(self.config_path)!r})"

    def get(self, host: str) -> Credential | None:
        config = _read_json(self.config_path, what="docker config")
        helpers = config.get("credHelpers")
        if isinstance(helpers, dict):
            for key in _matching_keys(helpers, host):
                return helper_get(
                    helpers[key], host, path=self.config_path, timeout=self.helper_timeout
                )
        store = config.get("credsStore")
        if isinstance(store, str) and store:
            found = helper_get(store, host, path=self.config_path, timeout=self.helper_timeout)
            if found is not None:
                return found
        found = self._from_auths(config, self.config_path, host)
        if found is not None:
            return found
        for path in self._auth_files:
            if path == self.config_path:
                continue
            found = self._from_auths(_read_json(path, what="auth file"), path, host)
            if found is not None:
                return found
        return None

    @staticmethod
    def _from_auths(config: Mapping[str, Any], path: Path, host: str) -> Credential | None:
        auths = config.get("auths")
        if not isinstance(auths, dict):
            return None
        for key in _matching_keys(auths, host):
            found = _credential_from_entry(auths[key], path, key)
            if found is not None:
                return found
        return None


# ------------------------------------------------------------------------ writing


def _write_atomic(path: Path, obj: Mapping[str, Any]) -> None:
    """Write JSON to ``path`` via a 0600 temporary file in the same directory + rename."""
    target = Path(os.path.realpath(path))
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = (json.dumps(obj, indent="\t") + "\n").encode("utf-8")
    atomic_write(target, data, mode=0o600, sync_dir=True)


def _helper_for(config: Mapping[str, Any], host: str) -> str | None:
    helpers = config.get("credHelpers")
    if isinstance(helpers, dict):
        for key in _matching_keys(helpers, host):
            value = helpers[key]
            return value if isinstance(value, str) else None
    store = config.get("credsStore")
    return store if isinstance(store, str) and store else None


def _auth_key(auths: Mapping[str, Any], host: str) -> str:
    existing = _matching_keys(auths, host)
    if existing:
        return existing[0]
    return DOCKER_HUB_KEY if normalize_host(host) == DOCKER_HUB else host


def login(
    host: str,
    username: str,
    password: str,
    *,
    config_path: str | os.PathLike[str] | None = None,
    helper_timeout: float = HELPER_TIMEOUT,
) -> Path:
    """Store credentials for ``host``; returns the config file written.

    With a ``credHelpers`` entry for the host or a ``credsStore``, the secret goes
    to the helper (``store``) and the file only records the host; otherwise the
    file's ``auths`` entry gets ``auth`` = base64 ``user:password``.
    """
    if not username or not password:
        raise InvalidInputError(
            f"login to {host!r} needs a username and a password",
            hint="pass --username and --password-stdin",
        )
    path = _resolve_config_path(config_path)
    config = _read_json(path, what="docker config")
    auths = config.get("auths")
    if not isinstance(auths, dict):
        auths = {}
    key = _auth_key(auths, host)
    previous = auths.get(key)
    entry: dict[str, Any] = dict(previous) if isinstance(previous, dict) else {}
    for secret_key in ("auth", "username", "password", "identitytoken", "identityToken"):
        entry.pop(secret_key, None)
    helper = _helper_for(config, host)
    if helper is not None:
        _helper_store(helper, host, username, password, path=path, timeout=helper_timeout)
    else:
        entry["auth"] = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    auths[key] = entry
    config["auths"] = auths
    _write_atomic(path, config)
    return path


def logout(
    host: str,
    *,
    config_path: str | os.PathLike[str] | None = None,
    helper_timeout: float = HELPER_TIMEOUT,
) -> bool:
    """Forget the credentials for ``host``; True when something was removed."""
    path = _resolve_config_path(config_path)
    config = _read_json(path, what="docker config")
    removed = False
    helper = _helper_for(config, host)
    if helper is not None:
        removed = _helper_erase(helper, host, path=path, timeout=helper_timeout)
    auths = config.get("auths")
    if isinstance(auths, dict):
        keys = _matching_keys(auths, host)
        for key in keys:
            del auths[key]
        if keys:
            removed = True
            _write_atomic(path, config)
    return removed
