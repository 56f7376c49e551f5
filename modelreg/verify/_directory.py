"""Verify a model directory against a model-transparency signature (``model.sig``).

The signature is a sigstore bundle whose DSSE payload is the
``https://model_signing/signature/v1.0`` statement (or the pre-1.0
``https://model_signing/Digests/v0.1`` form) written by ``model_signing sign``
or by ``modelreg sign``. The bundle's signature is checked against the policy
(keys or keyless identities, as for registry artifacts); then every file of
the directory is hashed and the set of (path, digest) must equal the signed
one exactly: a changed, added, removed or renamed file fails (SECURITY.md
case 10). Which files count is :class:`~modelreg.attest.coverage.Coverage`,
the rule ``modelreg sign`` and ``model_signing`` share: ignored are the
statement's ``ignore_paths``, top-level git metadata (unless the caller says
otherwise), the signature file itself when it is inside the directory, and
what the caller adds.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

from modelreg.attest.bundle import MAX_BUNDLE_BYTES
from modelreg.attest.coverage import Coverage
from modelreg.attest.intoto import Statement
from modelreg.attest.model_transparency import (
    MODEL_SIGNING_COMPAT_PREDICATE,
    MODEL_SIGNING_PREDICATE,
    model_subject_digest,
)
from modelreg.errors import InvalidInputError, SizeLimitError
from modelreg.verify._artifact import VerifyContext, check_bundle, prepare_policy
from modelreg.verify._types import VerificationPolicy

__all__ = ["DirectoryVerificationResult", "verify_directory"]

_BLOCK: Final = 4 * 1024 * 1024


@dataclass(frozen=True)
class DirectoryVerificationResult:
    path: str
    ok: bool
    model_name: str | None
    signer: str | None
    kind: str | None
    issuer: str | None
    files: int
    failures: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "modelName": self.model_name,
            "signer": self.signer,
            "kind": self.kind,
            "issuer": self.issuer,
            "files": self.files,
            "failures": list(self.failures),
        }


def _fail(path: Path, *failures: str, **kw: Any) -> DirectoryVerificationResult:
    return DirectoryVerificationResult(
        path=str(path),
        ok=False,
        model_name=kw.get("model_name"),
        signer=kw.get("signer"),
        kind=kw.get("kind"),
        issuer=kw.get("issuer"),
        files=0,
        failures=tuple(failures),
    )


def _expected(statement: Statement) -> tuple[dict[str, str], dict[str, Any]] | str:
    """(resource name -> sha256 hex, serialization) or why the statement is unusable."""
    if statement.predicate_type == MODEL_SIGNING_COMPAT_PREDICATE:
        items = {s.name: s.digest.get("sha256", "") for s in statement.subjects}
        return items, {"method": "files", "hash_type": "sha256", "allow_symlinks": False}
    if statement.predicate_type != MODEL_SIGNING_PREDICATE:
        return f"the signature is a {statement.predicate_type} statement, not a model signature"
    serialization = statement.predicate.get("serialization")
    resources = statement.predicate.get("resources")
    if not isinstance(serialization, dict) or not isinstance(resources, list):
        return "model signature without serialization or resources"
    if len(statement.subjects) != 1:
        return f"model signature with {len(statement.subjects)} subjects; expected 1"
    listed: list[tuple[str, str]] = []
    for r in resources:
        if not isinstance(r, dict) or not isinstance(r.get("name"), str):
            return "model signature with a malformed resource"
        algorithm = r.get("algorithm")
        if not isinstance(algorithm, str) or not (
            algorithm == "sha256" or algorithm.startswith("sha256-sharded-")
        ):
            return f"resource {r.get('name')!r} uses {algorithm!r}; modelreg checks sha256"
        listed.append((r["name"], str(r.get("digest", "")).lower()))
    if statement.subjects[0].digest.get("sha256") != model_subject_digest(listed):
        return "the model signature's subject digest does not match its resources"
    if len({n for n, _ in listed}) != len(listed):
        return "the model signature lists a resource twice"
    return dict(listed), serialization


def _walk(root: Path, coverage: Coverage, allow_symlinks: bool) -> Iterator[tuple[str, Path]]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        rel_dir = PurePosixPath(base.relative_to(root).as_posix())
        keep = []
        for d in sorted(dirnames):
            rel = rel_dir / d if str(rel_dir) != "." else PurePosixPath(d)
            if not coverage.covers(rel):
                continue
            if (base / d).is_symlink():
                if not allow_symlinks:
                    raise InvalidInputError(f"{rel} is a symbolic link; the signature forbids them")
                below = Coverage.of(git_paths=False)
                yield from ((f"{rel}/{sub}", p) for sub, p in _walk(base / d, below, True))
                continue
            keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            rel = rel_dir / f if str(rel_dir) != "." else PurePosixPath(f)
            if not coverage.covers(rel):
                continue
            full = base / f
            if full.is_symlink() and not allow_symlinks:
                raise InvalidInputError(f"{rel} is a symbolic link; the signature forbids them")
            if not full.is_file():
                continue
            yield str(rel), full


def _hash_range(path: Path, start: int, end: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        remaining = end - start
        while remaining > 0:
            block = f.read(min(_BLOCK, remaining))
            if not block:
                break
            h.update(block)
            remaining -= len(block)
    return h.hexdigest()


def _actual(
    files: list[tuple[str, Path]], serialization: dict[str, Any], workers: int
) -> dict[str, str] | str:
    method = serialization.get("method")
    if serialization.get("hash_type", "sha256") != "sha256":
        return (
            f"the signature hashes with {serialization.get('hash_type')!r}; modelreg checks "
            "sha256 signatures (verify this one with model_signing)"
        )
    jobs: list[tuple[str, Path, int, int]] = []
    if method == "files":
        for rel, full in files:
            jobs.append((rel, full, 0, full.stat().st_size))
    elif method == "shards":
        raw_shard = serialization.get("shard_size")
        # protobuf JSON writes numbers as floats (1000.0)
        if not isinstance(raw_shard, int | float) or raw_shard != int(raw_shard) or raw_shard <= 0:
            return "shard serialization without a valid shard_size"
        shard = int(raw_shard)
        for rel, full in files:
            size = full.stat().st_size
            start = 0
            ends = [*range(shard, size, shard), size]
            for end in ends:
                jobs.append((f"{rel}:{start}:{end}", full, start, end))
                start = end
    else:
        return f"unknown serialization method {method!r}"
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        digests = list(pool.map(lambda j: _hash_range(j[1], j[2], j[3]), jobs))
    return {job[0]: d for job, d in zip(jobs, digests, strict=True)}


def verify_directory(
    path: str | os.PathLike[str],
    signature: str | os.PathLike[str],
    policy: VerificationPolicy,
    *,
    ignore_paths: Sequence[str] = (),
    ignore_git_paths: bool = True,
    workers: int = 2,
) -> DirectoryVerificationResult:
    """Verify the files under ``path`` against the model signature ``signature``."""
    root = Path(path)
    if not root.is_dir():
        raise InvalidInputError(f"{str(root)!r} is not a directory")
    sig_path = Path(signature)
    try:
        size = sig_path.stat().st_size
    except FileNotFoundError as exc:
        raise InvalidInputError(f"signature file {str(sig_path)!r} does not exist") from exc
    if size > MAX_BUNDLE_BYTES:
        raise SizeLimitError(f"signature file {str(sig_path)!r} is {size} bytes: too large")
    data = sig_path.read_bytes()
    prepared = prepare_policy(policy)
    checked = check_bundle(
        data, "sha256:" + hashlib.sha256(data).hexdigest(), VerifyContext(prepared)
    )
    if isinstance(checked, str):
        return _fail(root, f"signature {sig_path.name}: {checked}")
    who = {"signer": checked.signer, "kind": checked.kind, "issuer": checked.issuer}
    if prepared.policy.threshold > 1:
        return _fail(
            root,
            f"a directory signature has one signer; threshold {prepared.policy.threshold} "
            "cannot be met",
            **who,
        )
    expected = _expected(checked.statement)
    model_name = checked.statement.subjects[0].name if checked.statement.subjects else None
    if isinstance(expected, str):
        return _fail(root, expected, model_name=model_name, **who)
    resources, serialization = expected
    signed_ignores = [p for p in serialization.get("ignore_paths", []) if isinstance(p, str)]
    coverage = Coverage.of([*signed_ignores, *ignore_paths], git_paths=ignore_git_paths)
    try:
        inside = sig_path.resolve().relative_to(root.resolve())
        coverage = coverage.also(inside.as_posix())
    except ValueError:
        pass
    try:
        files = list(_walk(root, coverage, bool(serialization.get("allow_symlinks", False))))
    except InvalidInputError as exc:
        return _fail(root, exc.message, model_name=model_name, **who)
    actual = _actual(files, serialization, workers)
    if isinstance(actual, str):
        return _fail(root, actual, model_name=model_name, **who)
    failures: list[str] = []
    for name in sorted(set(actual) - set(resources)):
        failures.append(f"{name}: present but not signed")
    for name in sorted(set(resources) - set(actual)):
        failures.append(f"{name}: signed but missing")
    for name in sorted(set(actual) & set(resources)):
        if actual[name] != resources[name]:
            failures.append(f"{name}: content differs from the signed digest")
    return DirectoryVerificationResult(
        path=str(root),
        ok=not failures,
        model_name=model_name,
        signer=checked.signer,
        kind=checked.kind,
        issuer=checked.issuer,
        files=len(files),
        failures=tuple(failures),
    )
