"""Canonical references: one spelling per repository, computed once, before any policy match.

Why: a policy names repositories (``registry.example.com/models/**``), but the kubelet and
containerd pull the same repository under many spellings. If a policy were matched against
the spelling as written, ``REGISTRY.EXAMPLE.COM/models/llm`` or ``index.docker.io/acme/m``
would be pulled from a governed repository while no policy matched it (SECURITY.md, case
26). So every path that matches policies (the admission webhook, ``policy check``, ``ci
verify``, :func:`modelreg.policy.gather_facts`) goes through :func:`canonical_reference`,
and policy patterns go through :func:`canonical_pattern` when they are loaded.

The rules, and where they come from:

* **No registry host.** Docker's reference normalisation (``ParseNormalizedNamed`` in
  distribution/reference) reads the first ``/``-separated component as a registry host
  only when it contains ``.`` or ``:`` or is ``localhost``; otherwise the name lives on
  Docker Hub. The kubelet hands Pod images to the container runtime with exactly this
  meaning, so with ``hostless="docker.io"`` (Pod images, image volumes, the model
  annotation) ``llm:v1`` is ``docker.io/library/llm:v1`` and ``acme/m`` is
  ``docker.io/acme/m``; a reference with no ``/`` at all (``localhost:5000``) is a
  Docker Hub repository with a tag, as Docker reads it. modelreg's own CLI grammar
  (``hostless="store"``, the default) keeps host-less ``repo:tag`` for the embedded
  local store (:mod:`modelreg.oci.reference`).
* **Uppercase first component.** Docker also takes a first component with uppercase
  letters (``Acme/m``) as a registry host. A single-label host cannot be written
  canonically without being read back as a repository, so such a reference is refused
  (``LOCALHOST/x`` is ``localhost/x``).
* **Host case.** DNS names are case-insensitive (RFC 4343): the host is lowercased.
* **Default port.** Docker and containerd speak HTTPS to every registry unless one is
  configured otherwise, so ``host:443`` is the very endpoint ``host`` names: ``:443`` is
  dropped (also spelled ``:0443``; port numbers are written without leading zeros).
  ``:80`` is *kept*: it is not the default of anything a runtime does by itself; it is
  a plain-HTTP endpoint of a registry configured as insecure, a different server from
  ``host`` (HTTPS). Dropping it would make modelreg verify ``host`` while the node pulls
  ``host:80``. A policy governs ``host:80`` only when a pattern names it; the
  cluster-wide no-match setting (``deny`` in the shipped manifests) refuses it otherwise.
* **Docker Hub aliases.** ``docker.io``, ``index.docker.io`` (Docker's legacy default
  domain), ``registry-1.docker.io`` (the API endpoint containerd contacts for
  ``docker.io``) and ``registry.hub.docker.com`` all serve Docker Hub: they become
  ``docker.io``, and a single-component Hub repository gets Docker's ``library/``
  prefix (``docker.io/llm`` is ``docker.io/library/llm``).
* **IP addresses.** A bracketed IPv6 host is written as Python's ``ipaddress`` writes it
  (lowercase hex, longest zero run compressed, RFC 5952): ``[0:0::1]`` is ``[::1]``.
  Zone identifiers are refused. A host whose last label is numeric must be a dotted-quad
  IPv4 address written canonically: ``127.1``, ``0177.0.0.1`` or ``127.000.000.001`` are
  read by some resolvers (``inet_aton``) as ``127.0.0.1`` and by others as names, so
  they are refused rather than guessed.
* **Tag and digest.** ``repo:tag@sha256:...`` is pulled by digest (containerd ignores the
  tag); the canonical form keeps both, policies match on the repository, and
  resolution works on the digest.
* **Repository case.** The distribution spec allows only lowercase repository
  components; runtimes refuse ``Models/LLM``. Such a reference is refused here too (with
  the reason), never lowercased into a governed name: it is denied, not matched.

Whatever cannot be canonicalised raises :class:`~modelreg.errors.InvalidReferenceError`
quoting the input; callers deny (fail closed) wherever a policy enforces.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Final, Literal

from modelreg.errors import InvalidReferenceError
from modelreg.oci.reference import Reference

__all__ = [
    "DEFAULT_HTTPS_PORT",
    "DOCKER_HUB",
    "DOCKER_HUB_ALIASES",
    "Hostless",
    "canonical",
    "canonical_host",
    "canonical_pattern",
    "canonical_reference",
]

Hostless = Literal["store", "docker.io"]
"""What a reference without a registry host means: modelreg's local store (CLI grammar)
or Docker Hub (how the kubelet reads a Pod image)."""

DOCKER_HUB: Final = "docker.io"
DOCKER_HUB_ALIASES: Final = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
DEFAULT_HTTPS_PORT: Final = 443
_MAX_NAME: Final = 255
_GLOB_CHARS: Final = "*?"
_HINT: Final = (
    "write the reference as the registry names it: lowercase host without :443 "
    "(e.g. registry.example.com/models/llm:v1), lowercase repository, "
    "docker.io/library/NAME for Docker Hub official images"
)


def _refuse(text: str, why: str) -> InvalidReferenceError:
    return InvalidReferenceError(f"cannot canonicalise reference {text!r}: {why}", hint=_HINT)


def _split_host_port(host: str, text: str) -> tuple[str, str | None]:
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            raise _refuse(text, f"unterminated IPv6 address in host {host!r}")
        name, rest = host[: end + 1], host[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _refuse(text, f"unexpected {rest!r} after IPv6 address in host {host!r}")
        return name, rest[1:] if rest else None
    name, sep, port = host.partition(":")
    return name, port if sep else None


def _canonical_ip_or_name(name: str, text: str) -> str:
    if name.startswith("["):
        inner = name[1:-1]
        if "%" in inner:
            raise _refuse(text, f"IPv6 zone identifiers are not allowed in host {name!r}")
        try:
            return f"[{ipaddress.IPv6Address(inner).compressed}]"
        except ValueError as exc:
            raise _refuse(text, f"{name!r} is not an IPv6 address") from exc
    lowered = name.lower()
    last = lowered.rsplit(".", 1)[-1]
    if last and (last[0].isdigit()):
        # a numeric last label means an address; accept only the form every resolver
        # reads the same way (inet_aton would also take octal, hex and short forms)
        try:
            address = ipaddress.IPv4Address(lowered)
        except ValueError as exc:
            raise _refuse(
                text, f"host {name!r} is neither a DNS name nor a dotted-quad IPv4 address"
            ) from exc
        if str(address) != lowered:
            raise _refuse(text, f"host {name!r} is not written as a canonical IPv4 address")
    return lowered


def canonical_host(host: str, text: str | None = None) -> str:
    """``host[:port]`` lowercased, IPv6 compressed, ``:443`` dropped, Hub aliases folded."""
    quoted = host if text is None else text
    name, port = _split_host_port(host, quoted)
    if not name:
        raise _refuse(quoted, "empty registry host")
    name = _canonical_ip_or_name(name, quoted)
    if port is not None:
        if not port.isdigit() or not port.isascii():
            raise _refuse(quoted, f"port {port!r} is not a number")
        number = int(port)
        if not 0 < number < 65536:
            raise _refuse(quoted, f"port {port} is out of range")
        port = None if number == DEFAULT_HTTPS_PORT else str(number)
    if name in DOCKER_HUB_ALIASES:
        # every Hub endpoint, on its default port, is Docker Hub; on another port it is not
        return DOCKER_HUB if port is None else f"{name}:{port}"
    return name if port is None else f"{name}:{port}"


def _kubelet_text(text: str) -> str:
    """Give a host-less Pod image its Docker Hub host, as Docker's normalisation does."""
    if text.startswith("oci:"):
        raise _refuse(
            text,
            "oci: names a local layout directory for modelreg, but the kubelet would read "
            "it as a Docker Hub image; a cluster cannot use it",
        )
    first, sep, _ = text.partition("/")
    if not sep:
        return f"{DOCKER_HUB}/{text}"
    if "." in first or ":" in first or first == "localhost":
        return text
    if first != first.lower():
        if first.lower() == "localhost":
            return text
        raise _refuse(
            text,
            f"Docker reads the uppercase first component {first!r} as a single-label "
            "registry host, which cannot be told apart from a repository",
        )
    return f"{DOCKER_HUB}/{text}"


def canonical(ref: Reference, text: str | None = None) -> Reference:
    """The canonical form of a parsed reference (store and layout references unchanged)."""
    if ref.kind != "registry":
        return ref
    quoted = str(ref) if text is None else text
    assert ref.registry is not None
    host = canonical_host(ref.registry, quoted)
    repository = ref.repository
    if host == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if len(host) + 1 + len(repository) > _MAX_NAME:
        raise _refuse(quoted, f"canonical name longer than {_MAX_NAME} characters")
    if host == ref.registry and repository == ref.repository:
        return ref
    return Reference(
        kind="registry", registry=host, repository=repository, tag=ref.tag, digest=ref.digest
    )


@functools.lru_cache(maxsize=4096)
def canonical_reference(text: str, *, hostless: Hostless = "store") -> Reference:
    """Parse ``text`` and return its canonical :class:`Reference` (memoised; frozen).

    ``hostless="docker.io"`` reads a reference without a registry host as the kubelet
    does (Docker Hub); ``"store"`` keeps modelreg's CLI grammar (the local store).
    Raises :class:`InvalidReferenceError` naming the input and why.
    """
    if not isinstance(text, str):
        raise _refuse(str(text), "not a string")
    source = _kubelet_text(text) if hostless == "docker.io" and text == text.strip() else text
    try:
        ref = Reference.parse(source)
    except InvalidReferenceError as exc:
        if source == text:
            raise
        # the message quotes what the user wrote, not our Docker Hub spelling of it
        raise _refuse(text, exc.message) from exc
    return canonical(ref, text)


_UPPER: Final = re.compile(r"[A-Z]")


def canonical_pattern(pattern: str) -> str:
    """A registry pattern (``HOST/REPOSITORY-GLOB``) in the canonical names' terms.

    A literal host is canonicalised like a reference's; a host with ``*`` or ``?`` is
    lowercased, and refused if it could name a Docker Hub alias but not ``docker.io``
    (every Hub image is matched as ``docker.io/...``, so it would govern nothing there).
    A single-segment Hub repository glob gets ``library/``. Uppercase in the repository
    part could match no valid reference: refused. Raises InvalidReferenceError.
    """
    host, sep, rest = pattern.partition("/")
    if not sep or not rest:
        return pattern  # not REGISTRY/REPOSITORY: the policy loader says what is wrong
    if _UPPER.search(rest):
        raise InvalidReferenceError(
            f"pattern {pattern!r} has uppercase letters in its repository part, which no "
            "valid reference has (repository names are lowercase)",
            hint="write the repository part in lowercase",
        )
    if any(c in host for c in _GLOB_CHARS):
        host = host.lower()
        host_re = re.compile(
            "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in host)
        )
        if not host_re.fullmatch(DOCKER_HUB) and any(
            host_re.fullmatch(alias) for alias in DOCKER_HUB_ALIASES
        ):
            raise InvalidReferenceError(
                f"pattern {pattern!r} names Docker Hub through an alias host; images are "
                f"matched by their canonical name on {DOCKER_HUB}",
                hint=f"write {DOCKER_HUB}/{rest}",
            )
    else:
        host = canonical_host(host, pattern)
    if host == DOCKER_HUB and "/" not in rest and "**" not in rest:
        rest = f"library/{rest}"
    return f"{host}/{rest}"
