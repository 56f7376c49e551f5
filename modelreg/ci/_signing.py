"""How a CI step signs: a key from a file or a secret, or keyless with the CI's OIDC identity.

Everything that can be checked without signing is checked *before* the push
(:func:`prepare_signing`): a key that does not load, a job without an OIDC token.
The GitHub token itself is requested only when signing starts (after the push),
so that a long upload cannot outlive it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from modelreg.errors import InvalidInputError, ModelRegError, NetworkError
from modelreg.settings import ci_environ
from modelreg.sign import (
    BundleSigner,
    KeylessOptions,
    KeylessSigner,
    KeySigner,
    PrivateKey,
    load_private_key,
    password_from_env,
)

__all__ = [
    "KEY_ENV",
    "TOKEN_ENV",
    "PreparedSigning",
    "SigningOptions",
    "prepare_signing",
]

KEY_ENV: Final = "MODELREG_SIGNING_KEY"
"""A PEM private key in the environment (a CI secret); used when no other way is chosen."""
TOKEN_ENV: Final = "SIGSTORE_ID_TOKEN"  # noqa: S105 - a variable name
GITHUB_TOKEN_TIMEOUT: Final = 30.0


@dataclass(frozen=True)
class SigningOptions:
    """``key``: a PEM file path or ``env://VAR`` (a secret in the environment).
    ``keyless``: Sigstore with an OIDC token (explicit, from a file, ``SIGSTORE_ID_TOKEN``,
    or the CI's ambient credentials). Neither: a key in ``MODELREG_SIGNING_KEY`` if set,
    else keyless."""

    key: str | None = None
    keyless: bool = False
    identity_token: str | None = None
    identity_token_file: str | None = None
    trust_config: str | None = None
    staging: bool = False
    key_password: bytes | None = None


@dataclass
class PreparedSigning:
    mode: Literal["key", "keyless"]
    key: PrivateKey | None = None
    key_source: str = ""
    token: str | None = None
    identity_origin: str = ""
    github_request: tuple[str, str] | None = None
    options: SigningOptions | None = None

    def describe(self) -> str:
        if self.mode == "key":
            return f"key ({self.key_source})"
        return f"keyless (OIDC token from {self.identity_origin})"

    @contextlib.contextmanager
    def signer(self) -> Iterator[BundleSigner]:
        """The signer; keyless obtains its token (GitHub) and certificate here."""
        if self.mode == "key":
            assert self.key is not None
            yield KeySigner(self.key)
            return
        assert self.options is not None
        token = self.token
        if token is None and self.github_request is not None:
            token = _github_token(*self.github_request)
        with KeylessSigner(
            KeylessOptions(
                identity_token=token,
                staging=self.options.staging,
                trust_config=self.options.trust_config,
                ambient=False,
            )
        ) as keyless:
            yield keyless


def _jwt_claims(token: str) -> dict[str, Any] | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def _check_token(token: str, source: str) -> str:
    token = token.strip()
    claims = _jwt_claims(token)
    if claims is None:
        raise InvalidInputError(
            f"the OIDC identity token from {source} is not a JWT",
            hint="pass the raw id token (three base64url parts separated by dots)",
        )
    exp = claims.get("exp")
    if isinstance(exp, int | float) and exp < time.time():
        raise InvalidInputError(
            f"the OIDC identity token from {source} has expired",
            hint="request a fresh token in the job that publishes",
        )
    return token


def _load_key(options: SigningOptions, env: Mapping[str, str]) -> tuple[PrivateKey, str]:
    spec = options.key or f"env://{KEY_ENV}"
    if spec.startswith("env://"):
        var = spec[len("env://") :]
        value = env.get(var)
        if not value:
            raise InvalidInputError(
                f"the signing key variable {var} is not set or empty",
                hint="map the secret into the job's environment, or pass --key FILE",
            )
        data = value.encode("utf-8")
        source = f"${var}"
    else:
        try:
            data = Path(spec).read_bytes()
        except OSError as exc:
            raise InvalidInputError(
                f"cannot read the signing key {spec!r}: {exc.strerror}",
                hint="pass the path of a PEM private key (modelreg keygen) or env://VAR",
            ) from exc
        source = spec
    password = options.key_password
    if password is None and b"ENCRYPTED" in data:
        password = password_from_env(env)
    return load_private_key(data, password), source


def prepare_signing(
    options: SigningOptions, environ: Mapping[str, str] | None = None
) -> PreparedSigning:
    """Choose the way to sign and check it can work; raises InvalidInputError if not."""
    env = ci_environ(environ)
    if options.key and options.keyless:
        raise InvalidInputError("choose one way to sign: a key or keyless, not both")
    use_key = bool(options.key) or (not options.keyless and bool(env.get(KEY_ENV)))
    if use_key:
        key, source = _load_key(options, env)
        return PreparedSigning("key", key=key, key_source=source)
    prepared = PreparedSigning("keyless", options=options)
    if options.identity_token:
        prepared.token = _check_token(options.identity_token, "--identity-token")
        prepared.identity_origin = "the command line"
    elif options.identity_token_file:
        path = options.identity_token_file
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInputError(
                f"cannot read the identity token file {path!r}: {exc.strerror}"
            ) from exc
        prepared.token = _check_token(text, f"file {path!r}")
        prepared.identity_origin = f"file {path}"
    elif env.get(TOKEN_ENV):
        prepared.token = _check_token(env[TOKEN_ENV], TOKEN_ENV)
        prepared.identity_origin = TOKEN_ENV
    elif env.get("GITHUB_ACTIONS") == "true":
        url = env.get("ACTIONS_ID_TOKEN_REQUEST_URL")
        bearer = env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
        if not url or not bearer:
            raise InvalidInputError(
                "keyless signing needs an OIDC identity token, and this GitHub Actions job "
                "cannot request one (ACTIONS_ID_TOKEN_REQUEST_URL/TOKEN are not set)",
                hint="give the job `permissions: id-token: write`, or sign with a key "
                f"(--key, or the {KEY_ENV} secret)",
            )
        prepared.github_request = (url, bearer)
        prepared.identity_origin = "GitHub Actions (id-token)"
    elif env.get("GITLAB_CI") == "true":
        raise InvalidInputError(
            f"keyless signing needs an OIDC identity token, and {TOKEN_ENV} is not set in "
            "this GitLab CI job",
            hint=f"declare `id_tokens: {TOKEN_ENV}: aud: sigstore` in the job, or sign with "
            f"a key (--key, or the {KEY_ENV} CI/CD variable)",
        )
    else:
        raise InvalidInputError(
            "keyless signing needs an OIDC identity token and none was found",
            hint=f"pass --identity-token[-file], set {TOKEN_ENV}, run in a CI job with an "
            f"id-token, or sign with a key (--key, or {KEY_ENV})",
        )
    return prepared


def _github_token(url: str, bearer: str) -> str:
    """Request an ``aud=sigstore`` token from the GitHub Actions OIDC endpoint."""
    import httpx

    try:
        # keep the service's own query (api-version=...): merge, do not replace
        response = httpx.get(
            httpx.URL(url).copy_merge_params({"audience": "sigstore"}),
            headers={"Authorization": f"bearer {bearer}", "Accept": "application/json"},
            timeout=GITHUB_TOKEN_TIMEOUT,
        )
    except httpx.HTTPError as exc:
        raise NetworkError(
            f"could not request the GitHub Actions OIDC token: {type(exc).__name__}",
            hint="check the runner's network path to the Actions token service",
        ) from None
    if response.status_code != 200:
        raise ModelRegError(
            f"the GitHub Actions OIDC token request failed with HTTP {response.status_code}",
            hint="check `permissions: id-token: write` on the job",
        )
    try:
        value = response.json()["value"]
    except (ValueError, KeyError, TypeError):
        value = None
    if not isinstance(value, str) or not value:
        raise ModelRegError("the GitHub Actions OIDC token service answered without a token")
    return _check_token(value, "GitHub Actions")
