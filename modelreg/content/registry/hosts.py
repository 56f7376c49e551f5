"""Per-host registry configuration, read from the files cluster nodes already have.

A node that runs containerd says how to reach each registry in a ``certs.d``-style
directory: ``DIR/HOST[:PORT]/hosts.toml`` (``DIR/_default/hosts.toml`` for any host
without a directory of its own). Hosts running podman or CRI-O say it in
containers-registries.conf (``[[registry]]`` with ``[[registry.mirror]]``). modelreg
reads both, so a model pulled on a node goes through the same mirrors and trusts the
same CAs as the images on it, and a user who needs a private CA or plain HTTP for one
host writes it once instead of passing ``--ca-file`` to every command.

Where the files are looked for (decided once per :class:`HostsResolver`):

* **certs.d directories**, first match wins per host: ``--hosts-dir`` (a list separated
  by ``:``) if given, else ``$MODELREG_HOSTS_DIR`` if set (``""``: none), else
  ``$XDG_CONFIG_HOME/modelreg/certs.d`` (``~/.config/modelreg/certs.d``: modelreg's own
  per-host settings, in the same format), then ``/etc/containerd/certs.d``. In every
  directory, ``HOST[:PORT]`` is tried before ``_default``; the first directory with either
  decides (directories are not merged: one file says everything about a host).
* **registries.conf**, only for a host no ``hosts.toml`` configures:
  ``$MODELREG_REGISTRIES_CONF`` if set (``""``: none), else
  ``$XDG_CONFIG_HOME/containers/registries.conf`` if it exists, else
  ``/etc/containers/registries.conf``. An explicit ``--hosts-dir`` turns this default
  off: the directory given is then the whole configuration.

What ``hosts.toml`` may say (containerd's keys; the top level is the upstream itself):

* ``server = "https://HOST"``: where the upstream is (an ``http://`` URL means plain
  HTTP); default ``https://`` + the directory's host (Docker Hub: its API host).
* ``[host."URL"]`` tables, in file order: the mirrors, tried before the server.
* In both: ``capabilities`` (``pull``: blobs and manifests by digest; ``resolve``: tags;
  ``push``; default all three), ``ca`` (a path or list of paths, relative to the file's
  directory), ``client`` (a path, a ``[cert, key]`` pair, or a list of either),
  ``skip_verify``, ``override_path`` (the URL's path is the API root, for registries
  without ``/v2``), ``header`` (a table of name to value or list of values),
  ``dial_timeout`` (a Go duration such as ``"500ms"``: how long to wait to connect).

From registries.conf (v2 format), entries whose ``prefix`` (else ``location``) is a bare
host are used: ``location`` (another host serving the upstream), ``insecure`` (TLS not
verified), ``blocked``, ``mirror-by-digest-only``, and each ``[[registry.mirror]]`` with
``location``, ``insecure`` and ``pull-from-mirror`` (``digest-only`` allows ``pull`` only).
Entries for a namespace (``prefix = "host/team"``) would need repository rewriting that
modelreg does not do; they are listed as ignored by ``modelreg hosts``.

Every file here is written by an operator, not by whoever serves the model, but a typo
must not quietly send traffic somewhere else: the parse is strict, unknown keys and wrong
types are errors naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

from modelreg.content.registry._hosts import split_host
from modelreg.content.registry.credentials import DOCKER_HUB, normalize_host
from modelreg.errors import InvalidInputError

__all__ = [
    "CAPABILITIES",
    "DEFAULT_CERTS_DIRS",
    "DEFAULT_REGISTRIES_CONF",
    "Endpoint",
    "HostConfig",
    "HostOverride",
    "HostsResolver",
    "parse_endpoint",
    "parse_hosts_toml",
    "parse_registries_conf",
]

CAPABILITIES: Final = ("pull", "resolve", "push")
DEFAULT_CERTS_DIRS: Final = ("/etc/containerd/certs.d",)
"""System certs.d directories, after modelreg's own (``~/.config/modelreg/certs.d``)."""
DEFAULT_REGISTRIES_CONF: Final = "/etc/containers/registries.conf"
MAX_CONFIG_BYTES: Final = 1024 * 1024
"""A hosts file larger than this is not a hosts file."""
DOCKER_HUB_SERVER: Final = "registry-1.docker.io"

_HOST_KEYS: Final = frozenset(
    {"capabilities", "ca", "client", "skip_verify", "override_path", "header", "dial_timeout"}
)
_DURATION_RE: Final = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


@dataclass(frozen=True)
class Endpoint:
    """One place to send requests for a registry namespace: a mirror or the server."""

    scheme: str
    """``https`` or ``http``."""
    host: str
    """``name[:port]`` as requests address it."""
    api_root: str = "/v2"
    """The path the distribution API lives under (``/v2``, or the URL's own path with
    ``override_path``)."""
    capabilities: frozenset[str] = frozenset(CAPABILITIES)
    ca_files: tuple[str, ...] = ()
    client_certs: tuple[tuple[str, str | None], ...] = ()
    skip_verify: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    dial_timeout: float | None = None
    source: str = ""
    """Where it was configured (``FILE [host."URL"]``), or empty for the default."""
    explicit: bool = False
    """True when the configuration spelled the scheme out (no HTTPS-then-HTTP probe of
    a loopback host: the file said which)."""

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}{self.api_root}"

    @property
    def plain_http(self) -> bool:
        return self.scheme == "http"

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (paths only: no certificate or key is read here)."""
        return {
            "url": self.url,
            "capabilities": sorted(self.capabilities, key=CAPABILITIES.index),
            "plainHttp": self.plain_http,
            "skipVerify": self.skip_verify,
            "caFiles": list(self.ca_files),
            "clientCertificates": [{"cert": cert, "key": key} for cert, key in self.client_certs],
            "headers": sorted({name for name, _ in self.headers}),
            "dialTimeout": self.dial_timeout,
            "source": self.source,
        }


@dataclass(frozen=True)
class HostConfig:
    """What the configuration says about one registry host (the one in a reference)."""

    host: str
    server: Endpoint
    mirrors: tuple[Endpoint, ...] = ()
    files: tuple[str, ...] = ()
    """The configuration files that decided this host's settings."""
    configured: bool = False
    """False when no file mentions the host (``server`` is then the default)."""
    blocked: bool = False
    notes: tuple[str, ...] = field(default=())
    """Things in the files that were read but do not apply (said by ``modelreg hosts``)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "configured": self.configured,
            "files": list(self.files),
            "blocked": self.blocked,
            "server": self.server.to_dict(),
            "mirrors": [m.to_dict() for m in self.mirrors],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class HostOverride:
    """Settings for one host given on the command line (``cp --from-ca-file ...``):
    they beat the flags for every host and the files. None: not given."""

    plain_http: bool | None = None
    insecure: bool | None = None
    ca_file: str | None = None

    def __bool__(self) -> bool:
        return self != HostOverride()

    def to_dict(self) -> dict[str, Any]:
        return {"plainHttp": self.plain_http, "insecure": self.insecure, "caFile": self.ca_file}


def default_server(host: str) -> Endpoint:
    """The upstream when nothing configures it: HTTPS to the host (Docker Hub: its API)."""
    return Endpoint("https", DOCKER_HUB_SERVER if normalize_host(host) == DOCKER_HUB else host)


# ------------------------------------------------------------------ hosts.toml


def _fail(path: str, key: str, problem: str, hint: str | None = None) -> InvalidInputError:
    where = f"{path}: {key}" if key else path
    return InvalidInputError(
        f"{where}: {problem}",
        hint=hint or "fix or remove the entry; see `modelreg hosts --help` for the format",
    )


def _parse_url(
    text: object, *, path: str, key: str, override_path: bool
) -> tuple[str, str, str, bool]:
    """``scheme://host[:port][/path]`` -> (scheme, host, api root, scheme given)."""
    if not isinstance(text, str) or not text:
        raise _fail(path, key, f"expected a URL string, got {text!r}")
    candidate = text if "://" in text else f"https://{text}"
    try:
        url = httpx.URL(candidate)
    except (httpx.InvalidURL, ValueError) as exc:
        raise _fail(path, key, f"{text!r} is not a URL ({exc})") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise _fail(path, key, f"{text!r} is not an http:// or https:// URL with a host")
    if url.query or url.fragment or url.userinfo:
        raise _fail(
            path,
            key,
            f"{text!r} has a query, fragment or user name",
            hint="credentials belong in the docker config (modelreg login), not in URLs",
        )
    host = url.netloc.decode("ascii").lower()
    root = url.path.rstrip("/")
    if override_path:
        if not root:
            raise _fail(path, key, "override_path needs a URL with the API's path in it")
    elif not root.endswith("/v2"):
        # containerd's rule: without override_path the API is under /v2 of the URL's path
        root = f"{root}/v2"
    return url.scheme, host, root, "://" in text


def parse_endpoint(text: str, *, source: str, capabilities: frozenset[str]) -> Endpoint:
    """An endpoint named on the command line (``prefetch --via URL``): ``HOST[:PORT]``
    (HTTPS; a loopback host is probed) or ``http(s)://HOST[:PORT][/PATH]``."""
    scheme, host, root, explicit = _parse_url(text, path=source, key="", override_path=False)
    return Endpoint(
        scheme, host, api_root=root, capabilities=capabilities, source=source, explicit=explicit
    )


def _paths(value: object, *, base: Path, path: str, key: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
        raise _fail(path, key, f"expected a path or a list of paths, got {value!r}")
    return tuple(str(base / v) if not os.path.isabs(v) else v for v in items)


def _client_certs(
    value: object, *, base: Path, path: str, key: str
) -> tuple[tuple[str, str | None], ...]:
    def one(item: object) -> tuple[str, str | None]:
        if isinstance(item, str) and item:
            return (_paths(item, base=base, path=path, key=key)[0], None)
        if isinstance(item, list) and len(item) == 2 and all(isinstance(v, str) for v in item):
            if not item[0]:
                raise _fail(path, key, "a client certificate pair needs the certificate's path")
            cert = _paths(item[0], base=base, path=path, key=key)[0]
            # an empty key: the certificate file holds the key too (containerd's spelling)
            private = _paths(item[1], base=base, path=path, key=key)[0] if item[1] else None
            return (cert, private)
        raise _fail(path, key, f"expected a certificate path or a [cert, key] pair, got {item!r}")

    if isinstance(value, str):
        return (one(value),)
    if not isinstance(value, list):
        raise _fail(path, key, "expected a path, a [cert, key] pair or a list of them")
    if len(value) == 2 and all(isinstance(v, str) for v in value):
        # containerd reads client = ["cert", "key"] as one pair
        return (one(value),)
    return tuple(one(item) for item in value)


def _headers(value: object, *, path: str, key: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise _fail(path, key, "expected a table of header names to values")
    out: list[tuple[str, str]] = []
    for name, raw in value.items():
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
            raise _fail(path, f"{key}.{name}", "not a valid HTTP header name")
        if name.lower() in ("authorization", "host", "content-length", "transfer-encoding"):
            raise _fail(
                path,
                f"{key}.{name}",
                "modelreg sets this header itself",
                hint="credentials belong in the docker config (modelreg login)",
            )
        values = [raw] if isinstance(raw, str) else raw
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise _fail(path, f"{key}.{name}", "expected a string or a list of strings")
        for item in values:
            if "\r" in item or "\n" in item:
                raise _fail(path, f"{key}.{name}", "a header value may not contain a line break")
            out.append((name, item))
    return tuple(out)


def _duration(value: object, *, path: str, key: str) -> float:
    if not isinstance(value, str) or not value:
        raise _fail(path, key, f'expected a duration such as "500ms" or "2s", got {value!r}')
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(value) or total <= 0:
        raise _fail(path, key, f'{value!r} is not a positive duration such as "500ms" or "2s"')
    return total


def _capabilities(value: object, *, path: str, key: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(path, key, f'expected a list such as ["pull", "resolve"], got {value!r}')
    unknown = sorted(set(value) - set(CAPABILITIES))
    if unknown:
        raise _fail(path, key, f"unknown capabilities {unknown}; known: {list(CAPABILITIES)}")
    return frozenset(value)


def _endpoint(
    table: Mapping[str, Any],
    url: object,
    *,
    base: Path,
    path: str,
    prefix: str,
    source: str,
) -> Endpoint:
    """An endpoint from the keys of one table (the top level or a ``[host."URL"]``)."""

    def key(name: str) -> str:
        return f"{prefix}{name}"

    override = table.get("override_path", False)
    if not isinstance(override, bool):
        raise _fail(path, key("override_path"), "expected true or false")
    skip = table.get("skip_verify", False)
    if not isinstance(skip, bool):
        raise _fail(path, key("skip_verify"), "expected true or false")
    scheme, host, root, explicit = _parse_url(
        url, path=path, key=prefix.rstrip(".") or "server", override_path=override
    )
    return Endpoint(
        scheme=scheme,
        host=host,
        api_root=root,
        capabilities=(
            _capabilities(table["capabilities"], path=path, key=key("capabilities"))
            if "capabilities" in table
            else frozenset(CAPABILITIES)
        ),
        ca_files=_paths(table["ca"], base=base, path=path, key=key("ca")) if "ca" in table else (),
        client_certs=(
            _client_certs(table["client"], base=base, path=path, key=key("client"))
            if "client" in table
            else ()
        ),
        skip_verify=skip,
        headers=_headers(table["header"], path=path, key=key("header"))
        if "header" in table
        else (),
        dial_timeout=(
            _duration(table["dial_timeout"], path=path, key=key("dial_timeout"))
            if "dial_timeout" in table
            else None
        ),
        source=source,
        explicit=explicit,
    )


def _toml(text: str, path: str) -> dict[str, Any]:
    """The TOML document ``text`` (read from ``path``), refused in the same words
    whichever of the two configuration files it is."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _fail(path, "", f"not valid TOML: {exc}") from exc


def parse_hosts_toml(text: str, *, path: str, host: str) -> HostConfig:
    """The configuration of ``host`` from the text of its ``hosts.toml`` at ``path``.

    ``host`` is the registry the reference names (for ``_default``: any host).
    Relative certificate paths are relative to the file's directory.
    """
    doc = _toml(text, path)
    unknown = sorted(set(doc) - _HOST_KEYS - {"server", "host"})
    if unknown:
        raise _fail(
            path,
            unknown[0],
            "unknown key",
            hint=f"hosts.toml knows server, host and {', '.join(sorted(_HOST_KEYS))}",
        )
    base = Path(path).parent
    default = default_server(host)
    server_url = doc.get("server", f"{default.scheme}://{default.host}")
    server = _endpoint(doc, server_url, base=base, path=path, prefix="", source=path)
    if "server" not in doc:
        # the scheme was not written down: a loopback host is still probed for TLS
        server = dataclasses.replace(server, explicit=False)
    hosts = doc.get("host", {})
    if not isinstance(hosts, dict):
        raise _fail(path, "host", 'expected [host."URL"] tables')
    mirrors: list[Endpoint] = []
    for url, table in hosts.items():  # tomllib keeps the file's order
        name = f'host."{url}"'
        if not isinstance(table, dict):
            raise _fail(path, name, "expected a table")
        extra = sorted(set(table) - _HOST_KEYS)
        if extra:
            raise _fail(
                path,
                f"{name}.{extra[0]}",
                "unknown key",
                hint=f"a host table knows {', '.join(sorted(_HOST_KEYS))}",
            )
        mirrors.append(
            _endpoint(table, url, base=base, path=path, prefix=f"{name}.", source=f"{path} {name}")
        )
    return HostConfig(
        host=host, server=server, mirrors=tuple(mirrors), files=(path,), configured=True
    )


# ------------------------------------------------------------ registries.conf


@dataclass(frozen=True)
class _ConfEntry:
    prefix: str
    location: str
    insecure: bool
    blocked: bool
    mirrors: tuple[Endpoint, ...]


_REGISTRY_KEYS: Final = frozenset(
    {"prefix", "location", "insecure", "blocked", "mirror", "mirror-by-digest-only"}
)
_MIRROR_KEYS: Final = frozenset({"location", "insecure", "pull-from-mirror"})
# keys of registries.conf that say nothing about how to reach a host
_CONF_OTHER_KEYS: Final = frozenset(
    {"unqualified-search-registries", "short-name-mode", "credential-helpers", "aliases"}
)


def _conf_bool(table: Mapping[str, Any], name: str, *, path: str, key: str) -> bool:
    value = table.get(name, False)
    if not isinstance(value, bool):
        raise _fail(path, f"{key}.{name}", "expected true or false")
    return value


def _conf_mirror(table: object, *, path: str, key: str, digest_only: bool) -> Endpoint:
    if not isinstance(table, dict):
        raise _fail(path, key, "expected a [[registry.mirror]] table")
    extra = sorted(set(table) - _MIRROR_KEYS)
    if extra:
        raise _fail(path, f"{key}.{extra[0]}", "unknown key")
    location = table.get("location")
    if not isinstance(location, str) or not location or "/" in location or "://" in location:
        raise _fail(
            path,
            f"{key}.location",
            f"expected a registry host such as mirror.example.com:5000, got {location!r}",
            hint="mirrors with a repository path are not supported by modelreg",
        )
    mode = table.get("pull-from-mirror", "all")
    if mode not in ("all", "digest-only", "tag-only"):
        raise _fail(path, f"{key}.pull-from-mirror", "expected all, digest-only or tag-only")
    caps = {"pull"} if digest_only or mode == "digest-only" else {"pull", "resolve"}
    return Endpoint(
        "https",
        location.lower(),
        capabilities=frozenset(caps),
        skip_verify=_conf_bool(table, "insecure", path=path, key=key),
        source=f"{path} {key}",
    )


def parse_registries_conf(text: str, *, path: str) -> list[_ConfEntry]:
    """The ``[[registry]]`` entries of a containers-registries.conf (v2 format)."""
    doc = _toml(text, path)
    unknown = sorted(set(doc) - _CONF_OTHER_KEYS - {"registry", "registries"})
    if unknown:
        raise _fail(path, unknown[0], "unknown key")
    if "registries" in doc:
        raise _fail(
            path,
            "registries",
            "the v1 format of registries.conf is not supported",
            hint="convert the file to the v2 format ([[registry]] tables)",
        )
    tables = doc.get("registry", [])
    if not isinstance(tables, list):
        raise _fail(path, "registry", "expected [[registry]] tables")
    entries: list[_ConfEntry] = []
    for i, table in enumerate(tables):
        key = f"registry[{i}]"
        if not isinstance(table, dict):
            raise _fail(path, key, "expected a table")
        extra = sorted(set(table) - _REGISTRY_KEYS)
        if extra:
            raise _fail(path, f"{key}.{extra[0]}", "unknown key")
        location = table.get("location", "")
        prefix = table.get("prefix", location)
        if not isinstance(location, str) or not isinstance(prefix, str) or not prefix:
            raise _fail(path, key, "needs a prefix or a location string")
        digest_only = _conf_bool(table, "mirror-by-digest-only", path=path, key=key)
        raw_mirrors = table.get("mirror", [])
        if not isinstance(raw_mirrors, list):
            raise _fail(path, f"{key}.mirror", "expected [[registry.mirror]] tables")
        mirrors = tuple(
            _conf_mirror(m, path=path, key=f"{key}.mirror[{j}]", digest_only=digest_only)
            for j, m in enumerate(raw_mirrors)
        )
        entries.append(
            _ConfEntry(
                prefix=prefix.lower(),
                location=(location or prefix).lower(),
                insecure=_conf_bool(table, "insecure", path=path, key=key),
                blocked=_conf_bool(table, "blocked", path=path, key=key),
                mirrors=mirrors,
            )
        )
    return entries


def _from_conf(host: str, entries: Sequence[_ConfEntry], path: str) -> HostConfig | None:
    wanted = normalize_host(host)
    notes: list[str] = []
    match: _ConfEntry | None = None
    for entry in entries:
        entry_host = normalize_host(entry.prefix.split("/", 1)[0])
        if entry_host != wanted:
            continue
        if "/" in entry.prefix.strip("/"):
            notes.append(
                f"{path}: the entry for {entry.prefix!r} configures a namespace, not the whole "
                "host; modelreg ignores it"
            )
            continue
        match = entry
    if match is None:
        if not notes:
            return None
        return HostConfig(host, default_server(host), files=(path,), notes=tuple(notes))
    location = match.location.strip("/")
    if "/" in location or "://" in location:
        raise _fail(
            path,
            f"registry {match.prefix!r}.location",
            f"{location!r} is not a bare host; modelreg cannot rewrite repository paths",
        )
    server = default_server(location) if location != match.prefix else default_server(host)
    server = Endpoint(server.scheme, server.host, skip_verify=match.insecure, source=path)
    return HostConfig(
        host=host,
        server=server,
        mirrors=match.mirrors,
        files=(path,),
        configured=True,
        blocked=match.blocked,
        notes=tuple(notes),
    )


# ------------------------------------------------------------------ search path


def _config_home(env: Mapping[str, str]) -> Path:
    xdg = env.get("XDG_CONFIG_HOME")
    return Path(xdg).expanduser() if xdg else Path.home() / ".config"


def _split_dirs(text: str) -> tuple[Path, ...]:
    return tuple(Path(p).expanduser() for p in text.split(os.pathsep) if p)


def _read(path: Path) -> str | None:
    """The text of a configuration file, None if there is none."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise InvalidInputError(
            f"cannot read the registry configuration {path}: {exc.strerror or exc}",
            hint="fix its permissions, or point --hosts-dir / $MODELREG_HOSTS_DIR elsewhere",
        ) from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise InvalidInputError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a hosts file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path}: not UTF-8 text") from exc


def _dir_names(host: str) -> list[str]:
    """The directory names under which certs.d may configure ``host``."""
    names = [host.lower()]
    if normalize_host(host) == DOCKER_HUB:
        names = ["docker.io", DOCKER_HUB_SERVER, "index.docker.io"]
    name, port = split_host(host)
    if port is not None and ":" in name:
        names.append(f"[{name}]:{port}")
    return names


class HostsResolver:
    """Finds and parses the configuration of registry hosts (cached per host).

    ``hosts_dirs`` replaces the certs.d search path (the ``--hosts-dir`` list);
    ``registries_conf`` names the registries.conf to read (``""``: none). ``env``
    defaults to the process environment.
    """

    def __init__(
        self,
        hosts_dirs: Sequence[str | os.PathLike[str]] | None = None,
        *,
        registries_conf: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        environ = os.environ if env is None else env
        if hosts_dirs is not None:
            self.dirs: tuple[Path, ...] = tuple(Path(p).expanduser() for p in hosts_dirs)
            explicit = True
        elif "MODELREG_HOSTS_DIR" in environ:
            self.dirs = _split_dirs(environ["MODELREG_HOSTS_DIR"])
            explicit = True
        else:
            own = _config_home(environ) / "modelreg" / "certs.d"
            self.dirs = (own, *(Path(p) for p in DEFAULT_CERTS_DIRS))
            explicit = False
        conf: Path | None
        if registries_conf is not None:
            conf = Path(registries_conf).expanduser() if registries_conf else None
        elif "MODELREG_REGISTRIES_CONF" in environ:
            text = environ["MODELREG_REGISTRIES_CONF"]
            conf = Path(text).expanduser() if text else None
        elif explicit and hosts_dirs is not None:
            conf = None
        else:
            user = _config_home(environ) / "containers" / "registries.conf"
            conf = user if user.is_file() else Path(DEFAULT_REGISTRIES_CONF)
        self.registries_conf = conf
        self._conf_entries: list[_ConfEntry] | None = None
        self._cache: dict[str, HostConfig] = {}

    def __repr__(self) -> str:
        dirs = ":".join(str(d) for d in self.dirs)
        return f"HostsResolver(dirs={dirs!r}, registries_conf={str(self.registries_conf)!r})"

    def lookup(self, host: str) -> HostConfig:
        """The configuration for ``host`` (``name[:port]`` as in a reference)."""
        key = host.lower()
        cached = self._cache.get(key)
        if cached is None:
            cached = self._lookup(host)
            self._cache[key] = cached
        return cached

    def _lookup(self, host: str) -> HostConfig:
        for directory in self.dirs:
            for name in (*_dir_names(host), "_default"):
                path = directory / name / "hosts.toml"
                text = _read(path)
                if text is not None:
                    return parse_hosts_toml(text, path=str(path), host=host)
        if self.registries_conf is not None:
            text = _read(self.registries_conf)
            if text is not None:
                if self._conf_entries is None:
                    self._conf_entries = parse_registries_conf(text, path=str(self.registries_conf))
                found = _from_conf(host, self._conf_entries, str(self.registries_conf))
                if found is not None:
                    return found
        return HostConfig(host, default_server(host))

    def searched(self) -> list[str]:
        """Where configuration is looked for, in order (for ``modelreg hosts``)."""
        places = [f"{d}/HOST/hosts.toml" for d in self.dirs]
        if self.registries_conf is not None:
            places.append(str(self.registries_conf))
        return places
