"""Translation of registry answers and transport failures into the modelreg error tree.

This is the boundary: status codes and the registry's JSON error body
(``{"errors": [{"code", "message", "detail"}]}``) become :class:`RegistryError`
subclasses, and httpx exceptions become :class:`NetworkError` (a spent transfer
bound, :class:`~modelreg.content.registry.deadlines.BoundExceeded`, becomes the
:class:`~modelreg.errors.TransferTooSlowError` it describes) (raised by the
caller with ``raise ... from exc``). Every message names the host and what was
attempted; every hint says what to do next. Text that comes from the registry is
stripped of control characters and shortened before it is quoted, and nothing
here ever sees a credential.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

import httpx

from modelreg.content.registry.deadlines import BoundExceeded
from modelreg.errors import (
    AuthenticationError,
    IntegrityError,
    ModelRegError,
    NetworkError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    RegistryError,
    SizeLimitError,
    UnsupportedError,
)

__all__ = [
    "ErrorEntry",
    "error_for_response",
    "network_error",
    "parse_error_body",
    "sanitize",
]

MAX_ERROR_BODY: Final = 64 * 1024
"""Bytes of an error response read for diagnostics; the rest is discarded."""

_HTTPS_TO_HTTP_HINT: Final = "use --plain-http for an HTTP-only registry"
_PLAIN_TO_TLS_MARKER: Final = "client sent an http request to an https server"
_UPLOAD_CODES: Final = frozenset({"BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"})


@dataclass(frozen=True, slots=True)
class ErrorEntry:
    """One entry of a registry error body."""

    code: str
    message: str
    detail: str = ""

    def __str__(self) -> str:
        text = self.code or "ERROR"
        if self.message:
            text += f": {self.message}"
        if self.detail:
            text += f" ({self.detail})"
        return text


def sanitize(text: str, limit: int = 200) -> str:
    """Registry-controlled text made safe to quote: no control characters, bounded."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1] + "…"
    return cleaned


def parse_error_body(body: bytes) -> list[ErrorEntry]:
    """The entries of ``{"errors": [...]}``; an empty list for anything else."""
    try:
        obj = json.loads(body[:MAX_ERROR_BODY])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return []
    raw = obj.get("errors") if isinstance(obj, dict) else None
    if not isinstance(raw, list):
        return []
    out = []
    for item in raw[:10]:
        if not isinstance(item, dict):
            continue
        detail = item.get("detail")
        if detail is None or detail == {} or detail == "":
            detail_text = ""
        elif isinstance(detail, str):
            detail_text = detail
        else:
            detail_text = json.dumps(detail, separators=(",", ":"), sort_keys=True)
        out.append(
            ErrorEntry(
                code=sanitize(str(item.get("code") or ""), 64),
                message=sanitize(str(item.get("message") or "")),
                detail=sanitize(detail_text),
            )
        )
    return out


def _reason(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _describe(entries: list[ErrorEntry], body: bytes) -> str:
    if entries:
        return "; ".join(str(e) for e in entries)
    text = sanitize(body[:512].decode("utf-8", "replace"))
    return text


def error_for_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    host: str,
    what: str,
    repository: str | None = None,
    subject: str | None = None,
    attempts: int = 1,
    has_credentials: bool = False,
) -> ModelRegError:
    """The modelreg error for a registry answer that the caller did not expect.

    ``what`` says what was attempted ("fetch manifest 'v1' of HOST/REPO");
    ``subject`` names the thing a 404 is about ("manifest 'v1'", "blob sha256:…").
    """
    entries = parse_error_body(body)
    codes = {e.code for e in entries}
    detail = _describe(entries, body)
    said = f": {detail}" if detail else ""
    where = f"{host}/{repository}" if repository else host
    tries = f" (after {attempts} attempts)" if attempts > 1 else ""
    if status == 401:
        if has_credentials:
            hint = (
                f"check the username and password for {host} (`modelreg login {host}`); "
                f"the account may also lack access to {where}"
            )
            return AuthenticationError(
                f"{host} rejected the credentials to {what} (401 Unauthorized{said})",
                hint=hint,
                status=status,
                code=next(iter(codes), None),
            )
        return AuthenticationError(
            f"{host} requires authentication to {what} (401 Unauthorized{said})",
            hint=f"run `modelreg login {host}`",
            status=status,
            code=next(iter(codes), None),
        )
    if status == 403:
        return PermissionDeniedError(
            f"{host} denied the request to {what} (403 Forbidden{said})",
            hint=(
                f"the credentials in use lack this right on {where}; ask for access or log in "
                f"as another user with `modelreg login {host}`"
            ),
            status=status,
            code=next(iter(codes), None),
        )
    if status == 404 and not (codes & _UPLOAD_CODES):
        return _not_found(codes, detail, host=host, where=where, what=what, subject=subject)
    if status == 413:
        return SizeLimitError(
            f"{host} refused to {what}: the content is over the registry's size limit "
            f"(413 Payload Too Large{said})",
            hint=(
                "the registry caps the size of this request; for blobs retry with "
                "--upload-chunk-size, for manifests reduce the number of layers or annotations"
            ),
        )
    if status == 429:
        return RateLimitedError(
            f"{host} is rate-limiting requests: {what} still answered 429 Too Many Requests"
            f"{tries}{said}",
            hint=(
                "wait and try again later; authenticated clients usually get higher limits "
                f"(`modelreg login {host}`)"
            ),
            status=status,
            code=next(iter(codes), None),
        )
    if codes & {"DIGEST_INVALID", "SIZE_INVALID"}:
        return IntegrityError(
            f"{host} rejected the content sent to {what}: it does not match its digest or "
            f"size ({_reason(status)}{said})",
            hint=(
                "the local source changed or is corrupt; re-create it (e.g. pack the model again) "
                "and retry"
            ),
        )
    if status == 400 and _PLAIN_TO_TLS_MARKER in body[:512].decode("utf-8", "replace").lower():
        return NetworkError(
            f"{host} speaks HTTPS but the request to {what} was sent over plain HTTP",
            hint="drop --plain-http (pass --ca-file if the registry uses a private CA)",
        )
    if status == 405 or "UNSUPPORTED" in codes:
        return UnsupportedError(
            f"{host} does not support the request to {what} ({_reason(status)}{said})",
            hint="this registry lacks the feature or has it disabled (e.g. deletes)",
            status=status,
            code=next(iter(codes), None),
        )
    if codes & {"MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN"}:
        return RegistryError(
            f"{host} refused to {what}: it references content missing from {where}{said}",
            hint="push the referenced blobs (config and layers) before the manifest",
            status=status,
            code=next(iter(codes), None),
        )
    if status >= 500:
        return RegistryError(
            f"{host} failed to {what}: {_reason(status)}{tries}{said}",
            hint="the registry has a server-side problem; try again later or check its logs",
            status=status,
            code=next(iter(codes), None),
        )
    return RegistryError(
        f"{host} refused to {what}: {_reason(status)}{said}",
        hint="check the repository name, reference and media types",
        status=status,
        code=next(iter(codes), None),
    )


def _not_found(
    codes: set[str], detail: str, *, host: str, where: str, what: str, subject: str | None
) -> NotFoundError:
    said = f" ({detail})" if detail else ""
    if "NAME_UNKNOWN" in codes:
        return NotFoundError(
            f"repository {where} not found (while trying to {what}){said}",
            hint=f"check the repository name; it does not exist on {host} or is not visible to you",
        )
    if subject:
        if subject.startswith("blob") or "BLOB_UNKNOWN" in codes:
            hint = f"the blob is not in {where}; push it first or check the digest"
        else:
            hint = f"check the tag with `modelreg tags {where}`"
        return NotFoundError(f"{subject} not found in {where}{said}", hint=hint)
    return NotFoundError(
        f"{host} has nothing at the address used to {what}{said}",
        hint=f"check the reference; list tags with `modelreg tags {where}`",
    )


# --------------------------------------------------------------------------- transport


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_tls_verification_failure(exc: BaseException) -> bool:
    return any(isinstance(e, ssl.SSLCertVerificationError) for e in _causes(exc)) or (
        "CERTIFICATE_VERIFY_FAILED" in str(exc)
    )


def is_tls_protocol_failure(exc: BaseException) -> bool:
    """A TLS handshake that failed because the peer does not speak TLS (not a bad cert)."""
    if is_tls_verification_failure(exc):
        return False
    text = str(exc).upper()
    return any(isinstance(e, ssl.SSLError) for e in _causes(exc)) or any(
        marker in text for marker in ("WRONG_VERSION_NUMBER", "RECORD_LAYER", "UNKNOWN_PROTOCOL")
    )


def is_dns_failure(exc: BaseException) -> bool:
    return any(isinstance(e, socket.gaierror) for e in _causes(exc))


def is_permanent(exc: BaseException) -> bool:
    """Failures that no retry will fix: TLS verification, TLS/protocol mismatch, DNS."""
    return is_tls_verification_failure(exc) or is_tls_protocol_failure(exc) or is_dns_failure(exc)


def network_error(
    exc: BaseException, *, host: str, what: str, attempts: int = 1, scheme: str = "https"
) -> NetworkError:
    """The :class:`NetworkError` for an httpx transport failure (raise it ``from exc``)."""
    for cause in _causes(exc):
        if isinstance(cause, BoundExceeded):
            return cause.bound.error()  # which bound, where, and the setting to raise
    tries = f" (after {attempts} attempts)" if attempts > 1 else ""
    reason = sanitize(str(exc) or type(exc).__name__)
    if is_tls_verification_failure(exc):
        return NetworkError(
            f"TLS certificate verification failed for {host} while trying to {what}: {reason}",
            hint=(
                "pass the registry's CA certificate with --ca-file PATH, or --insecure to skip "
                "verification (unsafe: anyone on the path can read and change the traffic)"
            ),
        )
    if scheme == "https" and is_tls_protocol_failure(exc):
        return NetworkError(
            f"{host} did not answer with TLS while trying to {what}: {reason}",
            hint=f"the registry seems to serve plain HTTP; {_HTTPS_TO_HTTP_HINT}",
        )
    if is_dns_failure(exc):
        return NetworkError(
            f"cannot resolve the registry host {host!r} while trying to {what}: {reason}",
            hint="check the host name in the reference, and your network and DNS settings",
        )
    if isinstance(exc, httpx.TimeoutException):
        return NetworkError(
            f"{host} did not answer in time while trying to {what}{tries}: {type(exc).__name__}",
            hint="the registry is slow or unreachable; try again, or check proxies and firewalls",
        )
    if isinstance(exc, httpx.ConnectError):
        return NetworkError(
            f"cannot connect to {host} to {what}{tries}: {reason}",
            hint=f"is the registry running and reachable? {_HTTPS_TO_HTTP_HINT}",
        )
    if isinstance(exc, httpx.TooManyRedirects):
        return NetworkError(
            f"{host} redirected too many times while trying to {what}",
            hint="the registry or its storage backend is misconfigured",
        )
    return NetworkError(
        f"the connection to {host} broke while trying to {what}{tries}: {reason}",
        hint="try again; if it keeps failing check the network, proxies and the registry's logs",
    )
