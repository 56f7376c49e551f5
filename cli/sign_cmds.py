"""``modelreg keygen | sign | attest | verify | referrers``.

Exit codes as everywhere: 0 ok · 2 bad input · 3 not found · 4 auth · 6 registry
or network · 7 verification failed · 8 malformed content · 9 policy unusable.

Secrets: key passphrases come from ``MODELREG_KEY_PASSWORD`` / ``MODELREG_PASSWORD``
/ ``COSIGN_PASSWORD`` or a prompt; OIDC tokens from ``SIGSTORE_ID_TOKEN``, a file,
the CI's ambient credentials, or (discouraged: visible in process listings) a flag.

The library is imported inside the commands: ``modelreg --help`` and the other
commands do not pay for sigstore and cryptography.
"""

# No ``from __future__ import annotations``: typer reads these annotations at runtime.
import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from modelreg_cli.context import REGISTRY_FLAGS, Command, Remote, registry_flags, warn
from modelreg_cli.options import (
    CertificateIdentityOpt,
    CertificateIdentityRegexpOpt,
    CertificateOidcIssuerOpt,
    JsonOpt,
    TrustedRootOpt,
)
from modelreg_cli.render import out_console, print_json
from modelreg_cli.signing import KEYLESS_FLAGS, Keyless, keyless_flags
from modelreg_cli.wiring import registrar

from modelreg.errors import InvalidInputError, NotFoundError

commands = typer.Typer()

KeyOpt = Annotated[
    Path | None, typer.Option("--key", metavar="KEY", help="Private key (PEM) to sign with.")
]
ATTEST_ALIASES = {
    "slsa": "https://slsa.dev/provenance/v1",
    "slsaprovenance": "https://slsa.dev/provenance/v1",
    "slsaprovenance1": "https://slsa.dev/provenance/v1",
    "provenance": "https://slsa.dev/provenance/v1",
    "lineage": "https://modelreg.dev/attestations/training-lineage/v1",
    "training-lineage": "https://modelreg.dev/attestations/training-lineage/v1",
    "scan": "https://modelreg.dev/attestations/model-scan/v1",
    "model-scan": "https://modelreg.dev/attestations/model-scan/v1",
}
MAX_PREDICATE_BYTES = 16 * 1024 * 1024
EXIT_NOT_VERIFIED = 7


# ----------------------------------------------------------------------- keygen
@commands.command("keygen")
def keygen(
    output_key_file: Annotated[
        Path,
        typer.Option("--output-key-file", metavar="FILE", help="Private key file (mode 0600)."),
    ] = Path("modelreg.key"),
    output_pub_file: Annotated[
        Path | None,
        typer.Option(
            "--output-pub-file", metavar="FILE", help="Public key file (default: KEY with .pub)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Generate an ECDSA P-256 key pair: modelreg.key (PEM, encrypted with a passphrase)
    and modelreg.pub. cosign reads the public key as it is; for the private key, convert
    it once with `cosign import-key-pair --key modelreg.key`."""
    from modelreg.sign import generate_private_key, key_fingerprint, write_key_pair

    with Command(json_output):
        pub = output_pub_file or output_key_file.with_suffix(".pub")
        password = _read_password(confirm=True)
        if not password:
            warn("empty passphrase: the private key is not encrypted")
        key = generate_private_key()
        write_key_pair(key, output_key_file, pub, password, force=force)
        doc = {
            "privateKey": str(output_key_file),
            "publicKey": str(pub),
            "fingerprint": key_fingerprint(key.public_key()),
            "encrypted": bool(password),
        }
        if json_output:
            print_json(doc)
        else:
            out_console.print(
                f"private key written to {output_key_file}\npublic key written to {pub}\n"
                f"fingerprint {doc['fingerprint']}\n"
                f"for cosign: `cosign verify --key {pub}` reads the public key as it is; "
                f"`cosign import-key-pair --key {output_key_file}` converts the private key",
                markup=False,
            )


# ------------------------------------------------------------------------- sign
@commands.command("sign")
@registry_flags()
@keyless_flags()
def sign(
    ref: Annotated[str, typer.Argument(help="Model to sign (tag or digest; signed by digest).")],
    key: KeyOpt = None,
    keyless: Keyless = KEYLESS_FLAGS,
    no_model_signature: Annotated[
        bool,
        typer.Option(
            "--no-model-signature",
            help="Sign only the manifest, not the model-transparency file list.",
        ),
    ] = False,
    output_signature: Annotated[
        Path | None,
        typer.Option(
            "--output-signature",
            metavar="FILE",
            help="Also write the model-level bundle here (for `model_signing verify`).",
        ),
    ] = None,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
) -> None:
    """Sign a model: cosign v3 signature + model-level statement, stored as referrers."""
    from modelreg import sign as signing

    with Command(json_output, remote) as cmd:
        with (
            _signer(key, keyless) as signer,
            cmd.client() as client,
        ):
            resolved, target, desc = client.resolve(ref)
            result = signing.sign(
                target,
                desc,
                signer,
                name=str(resolved.name),
                model_signature=not no_model_signature,
            )
        pinned = str(resolved.with_digest(desc.digest))
        if output_signature is not None:
            _write_model_bundle(result, output_signature)
        _show_signed(pinned, result, json_output)


def _write_model_bundle(result: Any, path: Path) -> None:
    """--output-signature: the model-level bundle, for `model_signing verify`."""
    from modelreg.sign import MODEL_SIGNING_PREDICATE

    model_bundle = result.bundle_for(MODEL_SIGNING_PREDICATE)
    if model_bundle is None:
        raise InvalidInputError(
            "no model-level signature was made, so --output-signature has nothing to write",
            hint="; ".join(result.notes) or None,
        )
    path.write_bytes(model_bundle)


def _show_signed(pinned: str, result: Any, json_output: bool) -> None:
    if json_output:
        print_json({"reference": pinned, **result.to_dict()})
        return
    out_console.print(f"signed {pinned}", markup=False)
    out_console.print(f"  signer {result.signer}", markup=False)
    for b in result.bundles:
        out_console.print(f"  {b.predicate_type}  referrer {b.referrer.digest}", markup=False)
    for note in result.notes:
        out_console.print(f"  note: {note}", markup=False)


# ----------------------------------------------------------------------- attest
@commands.command("attest")
@registry_flags()
@keyless_flags()
def attest(
    ref: Annotated[str, typer.Argument(help="Model the attestation is about.")],
    type_: Annotated[
        str,
        typer.Option(
            "--type", metavar="TYPE", help="Predicate type URI, or slsa | training-lineage | scan."
        ),
    ],
    predicate: Annotated[
        Path | None,
        typer.Option(
            "--predicate",
            metavar="FILE",
            help="JSON file with the predicate (built in for slsa and scan when omitted).",
        ),
    ] = None,
    key: KeyOpt = None,
    keyless: Keyless = KEYLESS_FLAGS,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
) -> None:
    """Sign a predicate about a model: SLSA provenance, training lineage, scan, any file."""
    from modelreg import sign as signing

    with Command(json_output, remote) as cmd:
        predicate_type = _predicate_type(type_)
        body = _read_predicate(predicate) if predicate is not None else None
        with (
            _signer(key, keyless) as signer,
            cmd.client() as client,
        ):
            resolved, target, desc = client.resolve(ref)
            pinned = str(resolved.with_digest(desc.digest))
            if body is None:
                body = _built_in_predicate(predicate_type, pinned, target, desc)
            result = signing.attest(
                target, desc, signer, predicate_type, body, name=str(resolved.name)
            )
        if json_output:
            print_json({"reference": pinned, **result.to_dict()})
        else:
            out_console.print(f"attested {pinned}", markup=False)
            for b in result.bundles:
                out_console.print(
                    f"  {b.predicate_type}  referrer {b.referrer.digest}", markup=False
                )


def _predicate_type(type_: str) -> str:
    """--type: a predicate type URI, or one of the ATTEST_ALIASES."""
    predicate_type = ATTEST_ALIASES.get(type_.lower(), type_)
    if "://" not in predicate_type:
        raise InvalidInputError(
            f"--type {type_!r} is neither a predicate type URI nor a known alias",
            hint="use a URI or one of: " + ", ".join(sorted(ATTEST_ALIASES)),
        )
    return predicate_type


def _read_predicate(path: Path) -> dict[str, Any]:
    """--predicate FILE: a JSON object of at most MAX_PREDICATE_BYTES."""
    try:
        if path.stat().st_size > MAX_PREDICATE_BYTES:
            raise InvalidInputError(f"--predicate {str(path)!r} is too large")
        body = json.loads(path.read_bytes())
    except OSError as exc:
        raise InvalidInputError(f"cannot read --predicate {str(path)!r}: {exc.strerror}") from exc
    except ValueError as exc:
        raise InvalidInputError(f"--predicate {str(path)!r} is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidInputError("the predicate must be a JSON object")
    return body


def _built_in_predicate(predicate_type: str, pinned: str, target: Any, desc: Any) -> Any:
    """The predicates modelreg can write without --predicate: SLSA provenance, scan."""
    from modelreg import sign as signing

    if predicate_type == signing.SLSA_PROVENANCE_V1:
        return signing.slsa_provenance(source=pinned)
    if predicate_type == signing.MODEL_SCAN_PREDICATE:
        return signing.model_scan(signing.scan_findings(target, desc))
    raise InvalidInputError(
        f"--type {predicate_type} needs --predicate FILE",
        hint="slsa and scan are built in; other types come from a file",
    )


# ----------------------------------------------------------------------- verify
@commands.command("verify")
@registry_flags()
def verify(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="REF|DIR", help="Model reference, or a pulled directory with --signature."
        ),
    ],
    key: Annotated[
        list[Path] | None,
        typer.Option("--key", metavar="KEY", help="Trusted public key (PEM); repeatable (N-of-M)."),
    ] = None,
    certificate_identity: CertificateIdentityOpt = None,
    certificate_identity_regexp: CertificateIdentityRegexpOpt = None,
    certificate_oidc_issuer: CertificateOidcIssuerOpt = None,
    threshold: Annotated[
        int, typer.Option("--threshold", min=1, help="Distinct authorities needed (N of M).")
    ] = 1,
    require_attestation: Annotated[
        list[str] | None,
        typer.Option(
            "--require-attestation",
            help="Predicate type (or slsa | training-lineage | scan) that must be attested.",
        ),
    ] = None,
    trusted_root: TrustedRootOpt = None,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="No network except the registry (the production root from the local cache).",
        ),
    ] = False,
    signature: Annotated[
        Path | None,
        typer.Option(
            "--signature",
            metavar="FILE",
            help="Model signature file: verify DIR, a pulled directory, against it "
            "(from `pull --save-signature`, `referrers --save-model-signature` or "
            "`sign --output-signature`).",
        ),
    ] = None,
    ignore_path: Annotated[
        list[str] | None,
        typer.Option(
            "--ignore-path",
            metavar="PATH",
            help="Directory mode: a path to leave out (repeatable).",
        ),
    ] = None,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
) -> None:
    """Verify a model's signatures and attestations (exit 7 when it does not verify).

    REF|DIR is a directory when it is spelled as a path (/x, ./x, ../x), or when it
    has no ':' or '@' and a directory of that name exists; otherwise a reference."""
    from modelreg.verify import policy_from_options, verify_reference

    with Command(json_output, remote) as cmd:
        if signature is None:
            _refuse_directory_without_signature(ref, key or [])
        policy = policy_from_options(
            keys=key or [],
            identities=certificate_identity or [],
            identity_regexps=certificate_identity_regexp or [],
            issuer=certificate_oidc_issuer,
            threshold=threshold,
            required_attestations=[
                ATTEST_ALIASES.get(t.lower(), t) for t in require_attestation or []
            ],
            trusted_root=trusted_root,
            offline=offline or trusted_root is not None,
        )
        if signature is not None:
            ok = _verify_directory(ref, signature, policy, ignore_path or (), json_output)
        else:
            with cmd.client() as client:
                verified = verify_reference(client, ref, policy)
            ok = verified.result.ok
            if json_output:
                print_json({"reference": str(verified.reference), **verified.result.to_dict()})
            else:
                _render_verification(str(verified.reference), verified.result)
    if not ok:
        raise typer.Exit(EXIT_NOT_VERIFIED)


def _refuse_directory_without_signature(ref: str, keys: list[Path]) -> None:
    """verify DIR without --signature: say what to pass and where to get it."""
    from modelreg.attest.coverage import SIGNATURE_NAME
    from modelreg.verify import directory_argument

    directory = directory_argument(ref)
    if directory is None:
        return
    if not directory.is_dir():
        raise InvalidInputError(
            f"{ref!r} is spelled as a path, and no directory is there",
            hint="pass a pulled directory, or a reference such as registry/repo:tag",
        )
    beside = directory / SIGNATURE_NAME
    key_flags = " ".join(f"--key {k}" for k in keys) or "--key KEY"
    verify = f"`modelreg verify {ref} {key_flags} --signature {beside}`"
    if beside.is_file():
        how = f"it has its signature: run {verify}"
    else:
        how = (
            f"run {verify} after saving the signature there with `modelreg pull REF "
            f"-o {ref} --save-signature {beside}` (or `modelreg referrers REF "
            "--save-model-signature FILE`)"
        )
    raise InvalidInputError(
        f"{ref!r} is a directory: verifying one needs its model signature (--signature FILE)",
        hint=f"{how}; or pass the model's reference to verify it in the registry",
    )


def _verify_directory(
    ref: str, signature: Path, policy: Any, ignore_paths: Any, json_output: bool
) -> bool:
    """verify DIR --signature FILE: a pulled directory against a model-level bundle."""
    from modelreg.verify import verify_directory

    directory = Path(ref)
    if not directory.is_dir():
        raise InvalidInputError(
            f"--signature verifies a directory, and {ref!r} is not one",
            hint="drop --signature to verify a registry reference",
        )
    outcome = verify_directory(directory, signature, policy, ignore_paths=ignore_paths)
    if json_output:
        print_json(outcome.to_dict())
        return bool(outcome.ok)
    verdict = "[green]verified[/green]" if outcome.ok else "[red]NOT verified[/red]"
    out_console.print(f"{verdict} {directory}", highlight=False)
    if outcome.signer:
        who = f"{outcome.signer} ({outcome.issuer})" if outcome.issuer else outcome.signer
        out_console.print(f"  signer  {who}", markup=False)
    out_console.print(f"  files   {outcome.files}", markup=False)
    for failure in outcome.failures:
        out_console.print(f"  failure: {failure}", markup=False)
    return bool(outcome.ok)


def _render_verification(reference: str, result: Any) -> None:
    if result.ok:
        out_console.print(f"[green]verified[/green] {reference}", highlight=False)
    else:
        out_console.print(f"[red]NOT verified[/red] {reference}", highlight=False)
    out_console.print(
        f"  digest      {result.digest}\n  signatures  {result.authorities_satisfied} of "
        f"{result.threshold} required authorities",
        markup=False,
    )
    for sig in result.signatures:
        who = f"{sig.signer} ({sig.issuer})" if sig.issuer else sig.signer
        out_console.print(
            f"  signature   {sig.kind:<7} {who}  authority={sig.authority}  "
            f"bundle={sig.bundle_digest[:19]}",
            markup=False,
        )
    for att in result.attestations:
        out_console.print(
            f"  attestation {att.predicate_type}  by {att.signer}  bundle={att.bundle_digest[:19]}",
            markup=False,
        )
    for failure in result.failures:
        out_console.print(f"  failure: {failure}", markup=False)


# -------------------------------------------------------------------- referrers
@commands.command("referrers")
@registry_flags()
def referrers(
    ref: Annotated[str, typer.Argument(help="Model whose signatures and attestations to list.")],
    save_model_signature: Annotated[
        Path | None,
        typer.Option(
            "--save-model-signature",
            help="Write the newest model-level bundle to this file (for model_signing).",
        ),
    ] = None,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
) -> None:
    """List the tree of signatures and attestations of a model (not verified: use verify)."""
    with Command(json_output, remote) as cmd:
        with cmd.client() as client:
            resolved, target, desc = client.resolve(ref)
            tree = referrer_tree(target, desc)
            if save_model_signature is not None:
                _save_model_signature(target, desc, save_model_signature)
        pinned = str(resolved.with_digest(desc.digest))
        if json_output:
            print_json({"reference": pinned, "digest": str(desc.digest), "referrers": tree})
            return
        out_console.print(pinned, markup=False)
        _print_tree(out_console, tree, "  ")
        if not tree:
            out_console.print("  (no referrers)")


def referrer_tree(target: Any, desc: Any, depth: int = 0) -> list[dict[str, Any]]:
    """Referrers of ``desc`` (and theirs, two levels deep) plus legacy cosign tags."""
    from modelreg.attest.storage import MAX_REFERRERS, legacy_tag
    from modelreg.oci import mediatypes as mt
    from modelreg.sign import ANN_PREDICATE_TYPE

    rows: list[dict[str, Any]] = []
    found = target.referrers(desc)[:MAX_REFERRERS]
    for r in found:
        row = {
            "digest": str(r.digest),
            "mediaType": r.media_type,
            "artifactType": r.artifact_type,
            "predicateType": r.annotations.get(ANN_PREDICATE_TYPE),
            "created": r.annotations.get(mt.ANN_CREATED),
            "size": r.size,
        }
        if depth < 2 and r.media_type in mt.ALL_MANIFEST_TYPES:
            children = referrer_tree(target, r, depth + 1)
            if children:
                row["referrers"] = children
        rows.append(row)
    if depth == 0:
        for suffix in ("sig", "att"):
            tag = legacy_tag(desc, suffix)
            try:
                legacy = target.resolve(tag)
            except NotFoundError:
                continue
            rows.append(
                {
                    "digest": str(legacy.digest),
                    "mediaType": legacy.media_type,
                    "artifactType": f"legacy cosign .{suffix}",
                    "predicateType": None,
                    "created": None,
                    "size": legacy.size,
                    "tag": tag,
                }
            )
    return rows


def _print_tree(console: Any, rows: list[dict[str, Any]], indent: str) -> None:
    for row in rows:
        what = row.get("predicateType") or row.get("artifactType") or row["mediaType"]
        when = f"  {row['created']}" if row.get("created") else ""
        console.print(f"{indent}{row['digest'][:19]}  {what}{when}", markup=False)
        _print_tree(console, row.get("referrers", []), indent + "  ")


def _save_model_signature(target: Any, desc: Any, path: Path) -> None:
    from modelreg.verify import model_signature_bundle

    path.write_bytes(model_signature_bundle(target, desc))


# -------------------------------------------------------------- signing material
def _read_password(confirm: bool) -> bytes | None:
    from modelreg.sign import password_from_env

    from_env = password_from_env()
    if from_env is not None:
        return from_env
    if not sys.stdin.isatty():
        raise InvalidInputError(
            "the private key passphrase is needed and there is no terminal to ask it on",
            hint="set MODELREG_KEY_PASSWORD (or COSIGN_PASSWORD); an empty value means no "
            "encryption",
        )
    value: str = typer.prompt(
        "Enter password for private key", hide_input=True, confirmation_prompt=confirm
    )
    return value.encode("utf-8")


def _key_signer(key_path: Path) -> Any:
    from modelreg.sign import KeySigner, load_private_key

    data = key_path.read_bytes() if key_path.is_file() else None
    if data is None:
        raise InvalidInputError(f"--key {str(key_path)!r} is not a file")
    password = _read_password(confirm=False) if b"ENCRYPTED" in data else None
    return KeySigner(load_private_key(data, password))


def _signer(key: Path | None, flags: Keyless) -> Any:
    """A context manager yielding a BundleSigner."""
    from modelreg.sign import KeylessOptions, KeylessSigner

    if (key is None) == (not flags.keyless):
        raise InvalidInputError(
            "choose one way to sign: --key FILE or --keyless",
            hint="keyless signing uses Sigstore (an OIDC identity, Fulcio and Rekor)",
        )
    if key is not None:
        return contextlib.nullcontext(_key_signer(key))
    token = flags.identity_token
    if flags.identity_token_file is not None:
        try:
            token = flags.identity_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InvalidInputError(f"cannot read --identity-token-file: {exc.strerror}") from exc
    return KeylessSigner(
        KeylessOptions(
            identity_token=token,
            staging=flags.staging,
            trust_config=str(flags.trust_config) if flags.trust_config else None,
        )
    )


register = registrar(commands)
