"""What modelreg takes from the environment: read once, validated once, passed down.

Every ``MODELREG_*`` variable (and the XDG and ``SOURCE_DATE_EPOCH`` variables it
honours) is parsed in one place, :meth:`Settings.from_env`, into a frozen
:class:`Settings`. A bad value fails there, with an
:class:`~modelreg.errors.InvalidInputError` that names the variable and the form it
accepts, before any work starts. The doors build it: the CLI once per process
(``modelreg_cli.context``), the library at its public boundary (``Client(...)``,
``modelreg.push/pull/open/load/...``) when the caller passes none, so a library user
who sets nothing keeps the behaviour of earlier releases. Modules below take the
values (or the ``Settings``) as arguments and never look at ``os.environ``; a unit
test (``tests/unit/test_settings.py``) greps ``modelreg/`` for environment reads
outside the boundary modules it names.

=================================== =====================================================
variable                            meaning (form; default)
=================================== =====================================================
``MODELREG_HOME``                   where modelreg keeps its state (a path;
                                    ``$XDG_DATA_HOME/modelreg``, ``~/.local/share/modelreg``,
                                    ``~/Library/Application Support/modelreg`` on macOS)
``MODELREG_HOSTS_DIR``              ``:``-separated certs.d directories with ``hosts.toml``
                                    (``""``: none; the containerd search path)
``MODELREG_REGISTRIES_CONF``        the containers registries.conf to read (``""``: none)
``MODELREG_CHUNK_CACHE_MAX``        bound of the lazy chunk cache (``20GiB``, ``512MiB``,
                                    bytes, ``0``; unlimited)
``MODELREG_MAX_SIGNATURE_REFERRERS`` signature referrers verify reads (a whole number
                                    ``>= 1``; 64)
``MODELREG_TIMEOUT``                CLI: seconds a registry request may stall (``> 0``; 60)
``MODELREG_DOCUMENT_DEADLINE``      CLI: total seconds for a document (``> 0``; 60)
``MODELREG_MIN_THROUGHPUT``         CLI: blob throughput floor, bytes/s (``> 0``; 1024)
``MODELREG_THROUGHPUT_WINDOW``      CLI: seconds that floor is averaged over (``> 0``; 30)
``MODELREG_FSYNC``                  CLI: ``0`` skips fsync of the store (``0``/``1``; 1)
``MODELREG_CACHE_MODE``             CLI: pull's ``--cache-mode`` default (``auto``,
                                    ``copy``, ``reference``; auto)
``SOURCE_DATE_EPOCH``               the time stamped into artifacts (seconds since the
                                    epoch, reproducible builds; now)
=================================== =====================================================

The ``CLI:`` variables are read only by the CLI, which turns them into
:class:`~modelreg.client.RemoteOptions`; a library user gives those options directly.

What is *not* here, and why it is read where it is used:

* **secrets**: key passphrases (``MODELREG_KEY_PASSWORD``, ``MODELREG_PASSWORD``,
  ``COSIGN_PASSWORD``; :mod:`modelreg.attest.keys`), the OIDC token
  (``SIGSTORE_ID_TOKEN``; :mod:`modelreg.sign._keyless`), registry credentials
  (``DOCKER_CONFIG``, ``REGISTRY_AUTH_FILE`` and the environment of credential helpers;
  :mod:`modelreg.content.registry.credentials`). Carrying them in a long-lived value
  handed to every module would widen who can see them; each is read at the moment it
  is needed and dropped.
* **the CI provider's variables** (``GITHUB_*``, ``GITLAB_CI``, ``CI_*``) and the CI
  step's own (``MODELREG_DOTENV``, ``MODELREG_SUMMARY_JSON``, ``MODELREG_SIGNING_KEY``):
  they are the CI step's input, as argv is the CLI's, an open set no dataclass can
  name. The code that interprets them (:mod:`modelreg.ci`,
  :func:`~modelreg.sign.slsa_provenance`) takes them as a mapping (``environ=``, which
  tests fill); :func:`ci_environ` is where the mapping comes from otherwise.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from modelreg.errors import InvalidInputError

__all__ = ["Settings", "ci_environ", "home", "state_dir", "store_dir"]

DEFAULT_MAX_SIGNATURE_REFERRERS = 64

_N = TypeVar("_N", int, float)


@dataclass(frozen=True, slots=True)
class Settings:
    """The environment, parsed (see the module docstring for the table)."""

    home: Path
    hosts_dirs: tuple[str, ...] | None = None
    """None: the default certs.d search path; ``()``: none."""
    registries_conf: str | None = None
    """None: the default registries.conf; ``""``: none."""
    chunk_cache_max: int | None = None
    max_signature_referrers: int = DEFAULT_MAX_SIGNATURE_REFERRERS
    timeout: float = 60.0
    document_deadline: float | None = None
    min_throughput: float = 1024.0
    throughput_window: float = 30.0
    fsync: bool = True
    cache_mode: str | None = None
    source_date_epoch: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Parse and check every variable in the table; InvalidInputError on a bad one."""
        hosts = environ.get("MODELREG_HOSTS_DIR")
        return cls(
            home=_home(environ),
            hosts_dirs=None if hosts is None else tuple(p for p in hosts.split(os.pathsep) if p),
            registries_conf=environ.get("MODELREG_REGISTRIES_CONF"),
            chunk_cache_max=_size(environ, "MODELREG_CHUNK_CACHE_MAX"),
            max_signature_referrers=_whole(environ, "MODELREG_MAX_SIGNATURE_REFERRERS")
            or DEFAULT_MAX_SIGNATURE_REFERRERS,
            timeout=_positive(environ, "MODELREG_TIMEOUT", "seconds") or 60.0,
            document_deadline=_positive(environ, "MODELREG_DOCUMENT_DEADLINE", "seconds"),
            min_throughput=_positive(environ, "MODELREG_MIN_THROUGHPUT", "bytes per second")
            or 1024.0,
            throughput_window=_positive(environ, "MODELREG_THROUGHPUT_WINDOW", "seconds") or 30.0,
            fsync=_flag(environ, "MODELREG_FSYNC", default=True),
            cache_mode=_cache_mode(environ),
            source_date_epoch=_epoch(environ),
        )

    @property
    def store_dir(self) -> Path:
        """The OCI layout that is both the embedded default store and the blob cache."""
        return self.home / "store"

    @property
    def state_dir(self) -> Path:
        """Small databases (digests, locations, copies); created on first use."""
        path = self.home / "state"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def now(self) -> _dt.datetime:
        """The time to stamp into an artifact: ``SOURCE_DATE_EPOCH`` if set, else now
        (UTC, whole seconds)."""
        if self.source_date_epoch is not None:
            return _dt.datetime.fromtimestamp(self.source_date_epoch, _dt.UTC)
        return _dt.datetime.now(_dt.UTC).replace(microsecond=0)


def ci_environ(environ: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """``environ``, else the process environment: the CI provider's variables.

    They are foreign (``GITHUB_*``, ``GITLAB_CI``, ``CI_*``, a provider's whole set),
    the CI step's input as argv is the CLI's, and the code that interprets them
    (:mod:`modelreg.ci`, :func:`~modelreg.sign.slsa_provenance`) takes the mapping;
    this is where it comes from when the caller gives none.
    """
    return os.environ if environ is None else environ


def home() -> Path:
    """``Settings.from_env().home``: for callers that hold no Settings."""
    return Settings.from_env().home


def store_dir() -> Path:
    """``Settings.from_env().store_dir``: for callers that hold no Settings."""
    return Settings.from_env().store_dir


def state_dir() -> Path:
    """``Settings.from_env().state_dir``: for callers that hold no Settings."""
    return Settings.from_env().state_dir


# ------------------------------------------------------------------ parsing, one per form


def _home(env: Mapping[str, str]) -> Path:
    explicit = env.get("MODELREG_HOME")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "modelreg"
    xdg = env.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "modelreg"


def _text(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def _bad(name: str, text: str, form: str, example: str) -> InvalidInputError:
    return InvalidInputError(
        f"{name}={text!r} is not {form}",
        hint=f"unset it or give {form}, e.g. {name}={example}",
    )


def _number(
    env: Mapping[str, str],
    name: str,
    parse: Callable[[str], _N],
    valid: Callable[[_N], bool],
    form: str,
    example: str,
) -> _N | None:
    """``name`` parsed and checked, refused as not ``form``; None when unset."""
    text = _text(env, name)
    if not text:
        return None
    try:
        value = parse(text)
    except ValueError:
        raise _bad(name, text, form, example) from None
    if not valid(value):
        raise _bad(name, text, form, example)
    return value


def _positive(env: Mapping[str, str], name: str, unit: str) -> float | None:
    """A positive finite number; None when unset."""
    return _number(
        env, name, float, lambda v: v > 0 and math.isfinite(v), f"a positive number of {unit}", "30"
    )


def _whole(env: Mapping[str, str], name: str) -> int | None:
    """A whole number of at least 1; None when unset."""
    return _number(env, name, int, lambda v: v >= 1, "a whole number of at least 1", "64")


def _size(env: Mapping[str, str], name: str) -> int | None:
    """A byte size (``20GiB``, ``512MiB``, a byte count, 0); None when unset."""
    text = _text(env, name)
    if not text:
        return None
    from modelreg.lazy._cache import parse_size_limit

    return parse_size_limit(text, name)


def _flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    text = _text(env, name).lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise _bad(name, text, "0 or 1", "0")


def _cache_mode(env: Mapping[str, str]) -> str | None:
    text = _text(env, "MODELREG_CACHE_MODE")
    if not text:
        return None
    from modelreg.model.unpack import parse_cache_mode

    return parse_cache_mode(text, "MODELREG_CACHE_MODE")


def _epoch(env: Mapping[str, str]) -> int | None:
    # reproducible-builds.org: a decimal count of seconds; anything else is ignored, as
    # the tools that set it for every build step expect
    text = _text(env, "SOURCE_DATE_EPOCH")
    return int(text) if text.isdigit() else None
