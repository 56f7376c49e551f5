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
     ├── NotFoundError                tag, manifest, blob or repository unknown
     ├── RegistryError                the registry answered with an error
     │    ├── AuthenticationError     401: no or wrong credentials
     │    ├── PermissionDeniedError   403: credentials lack the right
     │    ├── RateLimitedError        429 after retries
     │    └── UnsupportedError        the registry lacks a feature (e.g. chunked upload)
     ├── NetworkError                 unreachable host, TLS failure, timeout
     ├── VerificationError            a signature, attestation or identity that does not verify
     └── PolicyError                  a policy that fails to load or to evaluate
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "FormatError",
    "IntegrityError",
    "InvalidDigestError",
    "InvalidInputError",
    "InvalidReferenceError",
    "ModelRegError",
    "NetworkError",
    "NotFoundError",
    "PermissionDeniedError",
    "PolicyError",
    "RateLimitedError",
    "RegistryError",
    "SizeLimitError",
    "UnsafeContentError",
    "UnsupportedError",
    "VerificationError",
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


class VerificationError(ModelRegError):
    """A signature, attestation, identity or policy requirement that does not verify."""

    exit_code = 7


class PolicyError(ModelRegError):
    """A policy that cannot be loaded or evaluated."""

    exit_code = 9
