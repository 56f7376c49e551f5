"""The typer option types that the ``modelreg`` commands share: one definition each.

Every command that talks to a registry declares the same remote flags with the same
words (``--plain-http``, ``--insecure``, ``--ca-file``, and ``--concurrency`` where it
moves blobs); :class:`modelreg_cli.context.Remote` gathers them. ``cp`` adds the same
three per side (``--from-ca-file``, ``--to-plain-http``, ...), and ``--hosts-dir``
replaces the per-host configuration's search path. This module imports
no other ``modelreg_cli`` module, so every one of them can import it without a cycle.
"""

from pathlib import Path
from typing import Annotated, Any

import typer

from modelreg.errors import InvalidInputError

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
# `rm`, `prune` and `cache prune`
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="List what would be removed; remove nothing.")
]
# `hosts` and `webhook serve`: where registry credentials are looked up
DockerConfigOpt = Annotated[
    Path | None,
    typer.Option("--docker-config", help="Docker config.json to look credentials up in."),
]


# ------------------------------------------------------------------ remote flags
# One wording per flag, for the registry of every command and for each side of `cp`.
def _plain_http(flag: str, registry: str, note: str = "") -> Any:
    return typer.Option(flag, help=f"Talk HTTP, not HTTPS, to {registry}{note}.")


def _insecure(flag: str, registry: str, note: str = "") -> Any:
    return typer.Option(flag, help=f"Do not verify {registry}'s TLS certificate{note}.")


def _ca_file(flag: str, registry: str) -> Any:
    return typer.Option(
        flag, metavar="FILE", help=f"PEM file of CA certificates to trust for {registry}."
    )


PlainHttpOpt = Annotated[
    bool, _plain_http("--plain-http", "the registry", " (loopback hosts need not say so)")
]
InsecureOpt = Annotated[bool, _insecure("--insecure", "the registry", " (warns)")]
CaFileOpt = Annotated[Path | None, _ca_file("--ca-file", "the registry")]
HostsDirOpt = Annotated[
    str | None,
    typer.Option(
        "--hosts-dir",
        metavar="DIR[:DIR...]",
        # one line in every registry command's help: `modelreg hosts --help` says the rest
        help="DIRs of HOST/hosts.toml (see `modelreg hosts`).",
    ),
]

# `cp`'s per-side flags (oras's words): they beat the shared flags for one side
FromPlainHttpOpt = Annotated[bool, _plain_http("--from-plain-http", "the source registry")]
FromInsecureOpt = Annotated[bool, _insecure("--from-insecure", "the source registry")]
FromCaFileOpt = Annotated[Path | None, _ca_file("--from-ca-file", "the source registry")]
ToPlainHttpOpt = Annotated[bool, _plain_http("--to-plain-http", "the destination registry")]
ToInsecureOpt = Annotated[bool, _insecure("--to-insecure", "the destination registry")]
ToCaFileOpt = Annotated[Path | None, _ca_file("--to-ca-file", "the destination registry")]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="No progress on stderr (bars, or log lines when not a terminal)."
    ),
]
ConcurrencyOpt = Annotated[
    int, typer.Option("--concurrency", min=1, max=64, help="Blobs transferred in parallel.")
]


def _policy() -> Any:
    return typer.Option(
        "--policy",
        "-p",
        metavar="PATH",
        help="Policy file or directory of *.yaml policies (repeatable).",
    )


PolicyOpt = Annotated[list[Path], _policy()]
# `ci`'s: none given is not a usage error there (ci verify says what is missing)
OptionalPolicyOpt = Annotated[list[Path] | None, _policy()]

# ------------------------------------------------------------- keyless signing
# `sign`, `attest` and `ci publish` sign keyless the same way (sigstore's words).
KeylessOpt = Annotated[
    bool,
    typer.Option("--keyless", help="Sign with a Sigstore certificate for your OIDC identity."),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--identity-token",
        metavar="TOKEN",
        help="OIDC token for keyless signing (prefer SIGSTORE_ID_TOKEN: flags are visible "
        "to other users in process listings).",
    ),
]
TokenFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--identity-token-file", metavar="FILE", help="Read the OIDC token from this file."
    ),
]
StagingOpt = Annotated[
    bool, typer.Option("--staging", help="Use Sigstore's staging instance (keyless).")
]
TrustConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--trust-config",
        metavar="FILE",
        help="ClientTrustConfig JSON (trusted root + signing config) of a private Sigstore.",
    ),
]

# ------------------------------------------------------- keyless signer identities
# `verify` and `pull --verify-key ...` name the trusted keyless signers the same way
# (cosign's words).
CertificateIdentityOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--certificate-identity", metavar="ID", help="Trusted signer identity (exact SAN)."
    ),
]
CertificateIdentityRegexpOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--certificate-identity-regexp",
        "--identity-regexp",
        metavar="REGEX",
        help="Trusted identities: a regular expression matched against the whole SAN.",
    ),
]
CertificateOidcIssuerOpt = Annotated[
    str | None,
    typer.Option("--certificate-oidc-issuer", metavar="URL", help="OIDC issuer of the identities."),
]
# `pull`, `verify` and `prune --keep-signed-identity`: a root given is the whole trust
TrustedRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--trusted-root",
        metavar="FILE",
        help="Sigstore trusted_root.json for keyless signatures (verifies offline).",
    ),
]
# The names `pull` had before it used verify's: still accepted, no longer shown.
VerifyIdentityOpt = Annotated[list[str] | None, typer.Option("--verify-identity", hidden=True)]
VerifyIdentityRegexpOpt = Annotated[
    list[str] | None, typer.Option("--verify-identity-regexp", hidden=True)
]
VerifyOidcIssuerOpt = Annotated[str | None, typer.Option("--verify-oidc-issuer", hidden=True)]


def parse_annotations(items: list[str] | None) -> dict[str, str]:
    """``--annotation KEY=VALUE`` (repeatable) as a dict; the last of a key wins."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"--annotation {item!r} is not KEY=VALUE")
        out[key] = value
    return out
