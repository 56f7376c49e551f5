"""``modelreg push | pull | inspect | diff | cp | hosts | tags | login | logout | list``
and ``import hf``: moving models between directories, the embedded local store and registries.

Wired by ``main.py`` with ``core_cmds.register(app)``, before the feature modules, so
that ``modelreg --help`` lists these first.
"""

# No ``from __future__ import annotations``: typer reads these annotations at runtime.
import dataclasses
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from modelreg_cli.context import REGISTRY_FLAGS, Command, Remote, registry_flags, warn
from modelreg_cli.options import (
    CertificateIdentityOpt,
    CertificateIdentityRegexpOpt,
    CertificateOidcIssuerOpt,
    DockerConfigOpt,
    FromCaFileOpt,
    FromInsecureOpt,
    FromPlainHttpOpt,
    HostsDirOpt,
    JsonOpt,
    QuietOpt,
    ToCaFileOpt,
    ToInsecureOpt,
    ToPlainHttpOpt,
    TrustedRootOpt,
    VerifyIdentityOpt,
    VerifyIdentityRegexpOpt,
    VerifyOidcIssuerOpt,
    parse_annotations,
)
from modelreg_cli.render import human_size, out_console, plural, print_json
from modelreg_cli.wiring import command_group, registrar

from modelreg.errors import InvalidInputError

commands = typer.Typer()
META = "Model metadata (or the [descriptor] table of modelreg.toml)"
import_app = command_group("import", "Push models from other local caches.")


def _meta(flag: str, help_text: str) -> Any:
    """A push metadata flag: listed under its own heading, after the flags most pushes use."""
    return typer.Option(flag, metavar="TEXT", help=help_text, rich_help_panel=META)


# ------------------------------------------------------------------------- push
@commands.command("push")
@registry_flags(concurrency=True)
def push(
    path: Annotated[Path, typer.Argument(metavar="DIR", help="Model directory to push.")],
    ref: Annotated[
        str,
        typer.Argument(
            metavar="REF",
            help="Where to: registry/repo:tag, repo:tag (local store) or oci:DIR[:tag].",
        ),
    ],
    name: Annotated[str | None, _meta("--name", "Model name (default: directory name).")] = None,
    model_version: Annotated[str | None, _meta("--model-version", "Version string.")] = None,
    license_: Annotated[
        list[str] | None, _meta("--license", "SPDX license id (repeatable).")
    ] = None,
    author: Annotated[list[str] | None, _meta("--author", "Author (repeatable).")] = None,
    description: Annotated[str | None, _meta("--description", "One-line description.")] = None,
    source_url: Annotated[str | None, _meta("--source-url", "Where the model comes from.")] = None,
    revision: Annotated[str | None, _meta("--revision", "Source revision, e.g. a commit.")] = None,
    family: Annotated[str | None, _meta("--family", "Model family, e.g. llama3.")] = None,
    vendor: Annotated[str | None, _meta("--vendor", "Who publishes the model.")] = None,
    title: Annotated[str | None, _meta("--title", "Human-readable title.")] = None,
    doc_url: Annotated[str | None, _meta("--doc-url", "Where the model is documented.")] = None,
    split: Annotated[
        bool | None,
        typer.Option(
            "--split/--no-split",
            help="Store big weight files as tensor-aligned parts: a new version sends only "
            "the parts that changed.",
        ),
    ] = None,
    part_size: Annotated[
        str | None,
        typer.Option(
            "--part-size", metavar="SIZE", help="Target part size with --split (default 32MiB)."
        ),
    ] = None,
    annotation: Annotated[
        list[str] | None,
        typer.Option(
            "--annotation", "-a", metavar="KEY=VALUE", help="Manifest annotation (repeatable)."
        ),
    ] = None,
    allow_outside_links: Annotated[
        bool,
        typer.Option(
            "--allow-outside-links",
            help="Follow symlinks that point outside the model directory.",
        ),
    ] = False,
    no_chunk_index: Annotated[
        bool,
        typer.Option(
            "--no-chunk-index",
            help="Skip the chunk index that lets lazy reads verify chunk by chunk.",
        ),
    ] = False,
    chunk_index_alias: Annotated[
        bool,
        typer.Option("--chunk-index", hidden=True, help="The default; accepted for old scripts."),
    ] = False,
    pack_small: Annotated[
        str | None,
        typer.Option(
            "--pack-small",
            metavar="SIZE",
            help="Pack files below SIZE into shared tar layers (default 1MiB; 0: never).",
        ),
    ] = None,
    no_pack_small: Annotated[
        bool,
        typer.Option("--no-pack-small", hidden=True, help="Same as --pack-small 0."),
    ] = False,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
) -> None:
    """Pack a model directory as a ModelPack artifact and push it."""
    with Command(json_output, remote, quiet=quiet) as cmd:
        from modelreg.model.pack import ModelMetadata

        annotations = parse_annotations(annotation)
        meta = ModelMetadata(
            name=name,
            version=model_version,
            licenses=tuple(license_ or ()),
            authors=tuple(author or ()),
            description=description,
            source_url=source_url,
            revision=revision,
            family=family,
            vendor=vendor,
            title=title,
            doc_url=doc_url,
        )
        with cmd.client() as client, cmd.progress() as progress:
            result = client.push(
                path,
                ref,
                metadata=meta,
                annotations=annotations,
                allow_outside_links=allow_outside_links,
                progress=progress,
                split=split,
                part_size=part_size,
                chunk_index=not no_chunk_index,
                pack_small=False if no_pack_small else pack_small,
            )
        _show_pushed(result, json_output)


def _show_pushed(result: Any, json_output: bool) -> None:
    for warning in result.warnings:
        warn(warning)
    if json_output:
        print_json(result.to_dict())
        return
    t = result.transfer
    out_console.print(f"pushed {result.reference}")
    out_console.print(
        f"  sent {human_size(t.bytes_sent)} in {plural(t.blobs_sent, 'blob')}, "
        f"skipped {human_size(t.bytes_skipped)} in {t.blobs_skipped} already there, "
        f"mounted {human_size(t.bytes_mounted)} in {t.blobs_mounted}"
    )
    if result.split_files:
        out_console.print(
            f"  {plural(result.layers, 'layer')}: {plural(result.split_files, 'file')} "
            "stored as tensor-aligned parts"
        )


# ------------------------------------------------------------------------- pull
@commands.command("pull")
@registry_flags(concurrency=True)
def pull(
    ref: Annotated[str, typer.Argument(metavar="REF", help="Model to pull.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="DIR", help="Directory to write into."),
    ] = None,
    into: Annotated[
        Path | None,
        typer.Option(
            "--into",
            metavar="DIR",
            help="For init containers: write config and tokenizer files first, weights after; "
            "resumable (complete files are kept, re-checked by digest).",
        ),
    ] = None,
    include: Annotated[
        list[str] | None,
        typer.Option(
            "--include", metavar="GLOB", help="Only files matching this glob (repeatable)."
        ),
    ] = None,
    verify_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--verify-key", metavar="KEY", help="Write nothing unless signed by this public key."
        ),
    ] = None,
    certificate_identity: CertificateIdentityOpt = None,
    certificate_identity_regexp: CertificateIdentityRegexpOpt = None,
    certificate_oidc_issuer: CertificateOidcIssuerOpt = None,
    verify_identity: VerifyIdentityOpt = None,
    verify_identity_regexp: VerifyIdentityRegexpOpt = None,
    verify_oidc_issuer: VerifyOidcIssuerOpt = None,
    require_attestation: Annotated[
        list[str] | None,
        typer.Option(
            "--require-attestation", metavar="TYPE", help="Predicate type that must be attested."
        ),
    ] = None,
    trusted_root: TrustedRootOpt = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not keep fetched blobs in the local cache.")
    ] = False,
    link: Annotated[
        bool,
        typer.Option(
            "--link",
            help="Hard-link files from the cache (saves disk; do not edit the pulled files).",
        ),
    ] = False,
    cache_mode: Annotated[
        str | None,
        typer.Option(
            "--cache-mode",
            metavar="auto|copy|reference",
            help="What the cache keeps of what it lacked: auto (default; reflink, else "
            "remember the pulled files), copy (its own copy: every byte written twice without "
            "reflinks), reference (only where the pulled files are). Default: "
            "$MODELREG_CACHE_MODE, else auto.",
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace files already in the output directory whose content differs from "
            "the model's (without it the pull refuses and names them; identical files are "
            "always kept as they are).",
        ),
    ] = False,
    save_signature: Annotated[
        Path | None,
        typer.Option(
            "--save-signature",
            metavar="FILE",
            help="Write the model-level signature bundle of the pulled digest to this file "
            "(for `verify DIR --signature FILE` and model_signing); inside the output "
            "directory only as DIR/model.sig, the name signatures leave out.",
        ),
    ] = None,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
) -> None:
    """Pull a model's files into a directory; every byte is verified before it lands.

    Into a directory that is not empty: files of the model already there with the same
    content are kept, different ones refused (exit 2) unless --overwrite, other files
    left alone. A failed pull leaves the directory as it was."""
    with Command(json_output, remote, quiet=quiet) as cmd:
        if (output is None) == (into is None):
            raise InvalidInputError(
                "give exactly one of -o/--output DIR or --into DIR",
                hint="--into is the resumable, config-first mode for init containers",
            )
        # the hidden --verify-identity* spellings add to the shown ones
        identities = [*(certificate_identity or ()), *(verify_identity or ())]
        identity_regexps = [*(certificate_identity_regexp or ()), *(verify_identity_regexp or ())]
        issuer = _one_issuer(certificate_oidc_issuer, verify_oidc_issuer)
        verifying = bool(verify_key or identities or identity_regexps)
        _refuse_partial_verification(
            verifying, issuer=issuer, attestations=require_attestation, root=trusted_root
        )
        if into is not None and verifying:
            raise InvalidInputError(
                "--verify-key and --certificate-* flags go with -o/--output",
                hint="verify first with `modelreg verify`, or pull with -o",
            )
        if save_signature is not None:
            _check_signature_path(save_signature, output)
        policy = None
        if verifying:
            from modelreg.verify import policy_from_options

            policy = policy_from_options(
                keys=verify_key or [],
                identities=identities,
                identity_regexps=identity_regexps,
                issuer=issuer,
                required_attestations=require_attestation or [],
                trusted_root=trusted_root,
                offline=trusted_root is not None,
            )
        bundle: bytes | None = None
        with cmd.client() as client, cmd.progress() as progress:
            if save_signature is not None:
                # before any file is written: a model without one fails here (exit 3);
                # when verifying, the signature saved is one the same keys accept
                ref, bundle = _model_signature(client, ref, policy)
            if into is not None:
                _pull_into(cmd, client, ref, into, include, progress)
                return
            assert output is not None
            kwargs: dict[str, Any] = {
                "include": include or (),
                "cache": not no_cache,
                "link": link,
                "progress": progress,
                "cache_mode": _cache_mode(cache_mode, link),
                "overwrite": overwrite,
            }
            if policy is not None:
                from modelreg.verify import verify_before_pull

                _, result = verify_before_pull(client, ref, output, policy, **kwargs)
            else:
                result = client.pull(ref, output, **kwargs)
        if save_signature is not None and bundle is not None:
            _save_signature(save_signature, bundle, result)
        _show_pulled(result, json_output, save_signature)


def _check_signature_path(path: Path, output: Path | None) -> None:
    """--save-signature: with -o, and inside the output directory only as its model.sig.

    Any other file in the directory would be a file the signature does not list
    ("present but not signed") for every verifier that is not told to skip it;
    ``model.sig`` at the top is in the ignore_paths ``modelreg sign`` records, so
    ``modelreg verify`` and ``model_signing verify`` both leave it out.
    """
    from modelreg.attest.coverage import SIGNATURE_NAME

    if output is None:
        raise InvalidInputError(
            "--save-signature goes with -o/--output DIR",
            hint="with --into, save it with `modelreg referrers REF --save-model-signature FILE`",
        )
    try:
        inside = path.resolve().relative_to(output.resolve())
    except ValueError:
        return
    if inside.as_posix() != SIGNATURE_NAME:
        raise InvalidInputError(
            f"--save-signature {str(path)!r} is inside the output directory, where it would "
            "count as a file of the model and fail verification",
            hint=f"save it outside {str(output)!r}, or as {str(output / SIGNATURE_NAME)!r} "
            "(the one name model signatures leave out)",
        )


def _model_signature(client: Any, ref: str, policy: Any = None) -> tuple[str, bytes]:
    """The pull's reference pinned to its digest, and that digest's model signature
    (with ``policy``: the newest one it accepts)."""
    from modelreg.verify import model_signature_bundle

    resolved, target, desc = client.resolve(ref)
    return str(resolved.with_digest(desc.digest)), model_signature_bundle(target, desc, policy)


def _save_signature(path: Path, bundle: bytes, result: Any) -> None:
    """Write the bundle pull --save-signature fetched, after the files are in place."""
    from modelreg._fs import atomic_write
    from modelreg.attest.coverage import SIGNATURE_NAME

    if path.parent.resolve() == Path(result.output).resolve() and any(
        f.get("path") == SIGNATURE_NAME for f in result.files
    ):
        raise InvalidInputError(
            f"the model has a file named {SIGNATURE_NAME}; the signature was not saved over it",
            hint="save the signature outside the output directory",
        )
    try:
        atomic_write(path, bundle)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot write --save-signature {str(path)!r}: {exc.strerror}"
        ) from exc


def _refuse_partial_verification(
    verifying: bool, *, issuer: str | None, attestations: list[str] | None, root: Path | None
) -> None:
    """An issuer, a required attestation or a trusted root alone would verify nothing: the
    pull would go ahead unverified while the user believes it was checked."""
    given = [
        flag
        for flag, value in (
            ("--certificate-oidc-issuer", issuer),
            ("--require-attestation", attestations),
            ("--trusted-root", root),
        )
        if value
    ]
    if given and not verifying:
        raise InvalidInputError(
            f"{', '.join(given)} without a signer verifies nothing",
            hint="name who must have signed: --verify-key KEY, or --certificate-identity ID "
            "(or --certificate-identity-regexp RE) with --certificate-oidc-issuer URL",
        )


def _one_issuer(shown: str | None, hidden: str | None) -> str | None:
    """--certificate-oidc-issuer, or its old spelling --verify-oidc-issuer: one issuer."""
    if shown is not None and hidden is not None and shown != hidden:
        raise InvalidInputError(
            f"--certificate-oidc-issuer {shown!r} and --verify-oidc-issuer {hidden!r} disagree",
            hint="give the issuer once, with --certificate-oidc-issuer",
        )
    return shown if shown is not None else hidden


def _cache_mode(flag: str | None, link: bool) -> str:
    """--cache-mode, else $MODELREG_CACHE_MODE, else auto; --link wins over the variable."""
    from modelreg.model.unpack import parse_cache_mode

    if flag is not None:
        return parse_cache_mode(flag, "--cache-mode")
    env = os.environ.get("MODELREG_CACHE_MODE", "").strip()
    if not env:
        return "auto"
    mode = parse_cache_mode(env, "MODELREG_CACHE_MODE")
    return "copy" if link else mode


def _pull_into(
    cmd: Command, client: Any, ref: str, into: Path, include: list[str] | None, progress: Any
) -> None:
    """pull --into: config and tokenizer files first, weights after, resumable."""
    from modelreg.lazy.into import pull_into

    done = pull_into(
        client,
        ref,
        into,
        include=include or (),
        fsync=cmd.options.fsync,
        concurrency=cmd.options.concurrency,
        progress=progress,
    )
    if cmd.json_output:
        print_json(done.to_dict())
    else:
        out_console.print(f"pulled {ref} into {into} (config first, resumable)")


def _show_pulled(result: Any, json_output: bool, signature: Path | None = None) -> None:
    if json_output:
        shown = result.to_dict()
        if signature is not None:
            shown["signature"] = str(signature)
        print_json(shown)
        return
    out_console.print(f"pulled {result.reference} into {result.output}")
    if signature is not None:
        out_console.print(f"  model signature saved to {signature}", markup=False)
    out_console.print(
        f"  {plural(len(result.files), 'file')}, fetched {human_size(result.bytes_fetched)}, "
        f"from cache {human_size(result.bytes_from_cache)}"
        + (f" ({result.producer} artifact)" if result.producer != "modelpack" else "")
    )
    for note in result.skipped:
        warn(f"layer not written: {note}")


# ---------------------------------------------------------------------- inspect
@commands.command("inspect")
@registry_flags()
def inspect(
    ref: Annotated[str, typer.Argument(help="Model to describe.")],
    tensors: Annotated[
        bool,
        typer.Option(
            "--tensors",
            help="Also list every tensor (name, dtype, shape, bytes, file), reading only "
            "file headers with range requests.",
        ),
    ] = False,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
) -> None:
    """Show a model's manifest, config, files, sizes and digests (no weights are read)."""
    with Command(json_output, remote) as cmd:
        with cmd.client() as client:
            info = client.inspect(ref, tensors=tensors)
        files = _with_roles(info.files)
        if json_output:
            print_json({**info.to_dict(), "files": files})
            return
        _show_summary(info)
        if files:
            _show_files(files)
        if info.tensors is not None:
            _show_tensors(info.tensors)


def _show_summary(info: Any) -> None:
    """Reference, digest, type, producer, size, then the config's fields."""
    doc = info.to_dict()
    out_console.print(f"reference     {info.reference}")
    out_console.print(f"digest        {info.digest}")
    out_console.print(f"artifactType  {doc['artifactType']}")
    if info.producer and info.producer != "modelpack":
        out_console.print(f"producer      {info.producer}")
    out_console.print(f"total size    {human_size(info.total_size)}")
    cfg = info.config or {}
    descriptor = cfg.get("descriptor") if isinstance(cfg.get("descriptor"), dict) else {}
    model_cfg = cfg.get("config") if isinstance(cfg.get("config"), dict) else {}
    for key, value in {**(descriptor or {}), **(model_cfg or {})}.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        out_console.print(f"{key:<13} {shown}", markup=False)


def _with_roles(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each file row with ``role``: the ModelPack role its media type gives, and why."""
    from modelreg.model.roles import layer_role

    return [
        {
            **f,
            "role": layer_role(
                str(f["mediaType"]),
                None if f.get("path") is None else str(f["path"]),
                bool(f.get("untested")),
            ).to_dict(),
        }
        for f in files
    ]


def _show_files(files: list[dict[str, Any]]) -> None:
    """One line a file: path, size, short digest, media type, role and why; pickles flagged."""
    out_console.print("files:")
    width = max(len(str(f["path"])) for f in files)
    for f in files:
        kind = f.get("kind", "file")
        role = str(f["mediaType"]).rsplit("/", 1)[-1]
        if kind == "split":
            role = f"{f['parts']} parts"
        elif kind in ("archive", "skipped"):
            role = f"{kind} {role}"
        elif kind == "grouped":
            role = f"in group {str(f['group'])[:19]}"
        flag = "  UNSAFE (pickle: loading it runs code)" if f.get("unsafe") else ""
        decided = f.get("role") or {}
        said = f"  [{decided.get('role') or 'no role'}: {decided.get('reason')}]" if decided else ""
        out_console.print(
            f"  {f['path']!s:<{width}}  {human_size(int(f['size'])):>10}  "
            f"{str(f['digest'])[:19]}  {role}{said}{flag}",
            markup=False,
        )


def _show_tensors(listing: Any) -> None:
    """inspect --tensors: one line a tensor, then what could not be listed."""
    rows = listing.tensors
    out_console.print(
        f"tensors: {len(rows)} in {plural(len(listing.files), 'file')} "
        f"(read {human_size(listing.bytes_fetched)} in {listing.requests} requests)"
    )
    for described in listing.files:
        if described.error:
            out_console.print(f"  {described.path}: {described.error}", markup=False)
    name_w = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        shape = "[" + ", ".join(str(d) for d in r["shape"]) + "]"
        out_console.print(
            f"  {r['name']:<{name_w}}  {r['dtype']:<8} {shape:<20} "
            f"{human_size(int(r['bytes'])):>10}  {r['file']}",
            markup=False,
        )
    for problem in listing.problems:
        warn(problem)
    for note in listing.skipped:
        out_console.print(f"  not listed: {note}", markup=False)


# ------------------------------------------------------------------------- diff
@commands.command("diff")
@registry_flags()
def diff(
    ref_a: Annotated[str, typer.Argument(help="The older model (A).")],
    ref_b: Annotated[str, typer.Argument(help="The newer model (B).")],
    tensors: Annotated[
        bool,
        typer.Option(
            "--tensors/--no-tensors",
            help="Compare the tensors of changed safetensors/GGUF files (headers only).",
        ),
    ] = True,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
) -> None:
    """Show which files and tensors differ between two models and how many bytes they share."""
    with Command(json_output, remote) as cmd:
        with cmd.client() as client:
            result = client.diff(ref_a, ref_b, tensors=tensors)
        if json_output:
            print_json({"a": ref_a, "b": ref_b, **result.to_dict()})
        else:
            _show_diff(result)


def _show_diff(result: Any) -> None:
    s = result.to_dict()["summary"]
    out_console.print(
        f"{s['changed']} changed, {s['added']} added, {s['removed']} removed, "
        f"{s['unchanged']} unchanged files"
    )
    out_console.print(
        f"shared {human_size(result.shared)} of {human_size(result.total_b)}; "
        f"only in B {human_size(result.only_b)}, only in A {human_size(result.only_a)}",
        markup=False,
    )
    marks = {"added": "+", "removed": "-", "changed": "~"}
    for f in result.files:
        if f.status == "unchanged":
            continue
        extra = ""
        if f.tensor_summary:
            extra = " (" + ", ".join(f"{n} {k}" for k, n in f.tensor_summary.items()) + ")"
        out_console.print(f"  {marks[f.status]} {f.path}{extra}", markup=False)
        for t in f.tensors:
            if t["status"] in ("unchanged", "unknown"):
                continue
            shape = "[" + ", ".join(str(d) for d in t["shape"]) + "]"
            out_console.print(
                f"      {t['status']:<9} {t['name']}  {t['dtype']} {shape}", markup=False
            )
        if f.note:
            out_console.print(f"      note: {f.note}", markup=False)


# -------------------------------------------------------------------- import hf
@import_app.command("hf")
@registry_flags(concurrency=True)
def import_hf(
    path: Annotated[
        Path,
        typer.Argument(help="A Hugging Face cache snapshot: .../models--ORG--NAME/snapshots/REV."),
    ],
    ref: Annotated[str, typer.Argument(help="Where to push it.")],
    split: Annotated[
        bool | None,
        typer.Option("--split/--no-split", help="Store big weight files as parts."),
    ] = None,
    part_size: Annotated[
        str | None, typer.Option("--part-size", help="Target part size with --split.")
    ] = None,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
) -> None:
    """Push a Hugging Face cache snapshot (links followed only into its blobs/; no network)."""
    with Command(json_output, remote, quiet=quiet) as cmd:
        with cmd.client() as client, cmd.progress() as progress:
            result = client.import_hf(
                path, ref, progress=progress, split=split, part_size=part_size
            )
        _show_pushed(result, json_output)


# --------------------------------------------------------------------------- cp
@commands.command("cp")
@registry_flags(concurrency=True)
def cp(
    src: Annotated[str, typer.Argument(help="Source reference.")],
    dst: Annotated[str, typer.Argument(help="Destination reference.")],
    recursive: Annotated[
        bool,
        typer.Option("--recursive", "-r", help="Also copy referrers (signatures, attestations)."),
    ] = False,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
    from_plain_http: FromPlainHttpOpt = False,
    from_insecure: FromInsecureOpt = False,
    from_ca_file: FromCaFileOpt = None,
    to_plain_http: ToPlainHttpOpt = False,
    to_insecure: ToInsecureOpt = False,
    to_ca_file: ToCaFileOpt = None,
) -> None:
    """Copy a model between registries, the local store and OCI layout directories.

    --plain-http, --insecure and --ca-file apply to both sides; --from-* and --to-*
    to one side only, and win over the shared flags for it.
    """
    with Command(json_output, quiet=quiet) as cmd:
        overrides = _side_overrides(
            (src, "--from", from_plain_http, from_insecure, from_ca_file),
            (dst, "--to", to_plain_http, to_insecure, to_ca_file),
        )
        cmd.remote = dataclasses.replace(remote, host_overrides=overrides)
        with cmd.client() as client, cmd.progress() as progress:
            result = client.copy(src, dst, recursive=recursive, progress=progress)
        if json_output:
            print_json(result.to_dict())
            return
        out_console.print(f"copied {src} -> {dst} ({result.root.digest})")
        out_console.print(
            f"  sent {human_size(result.bytes_sent)}, skipped "
            f"{human_size(result.bytes_skipped)}, mounted {human_size(result.bytes_mounted)}"
            + (f", {plural(len(result.referrers), 'referrer')}" if recursive else "")
        )


Side = tuple[str, str, bool, bool, Path | None]


def _side_overrides(*sides: Side) -> tuple[tuple[str, Any], ...]:
    """``cp``'s per-side flags as settings for the registry host of each side."""
    from modelreg.content.registry.hosts import HostOverride
    from modelreg.oci.reference import Reference

    found: dict[str, tuple[str, Any]] = {}
    for ref_text, flag, plain, insecure, ca_file in sides:
        override = HostOverride(
            plain_http=True if plain else None,
            insecure=True if insecure else None,
            ca_file=str(ca_file) if ca_file is not None else None,
        )
        if not override:
            continue
        if ca_file is not None and not ca_file.is_file():
            raise InvalidInputError(f"{flag}-ca-file {str(ca_file)!r} is not a file")
        ref = Reference.parse(ref_text)
        if ref.kind != "registry" or ref.registry is None:
            raise InvalidInputError(
                f"{flag}-* flags are for a registry, but {ref_text!r} is not one",
                hint=f"drop the {flag}-* flags for a local store or layout",
            )
        earlier = found.get(ref.registry)
        if earlier is not None and earlier[1] != override:
            raise InvalidInputError(
                f"{earlier[0]}-* and {flag}-* flags differ, but both sides are {ref.registry}",
                hint="one registry is reached one way: give the same flags, or the shared ones",
            )
        found[ref.registry] = (flag, override)
    return tuple((host, override) for host, (_, override) in found.items())


# ------------------------------------------------------------------------ hosts
@commands.command("hosts")
def hosts(
    ref: Annotated[str, typer.Argument(help="A reference or a registry HOST[:PORT].")],
    hosts_dir: HostsDirOpt = None,
    docker_config: DockerConfigOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Show how a registry is reached: the configuration files read, the mirrors in the
    order they are tried and what each may do, TLS settings, whether credentials exist.

    Configuration is read from certs.d-style directories (containerd's hosts.toml:
    DIR/HOST[:PORT]/hosts.toml, else DIR/_default/hosts.toml): --hosts-dir, else
    $MODELREG_HOSTS_DIR, else ~/.config/modelreg/certs.d then /etc/containerd/certs.d;
    for a host no hosts.toml configures, containers-registries.conf
    ($MODELREG_REGISTRIES_CONF, else ~/.config/containers/registries.conf, else
    /etc/containers/registries.conf; not read with --hosts-dir). Secrets are never shown.
    """
    with Command(json_output):
        from modelreg.content.registry import CredentialStore
        from modelreg.content.registry.hosts import HostsResolver
        from modelreg.oci.reference import Reference

        host = ref if "/" not in ref else Reference.parse(ref).registry
        if host is None:
            raise InvalidInputError(f"{ref!r} does not name a registry")
        Reference.parse(f"{host}/x")  # a valid host, or the reference parser says why
        resolver = HostsResolver(hosts_dir.split(os.pathsep) if hosts_dir else None)
        config = resolver.lookup(host)
        store = CredentialStore(docker_config)
        doc = config.to_dict()
        doc["searched"] = resolver.searched()
        doc["server"]["credentials"] = store.get(host) is not None
        for row, mirror in zip(doc["mirrors"], config.mirrors, strict=True):
            row["credentials"] = store.get(mirror.host) is not None
        if json_output:
            print_json(doc)
            return
        _show_hosts(doc)


def _show_hosts(doc: dict[str, Any]) -> None:
    out_console.print(f"{doc['host']}", markup=False)
    if doc["files"]:
        out_console.print(f"  configured by: {', '.join(doc['files'])}", markup=False)
    else:
        out_console.print("  configured by: nothing (defaults); searched:", markup=False)
        for place in doc["searched"]:
            out_console.print(f"    {place}", markup=False)
    if doc["blocked"]:
        out_console.print("  BLOCKED: pulls from this registry are refused", markup=False)
    for i, mirror in enumerate(doc["mirrors"], 1):
        out_console.print(f"  mirror {i}: {_endpoint_line(mirror)}", markup=False)
    out_console.print(f"  server:   {_endpoint_line(doc['server'])}", markup=False)
    for note in doc["notes"]:
        out_console.print(f"  note: {note}", markup=False)


def _endpoint_line(row: dict[str, Any]) -> str:
    if row["plainHttp"]:
        tls = "plain HTTP"
    elif row["skipVerify"]:
        tls = "TLS, certificate NOT verified"
    elif row["caFiles"]:
        tls = f"TLS, CA {', '.join(row['caFiles'])}"
    else:
        tls = "TLS, system CAs"
    parts = [row["url"], "[" + ", ".join(row["capabilities"]) + "]", tls]
    if row["clientCertificates"]:
        parts.append(f"client cert {row['clientCertificates'][0]['cert']}")
    if row["headers"]:
        parts.append(f"headers {', '.join(row['headers'])}")
    parts.append("credentials: " + ("yes" if row["credentials"] else "none"))
    return "  ".join(parts)


# ------------------------------------------------------------------------- tags
@commands.command("tags")
@registry_flags()
def tags(
    ref: Annotated[
        str,
        typer.Argument(metavar="REPO", help="Repository: registry/repo, repo or oci:DIR."),
    ],
    all_: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Also the sha256-HEX tags that hold signatures and attestations for "
            "registries without the referrers API.",
        ),
    ] = False,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
) -> None:
    """List the tags of a repository (its versions; see --all)."""
    with Command(json_output, remote) as cmd:
        with cmd.client() as client:
            names = client.tags(ref)
        shown = names if all_ else [n for n in names if not _FALLBACK_TAG.fullmatch(n)]
        if json_output:
            print_json({"repository": ref, "tags": shown})
            return
        for name in shown:
            out_console.print(name, markup=False)


# the referrers tag schema (sha256-HEX) and cosign's sha256-HEX.sig / .att / .sbom
_FALLBACK_TAG = re.compile(r"sha256-[0-9a-f]{64}(\.[a-z]+)?")


# --------------------------------------------------------------- login / logout
@commands.command("login")
@registry_flags()
def login(
    registry: Annotated[str, typer.Argument(help="Registry host[:port].")],
    username: Annotated[str | None, typer.Option("--username", "-u")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    json_output: JsonOpt = False,
    remote: Remote = REGISTRY_FLAGS,
) -> None:
    """Check credentials against a registry and store them in the docker config file."""
    with Command(json_output, remote) as cmd:
        user, password = _credentials(username, password_stdin)
        with cmd.client() as client:
            where = client.login(registry, user, password)
        if json_output:
            print_json({"registry": registry, "username": user, "configFile": where})
        else:
            out_console.print(f"login succeeded for {user} at {registry} (saved in {where})")


def _credentials(username: str | None, password_stdin: bool) -> tuple[str, str]:
    """User and password: flags, then $MODELREG_USERNAME / $MODELREG_PASSWORD, then a
    prompt when there is a terminal to ask on."""
    user = username or os.environ.get("MODELREG_USERNAME")
    given = password_stdin or os.environ.get("MODELREG_PASSWORD")
    if not given and not sys.stdin.isatty():
        raise InvalidInputError(
            "no password given, and no terminal to ask for one",
            hint='pipe it in: echo "$TOKEN" | modelreg login REGISTRY -u USER --password-stdin '
            "(or set MODELREG_USERNAME and MODELREG_PASSWORD)",
        )
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = os.environ.get("MODELREG_PASSWORD") or ""
        if not password and sys.stdin.isatty():
            password = typer.prompt("Password", hide_input=True)
    if not user:
        if not sys.stdin.isatty() or password_stdin:
            raise InvalidInputError(
                "no username given", hint="pass --username or set MODELREG_USERNAME"
            )
        user = typer.prompt("Username")
    if not password:
        raise InvalidInputError(
            "no password given",
            hint="pass --password-stdin, set MODELREG_PASSWORD, or run in a terminal",
        )
    return user, password


@commands.command("logout")
def logout(
    registry: Annotated[str, typer.Argument(help="Registry host[:port].")],
    json_output: JsonOpt = False,
) -> None:
    """Remove stored credentials for a registry."""
    with Command(json_output) as cmd:
        with cmd.client() as client:
            removed = client.logout(registry)
        if json_output:
            print_json({"registry": registry, "removed": removed})
        elif removed:
            out_console.print(f"removed credentials for {registry}")
        else:
            out_console.print(f"no credentials were stored for {registry}")


# ------------------------------------------------------------------------- list
@commands.command("list")
def list_(json_output: JsonOpt = False) -> None:
    """List what the embedded local store holds: repository:tag, digest, size,
    creation time and whether it is signed."""
    with Command(json_output) as cmd:
        with cmd.client() as client:
            rows = client.list_store()
        if json_output:
            print_json(rows)
            return
        for row in rows:
            signed = "signed" if row["signed"] else "-"
            out_console.print(
                f"{row['name']:<40} {row['digest'][:19]:<19} {human_size(row['size']):>10} "
                f"{row['created'] or '-':<25} {signed}",
                markup=False,
            )


register = registrar(commands, import_app)
