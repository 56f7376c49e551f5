"""Verify signatures and attestations of models: in a registry, a layout, or a directory.

Public API (a contract other components build on; extended only compatibly)::

    policy = VerificationPolicy(
        authorities=(KeyAuthority(Path("cosign.pub").read_bytes(), name="release"),
                     KeylessAuthority(issuer="https://token.actions.githubusercontent.com",
                                      identity_regexp=r"https://github\\.com/acme/.*")),
        threshold=1,
        required_attestations=("https://slsa.dev/provenance/v1",),
        trusted_root="trusted_root.json",
    )
    result = verify_artifact(target, desc, policy)     # desc: resolved once, by digest
    if not result.ok: print(result.failures)

* :func:`verify_artifact` never raises for "not verified"; it raises a
  :class:`~modelreg.errors.ModelRegError` only when verification could not run
  (callers fail closed).
* :func:`verify_reference` resolves a reference once and verifies the digest.
* :func:`verify_before_pull` verifies, then pulls *that digest*; nothing is
  written unless verification passed.
* :func:`verify_directory` checks a directory against a model-transparency
  signature file (``model_signing`` or ``modelreg`` made);
  :func:`model_signature_bundle` fetches that file's bytes from a digest's
  referrers (``pull --save-signature``, ``referrers --save-model-signature``).
* :func:`directory_argument` decides whether a command-line argument names a
  directory or a reference (the rule is in its docstring).

Bounded: one verification examines at most ``max_referrers`` (default 64,
``$MODELREG_MAX_SIGNATURE_REFERRERS``) bundle referrers, fetched in parallel and
checked in a fixed order, stopping once a signature-only policy is met (see
``_artifact.py``); a flood of pushed referrers costs a bounded amount of work.

Offline: key policies never touch the network; keyless policies with a
``trusted_root`` file read only that file; only the registry is contacted.

The formats it reads (bundles, DSSE, in-toto, key PEM, referrer storage) come
from :mod:`modelreg.attest`, the same code :mod:`modelreg.sign` writes with;
nothing here imports :mod:`modelreg.sign`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelreg.content.base import ReadOnlyTarget
from modelreg.errors import VerificationError
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.reference import Reference
from modelreg.verify._artifact import (
    Checked,
    VerifyContext,
    check_bundle,
    max_matching,
    prepare_policy,
    verify_artifact,
)
from modelreg.verify._directory import DirectoryVerificationResult, verify_directory
from modelreg.verify._types import (
    Authority,
    KeyAuthority,
    KeylessAuthority,
    VerificationPolicy,
    VerificationResult,
    VerifiedAttestation,
    VerifiedSignature,
)

__all__ = [
    "ArtifactVerificationError",
    "Authority",
    "DirectoryVerificationResult",
    "KeyAuthority",
    "KeylessAuthority",
    "VerificationPolicy",
    "VerificationResult",
    "VerifiedAttestation",
    "VerifiedReference",
    "VerifiedSignature",
    "directory_argument",
    "max_matching",
    "model_signature_bundle",
    "policy_from_options",
    "prepare_policy",
    "verify_artifact",
    "verify_before_pull",
    "verify_directory",
    "verify_reference",
]


class ArtifactVerificationError(VerificationError):
    """Verification ran and the artifact did not pass; ``result`` says why."""

    def __init__(
        self, message: str, result: VerificationResult, *, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.result = result


@dataclass(frozen=True)
class VerifiedReference:
    """A reference pinned to the digest that was verified, and the outcome."""

    reference: Reference
    target: ReadOnlyTarget
    descriptor: Descriptor
    result: VerificationResult


def _check_public_key(pem: bytes, path: Path) -> None:
    """A key file given to verify with is a public key: bad input (exit 2) naming the file
    otherwise, rather than a policy that cannot be evaluated."""
    from modelreg.attest.keys import load_public_key
    from modelreg.errors import InvalidInputError

    if b"PRIVATE KEY-----" in pem:
        raise InvalidInputError(
            f"key {str(path)!r} is a private key; verifying takes the public key",
            hint="pass its public key (of a `modelreg keygen` pair: "
            f"{str(path.with_suffix('.pub'))!r})",
        )
    try:
        load_public_key(pem)
    except InvalidInputError as exc:
        raise InvalidInputError(f"key {str(path)!r}: {exc.message}", hint=exc.hint) from exc


def policy_from_options(
    *,
    keys: Sequence[str | Path] = (),
    identities: Sequence[str] = (),
    identity_regexps: Sequence[str] = (),
    issuer: str | None = None,
    threshold: int = 1,
    required_attestations: Sequence[str] = (),
    trusted_root: str | Path | None = None,
    offline: bool = True,
) -> VerificationPolicy:
    """A policy from CLI-style options (key files, identities with one issuer)."""
    from modelreg.errors import InvalidInputError

    authorities: list[Authority] = []
    for key in keys:
        path = Path(key)
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise InvalidInputError(f"cannot read key {str(path)!r}: {exc.strerror}") from exc
        _check_public_key(pem, path)
        authorities.append(KeyAuthority(pem, name=path.name))
    if (identities or identity_regexps) and not issuer:
        raise InvalidInputError(
            "a certificate identity needs its OIDC issuer",
            hint="add --certificate-oidc-issuer (e.g. https://token.actions.githubusercontent.com)",
        )
    if issuer and not (identities or identity_regexps):
        raise InvalidInputError(
            "--certificate-oidc-issuer needs --certificate-identity "
            "or --certificate-identity-regexp"
        )
    for ident in identities:
        authorities.append(KeylessAuthority(issuer=str(issuer), identity=ident))
    for regexp in identity_regexps:
        authorities.append(KeylessAuthority(issuer=str(issuer), identity_regexp=regexp))
    if not authorities:
        raise InvalidInputError(
            "nothing to verify against",
            hint="pass --key FILE, or --certificate-identity[-regexp] "
            "with --certificate-oidc-issuer",
        )
    return VerificationPolicy(
        authorities=tuple(authorities),
        threshold=threshold,
        required_attestations=tuple(required_attestations),
        trusted_root=str(trusted_root) if trusted_root is not None else None,
        offline=offline,
    )


def directory_argument(arg: str) -> Path | None:
    """The directory ``arg`` names, or None when it is a reference.

    One rule, so that ``verify DIR`` never reports "invalid reference" for a path:

    * a path by its spelling is a path, existing or not: absolute (``/x``), or
      relative from ``.`` or ``..`` (``./x``, ``../x``, ``.``, ``..``): no
      reference is spelled that way;
    * otherwise anything holding ``:`` or ``@`` is a reference (``team/llm:v1``,
      ``host:5000/llm``, ``llm@sha256:...``, ``oci:DIR``), even when a directory
      of that name exists: write ``./team/llm:v1`` to mean the directory;
    * otherwise (a bare name like ``llm`` or ``team/llm``) an existing directory
      wins over the store reference ``team/llm`` (tag ``latest``), which a user
      who names a directory in the current one rarely means; write
      ``team/llm:latest`` to mean the reference.
    """
    first = arg.split("/", 1)[0]
    if arg.startswith("/") or first in (".", ".."):
        return Path(arg)
    if ":" in arg or "@" in arg:
        return None
    path = Path(arg)
    return path if path.is_dir() else None


def model_signature_bundle(
    target: ReadOnlyTarget, desc: Descriptor, policy: VerificationPolicy | None = None
) -> bytes:
    """The newest model-level signature bundle (model-transparency, what
    ``model_signing verify`` and :func:`verify_directory` read) among the
    referrers of ``desc``.

    Without ``policy`` it is not verified here (the annotation that picks it is
    unauthenticated): the bundle is checked when a directory is verified against it.
    With ``policy``, the newest one whose signature verifies under it: a model signed
    both keyless and with a key gives the signature the caller will verify with, not
    whichever is newest. Raises :class:`~modelreg.errors.NotFoundError` when there is
    none (with ``policy``: none that the policy accepts).
    """
    import hashlib

    from modelreg.attest.model_transparency import MODEL_SIGNING_PREDICATE
    from modelreg.attest.storage import iter_bundles
    from modelreg.errors import NotFoundError

    context = VerifyContext(prepare_policy(policy)) if policy is not None else None
    rejected = 0
    for item in iter_bundles(target, desc):
        if isinstance(item, tuple) or item.predicate_type_hint != MODEL_SIGNING_PREDICATE:
            continue
        if context is None:
            return item.data
        digest = "sha256:" + hashlib.sha256(item.data).hexdigest()
        if isinstance(check_bundle(item.data, digest, context), Checked):
            return item.data
        rejected += 1
    if rejected:
        raise NotFoundError(
            f"{desc.digest} has {rejected} model-level signature(s), none by the keys or "
            "identities given",
            hint="pass the key or identity that signed the model",
        )
    raise NotFoundError(
        f"{desc.digest} has no model-level signature",
        hint="sign it with `modelreg sign REF --key KEY` (without --no-model-signature)",
    )


def verify_reference(
    client: Any, ref: Reference | str, policy: VerificationPolicy
) -> VerifiedReference:
    """Resolve ``ref`` once (``client.resolve``) and verify that digest."""
    prepare_policy(policy)  # a bad policy fails before any network I/O
    reference, target, desc = client.resolve(ref)
    result = verify_artifact(target, desc, policy)
    return VerifiedReference(reference.with_digest(desc.digest), target, desc, result)


def verify_before_pull(
    client: Any,
    ref: Reference | str,
    output: str | Path,
    policy: VerificationPolicy,
    **pull_kwargs: Any,
) -> tuple[VerificationResult, Any]:
    """Verify ``ref``, then pull exactly the verified digest into ``output``.

    Raises :class:`ArtifactVerificationError` (exit code 7) before anything is
    written when verification fails. Returns ``(result, PullResult)``.
    """
    verified = verify_reference(client, ref, policy)
    if not verified.result.ok:
        raise ArtifactVerificationError(
            f"{verified.reference} did not verify; nothing was written: "
            + "; ".join(verified.result.failures[:3]),
            verified.result,
            hint="check the key or identity, or inspect with `modelreg referrers`",
        )
    pulled = client.pull(verified.reference, output, **pull_kwargs)
    return verified.result, pulled
