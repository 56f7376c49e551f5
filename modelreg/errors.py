"""The one exception tree of modelreg.

Every error raised by the library is a :class:`ModelRegError`. Each carries a
``message`` (what happened, quoting the offending input) and a ``hint`` (what
to do next). Foreign exceptions (httpx, OSError, json) are translated at the
boundary with ``raise ... from exc``.

::

    ModelRegError
     ├── InvalidInputError            bad reference, digest, flag, path or file given by the user
     │    ├── InvalidReferenceError
     │    └── InvalidDigestError
     ├── FormatError                  a manifest, config, header or file that does not parse
     ├── UnsafeContentError           a path/link/header that would escape or exhaust resources
     ├── SizeLimitError               remote content over a cap, refused before it is read whole
     ├── IntegrityError               bytes that do not match their descriptor (size or digest)
     │    ├── CorruptCacheError       a local store blob that no longer matches: quarantined
     │    └── MirrorIntegrityError    a mirror served a wrong blob: distrusted, fetch it again
     ├── NotFoundError                tag, manifest, blob or repository unknown
     ├── RegistryError                the registry answered with an error
     │    ├── AuthenticationError     401: no or wrong credentials
     │    ├── PermissionDeniedError   403: credentials lack the right
     │    ├── RateLimitedError        429 after retries
     │    └── UnsupportedError        the registry lacks a feature (e.g. chunked upload)
     ├── NetworkError                 unreachable host, TLS failure, timeout
     │    └── TransferTooSlowError    a document deadline or blob throughput floor was hit
     ├── LocalStorageError            a full, over-quota or read-only local disk (exit 14)
     ├── MissingExtraError            a feature whose optional extra is not installed (exit 15)
     ├── VerificationError            a signature, attestation or identity that does not verify
     └── PolicyError                  a policy that fails to load or to evaluate
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

__all__ = [
    "AuthenticationError",
    "CorruptCacheError",
    "FormatError",
    "IntegrityError",
    "InvalidDigestError",
    "InvalidInputError",
    "InvalidReferenceError",
    "LocalStorageError",
    "MirrorIntegrityError",
    "MissingExtraError",
    "ModelRegError",
    "NetworkError",
    "NotFoundError",
    "PermissionDeniedError",
    "PolicyError",
    "RateLimitedError",
    "RegistryError",
    "SizeLimitError",
    "TransferTooSlowError",
    "UnsafeContentError",
    "UnsupportedError",
    "VerificationError",
    "local_storage",
]


class ModelRegError(Exception):
    """Root of every modelreg error.

    ``message`` says what happened; ``hint`` says what to do about it.
    ``exit_code`` is what the CLI exits with (documented in the README).
    """

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class InvalidInputError(ModelRegError, ValueError):
    """Input given by the user (argument, flag, file) is not acceptable."""

    exit_code = 2


class InvalidReferenceError(InvalidInputError):
    """A model reference that does not follow the grammar."""


class InvalidDigestError(InvalidInputError):
    """A digest string that is not ``algorithm:hex`` with a supported algorithm."""


class FormatError(ModelRegError):
    """Content that does not parse as the format it claims to be."""

    exit_code = 8


class UnsafeContentError(ModelRegError):
    """Content that would escape its directory, link outside, or exhaust resources."""

    exit_code = 8


class SizeLimitError(ModelRegError):
    """Remote-controlled content over a cap; refused before being read whole."""

    exit_code = 8


class IntegrityError(ModelRegError):
    """Bytes that do not match the size or digest of their descriptor."""

    exit_code = 5


class CorruptCacheError(IntegrityError):
    """A blob of the local store no longer matches its digest (disk damage, a file
    pulled with ``--link`` and edited in place). The store has moved it aside into
    ``quarantine/`` (``quarantined``, None if it could not) and will not serve it:
    fetch ``digest`` again from the source (SECURITY.md case 28)."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        digest: str,
        quarantined: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.digest = digest
        self.quarantined = quarantined


class MirrorIntegrityError(IntegrityError):
    """A mirror served a blob that does not match its digest. The client will not use
    that mirror (``mirror``) again: fetching ``digest`` again, from its first byte,
    reads it from the next source, another mirror or the registry itself."""

    def __init__(self, message: str, *, hint: str | None = None, digest: str, mirror: str) -> None:
        super().__init__(message, hint=hint)
        self.digest = digest
        self.mirror = mirror


class NotFoundError(ModelRegError):
    """A tag, manifest, blob or repository that does not exist."""

    exit_code = 3


class RegistryError(ModelRegError):
    """The registry answered with an error status."""

    exit_code = 6

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code


class AuthenticationError(RegistryError):
    """401: credentials missing or rejected."""

    exit_code = 4


class PermissionDeniedError(RegistryError):
    """403: the credentials do not grant the operation."""

    exit_code = 4


class RateLimitedError(RegistryError):
    """429 still returned after the retry budget was spent."""


class UnsupportedError(RegistryError):
    """The registry or target lacks a feature the operation needs."""


class NetworkError(ModelRegError):
    """The registry could not be reached (DNS, connect, TLS, timeout)."""

    exit_code = 6


class TransferTooSlowError(NetworkError):
    """A registry answer that kept arriving but too slowly: ``bound`` names the bound hit,
    ``"document-deadline"`` (total time of a document) or ``"throughput-floor"`` (a blob)."""

    def __init__(self, message: str, *, hint: str | None = None, bound: str) -> None:
        super().__init__(message, hint=hint)
        self.bound = bound


class LocalStorageError(ModelRegError):
    """The local filesystem refused a write: no space, over quota, file too large, read-only.

    ``path`` is where modelreg was writing; ``needed`` the bytes it needed there, if known.
    """

    exit_code = 14

    def __init__(
        self, message: str, *, hint: str | None = None, path: str, needed: int | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.path = path
        self.needed = needed


_STORAGE_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EFBIG: "the file is larger than this filesystem or process allows",
    errno.EROFS: "the filesystem is read-only",
}


@contextlib.contextmanager
def local_storage(
    path: str | os.PathLike[str], what: str, *, needed: int | None = None
) -> Iterator[None]:
    """Translate a write refused by the filesystem inside the block into
    :class:`LocalStorageError` naming ``path``; other errors pass through.

    Used at the few places where modelreg writes: the pull's output and staging,
    the store/cache layout, the chunk cache. Cleaning up what was half written
    stays with the code that created it (its ``finally``), which runs before this.
    """
    try:
        yield
    except OSError as exc:
        reason = _STORAGE_ERRNOS.get(exc.errno or 0)
        if reason is None or isinstance(exc, ModelRegError):
            raise
        place = os.fspath(path)
        size = f" ({needed} bytes needed)" if needed else ""
        if exc.errno == errno.EROFS:
            hint = "write somewhere writable: pass another output directory or set MODELREG_HOME"
        else:
            hint = (
                f"free space on the filesystem holding {place}, write elsewhere (another "
                "output directory, or MODELREG_HOME on a larger disk), or shrink the cache "
                "with `modelreg cache prune`"
            )
        raise LocalStorageError(
            f"cannot {what} {place}: {reason}{size}", hint=hint, path=place, needed=needed
        ) from exc


class MissingExtraError(ModelRegError):
    """A feature needs an optional extra that is not installed (``pip install 'modelreg[X]'``).

    Raised by :func:`modelreg._extras.require` only, so every feature fails the same way:
    the message names the feature and the missing package, the hint the one command to
    run. ``extra`` is the extra's name, ``module`` the package that could not be imported.
    """

    exit_code = 15

    def __init__(self, message: str, *, hint: str | None = None, extra: str, module: str) -> None:
        super().__init__(message, hint=hint)
        self.extra = extra
        self.module = module


class VerificationError(ModelRegError):
    """A signature, attestation, identity or policy requirement that does not verify."""

    exit_code = 7


class PolicyError(ModelRegError):
    """A policy that cannot be loaded or evaluated."""

    exit_code = 9
