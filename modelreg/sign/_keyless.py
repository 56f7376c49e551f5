"""Keyless signing through sigstore-python: an OIDC identity, a Fulcio
certificate, a Rekor entry.

The trust configuration is Sigstore's production or staging instance (from
sigstore-python's TUF client) or a ``ClientTrustConfig`` JSON file (trusted
root + signing config: a private Sigstore deployment, or the tests' own).

The identity token comes from, in order: the caller, ``SIGSTORE_ID_TOKEN``,
then the CI's ambient credentials (GitHub Actions, GitLab, Buildkite, GCP...,
through the ``id`` package). The token is a secret: it is never printed.

sigstore-python is imported lazily: it is only needed when signing keyless.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from modelreg.attest.intoto import Statement
from modelreg.errors import InvalidInputError, ModelRegError, NetworkError

__all__ = ["TOKEN_ENV", "KeylessOptions", "KeylessSigner", "resolve_identity_token"]

TOKEN_ENV: Final = "SIGSTORE_ID_TOKEN"  # noqa: S105 - a variable name, not a secret


@dataclass(frozen=True)
class KeylessOptions:
    """Where to get a certificate and log the signature.

    ``trust_config`` (a ClientTrustConfig JSON file) wins over ``staging``.
    """

    identity_token: str | None = None
    staging: bool = False
    trust_config: str | None = None
    ambient: bool = True


def resolve_identity_token(explicit: str | None, *, ambient: bool = True) -> str:
    """The OIDC token to sign with: flag, environment, then ambient CI credentials."""
    if explicit:
        return explicit.strip()
    from_env = os.environ.get(TOKEN_ENV)
    if from_env:
        return from_env.strip()
    if ambient:
        try:
            from sigstore.oidc import detect_credential

            detected = detect_credential()
        except Exception as exc:
            raise InvalidInputError(
                f"could not obtain the CI's ambient OIDC credential: {type(exc).__name__}",
                hint="grant the job an id-token (GitHub: permissions: id-token: write) "
                f"or pass --identity-token / set {TOKEN_ENV}",
            ) from None
        if detected:
            return detected
    raise InvalidInputError(
        "keyless signing needs an OIDC identity token and none was found",
        hint=f"pass --identity-token, set {TOKEN_ENV}, or run in a CI job with an id-token",
    )


def _load_trust_config(options: KeylessOptions) -> Any:
    from sigstore.models import ClientTrustConfig

    try:
        if options.trust_config:
            path = Path(options.trust_config)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise InvalidInputError(
                    f"cannot read the trust config {str(path)!r}: {exc.strerror}"
                ) from exc
            return ClientTrustConfig.from_json(text)
        if options.staging:
            return ClientTrustConfig.staging()
        return ClientTrustConfig.production()
    except ModelRegError:
        raise
    except Exception as exc:
        raise InvalidInputError(
            f"cannot load the Sigstore trust configuration: {type(exc).__name__}: {exc}",
            hint="check --trust-config (a ClientTrustConfig JSON) or the network path to "
            "Sigstore's TUF repository",
        ) from exc


class KeylessSigner:
    """Signs statements with one short-lived certificate (one Fulcio request).

    Use as a context manager::

        with KeylessSigner(KeylessOptions(identity_token=tok)) as signer:
            bundle_json = signer.sign(statement)
    """

    def __init__(self, options: KeylessOptions) -> None:
        self.options = options
        self._stack = contextlib.ExitStack()
        self._signer: Any = None
        self.identity: str | None = None
        self.issuer: str | None = None

    def __enter__(self) -> KeylessSigner:
        from sigstore.oidc import IdentityToken
        from sigstore.sign import SigningContext

        raw_token = resolve_identity_token(
            self.options.identity_token, ambient=self.options.ambient
        )
        try:
            token = IdentityToken(raw_token)
        except Exception as exc:
            # never echo the token itself
            raise InvalidInputError(
                f"the OIDC identity token is not usable: {exc}",
                hint="tokens must carry aud=sigstore, iss, sub, iat and exp, and be unexpired",
            ) from None
        self.identity = token.identity
        self.issuer = token.federated_issuer
        config = _load_trust_config(self.options)
        try:
            context = SigningContext.from_trust_config(config)
            self._signer = self._stack.enter_context(context.signer(token, cache=True))
        except Exception as exc:
            raise _translate(exc, "obtaining a signing certificate from Fulcio") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def sign(self, statement: Statement) -> bytes:
        """Sign the statement's exact bytes as a DSSE bundle; returns the bundle JSON."""
        from sigstore import dsse

        if self._signer is None:
            raise RuntimeError("KeylessSigner used outside its context")
        try:
            bundle = self._signer.sign_dsse(dsse.Statement(statement.raw))
        except Exception as exc:
            raise _translate(exc, "logging the signature in Rekor") from exc
        return str(bundle.to_json()).encode("utf-8")


def _translate(exc: Exception, step: str) -> ModelRegError:
    """sigstore / requests exceptions to the modelreg tree (no secrets in messages)."""
    if isinstance(exc, ModelRegError):
        return exc
    name = type(exc).__name__
    module = type(exc).__module__
    if module.startswith(("requests", "urllib3")) or "Connection" in name or "Timeout" in name:
        return NetworkError(
            f"keyless signing failed while {step}: {name}",
            hint="check the network path to the Sigstore services (or --trust-config URLs)",
        )
    return ModelRegError(
        f"keyless signing failed while {step}: {name}: {exc}",
        hint="run again with --verbose; check the identity token and the trust configuration",
    )
