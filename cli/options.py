"""The typer option types that the ``modelreg`` commands share: one definition each.

Every command that talks to a registry declares the same remote flags with the same
words (``--plain-http``, ``--insecure``, ``--ca-file``, and ``--concurrency`` where it
moves blobs); :class:`modelreg_cli.context.Remote` gathers them. ``cp`` adds the same
three per side (``--from-ca-file``, ``--to-plain-http``, ...), and ``--hosts-dir``
replaces the per-host configuration's search path. This module imports
no other ``modelreg_cli`` module, so every one of them can import it without a cycle.
"""

from pathlib import Path
from typing import Annotated

import typer

from modelreg.errors import InvalidInputError

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]

# ------------------------------------------------------------------ remote flags
PlainHttpOpt = Annotated[
    bool,
    typer.Option(
        "--plain-http",
        help="Talk HTTP, not HTTPS, to the registry (loopback hosts need not say so).",
    ),
]
InsecureOpt = Annotated[
    bool, typer.Option("--insecure", help="Do not verify the registry's TLS certificate (warns).")
]
CaFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--ca-file", metavar="FILE", help="PEM file of CA certificates to trust for the registry."
    ),
]
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
FromPlainHttpOpt = Annotated[
    bool, typer.Option("--from-plain-http", help="Talk HTTP, not HTTPS, to the source registry.")
]
FromInsecureOpt = Annotated[
    bool,
    typer.Option("--from-insecure", help="Do not verify the source registry's TLS certificate."),
]
FromCaFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--from-ca-file",
        metavar="FILE",
        help="PEM file of CA certificates for the source registry.",
    ),
]
ToPlainHttpOpt = Annotated[
    bool,
    typer.Option("--to-plain-http", help="Talk HTTP, not HTTPS, to the destination registry."),
]
ToInsecureOpt = Annotated[
    bool,
    typer.Option("--to-insecure", help="Do not verify the destination registry's TLS certificate."),
]
ToCaFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--to-ca-file",
        metavar="FILE",
        help="PEM file of CA certificates for the destination registry.",
    ),
]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="No progress on stderr (bars, or log lines when not a terminal)."
    ),
]
ConcurrencyOpt = Annotated[
    int, typer.Option("--concurrency", min=1, max=64, help="Blobs transferred in parallel.")
]

PolicyOpt = Annotated[
    list[Path],
    typer.Option(
        "--policy",
        "-p",
        metavar="PATH",
        help="Policy file or directory of *.yaml policies (repeatable).",
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
