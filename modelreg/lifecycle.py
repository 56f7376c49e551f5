"""Deleting model versions and retaining checkpoint series, in registries and the store.

Two operations, each planned first and then carried out, so that ``--dry-run`` is
the plan itself and a run does exactly what its dry run listed:

* :func:`delete` removes one reference. A tag: the tag alone where the target can
  (the embedded store; registries implementing distribution-spec 1.1 tag deletion);
  a registry that cannot untag (Distribution 2.8) gets the manifest deleted by
  digest, which removes every tag on it, and the result says so. A digest: the
  manifest. ``referrers=True`` makes the manifest the unit: it goes with every
  signature, attestation and chunk index that refers to it (recursively, leaves
  first), with the tag-schema fallback indexes (``sha256-<hex>``) of each and the
  legacy cosign ``.sig``/``.att`` tags. A referrer deleted on its own is taken out
  of its subject's fallback index (the index is removed when it becomes empty), so
  ``tags`` and ``referrers`` keep agreeing.
* :func:`retain` keeps the newest ``keep_last`` versions of a repository by creation
  time (the manifest's ``org.opencontainers.image.created``, else the ModelPack
  config's ``descriptor.createdAt``, else the config's ``created``), plus every
  version with a tag matching a ``keep`` glob, plus, with ``older_than``, every
  version younger than that. A version with no creation time at all is kept and
  reported (undated: nothing says it is old). With ``keep_signed_by`` (a
  :class:`~modelreg.verify.VerificationPolicy`), every version that would go is
  first verified against it (:func:`~modelreg.verify.verify_artifact`, the code
  ``modelreg verify`` runs), and is kept if it verifies. Everything else is deleted
  with its referrers. A version is a manifest: all its tags are kept or go together.

"Signed" means a signature that verifies for that manifest's digest: a referrer
that merely exists (junk bytes, a bundle of another key carrying the right key
hint, a valid bundle replayed from another digest) protects nothing, since whoever
can push can add referrers. The check runs before anything is deleted, and fails
safe: a version whose check could not run (registry unreachable, tampered bytes,
more referrers than a listing may hold) is kept, and the result's ``problems``
say which and why. Every bundle referrer the listing holds is examined
(``max_referrers`` is raised to the listing's cap,
:data:`modelreg.attest.storage.MAX_REFERRERS`), so a flood of forged
bundles ranked first cannot hide the real one and turn a signed version into an
unsigned one.

Registries refuse deletes when the operator disabled them (Distribution answers 405
UNSUPPORTED unless ``storage.delete.enabled`` is true): that error is re-raised with a
hint naming the setting. In the store, deleting changes ``index.json`` only; the
blobs the deleted manifests reached are then freed by :func:`modelreg.content.gc.prune`
restricted to them (``only``), so blobs other processes are writing are not touched.

Races: taking one referrer out of a registry's fallback index
(:meth:`~modelreg.content.registry.RegistryTarget.remove_referrer`) follows the
protocol signers use to add one (re-read, conditional PUT, verify-after-write), so
on registries that honour ``If-Match`` a concurrent signer's entry is never lost;
Distribution 2.8 ignores conditions, which narrows the race without closing it.
Deleting a whole version removes its fallback index with it: a signer adding a
referrer to a subject at the moment it is deleted can lose its entry. Deleting is
meant for versions no one is still publishing to.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from modelreg._json import camel_fields
from modelreg.attest.bundle import BUNDLE_MEDIA_TYPES
from modelreg.content import gc
from modelreg.content.base import Target, fetch_bytes
from modelreg.content.layout import LayoutTarget
from modelreg.content.registry.target import MAX_REFERRERS, RegistryTarget, referrers_tag
from modelreg.copy import fetch_node
from modelreg.errors import (
    FormatError,
    InvalidInputError,
    MissingExtraError,
    ModelRegError,
    NotFoundError,
    PolicyError,
    SizeLimitError,
    UnsupportedError,
)
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import Index, Manifest

if TYPE_CHECKING:
    from modelreg.verify import VerificationPolicy

__all__ = [
    "DeleteResult",
    "Removal",
    "RetentionResult",
    "Version",
    "created_at",
    "delete",
    "describe",
    "retain",
]

MAX_REFERRER_DEPTH: Final = 4
MAX_CONFIG_BYTES: Final = 4 * 1024 * 1024
_SCHEMA_TAG: Final = re.compile(r"^(sha256|sha512)-[0-9a-f]{64,128}(\.sig|\.att|\.sbom)?$")
_DELETES_OFF_HINT: Final = (
    "the registry has deletes disabled: enable them (Distribution: storage.delete.enabled: "
    "true, or REGISTRY_STORAGE_DELETE_ENABLED=true; Harbor, zot and cloud registries: the "
    "repository's immutability or delete permission settings) and run again"
)


# -------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class Removal:
    """One thing deleted (or, dry, to delete). ``kind``: ``tag``, ``manifest``,
    ``referrer``, ``referrers-index`` (a tag-schema fallback index), ``legacy-tag``
    (cosign ``.sig``/``.att``) or ``index-entry`` (a referrer taken out of its
    subject's fallback index). ``note``: what else it did (tags that went with it)."""

    kind: str
    reference: str
    subject: str | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return camel_fields(self, "kind", "reference", "subject", "note")


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """What :func:`delete` removed from ``target``; ``freed_*``: store blobs freed."""

    target: str
    dry_run: bool
    removals: tuple[Removal, ...] = ()
    freed_blobs: int = 0
    freed_bytes: int = 0
    problems: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            **camel_fields(self, "target", "dry_run"),
            "removed": [r.to_dict() for r in self.removals],
            "freed": {"blobs": self.freed_blobs, "bytes": self.freed_bytes},
            "problems": list(self.problems),
        }


@dataclass(frozen=True, slots=True)
class Version:
    """One manifest of a repository and its tags; ``reason`` it is kept (None: it goes)."""

    digest: str
    tags: tuple[str, ...]
    created: str | None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "tags": list(self.tags),
            "created": self.created,
            "keptBecause": self.reason,
        }


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What :func:`retain` kept and removed; ``deleted``: each removal; ``problems``:
    versions kept because their signatures could not be checked, and why."""

    target: str
    dry_run: bool
    kept: tuple[Version, ...] = ()
    removed: tuple[Version, ...] = ()
    deleted: DeleteResult | None = None
    problems: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            **camel_fields(self, "target", "dry_run"),
            "kept": [v.to_dict() for v in self.kept],
            "removed": [v.to_dict() for v in self.removed],
            "removals": self.deleted.to_dict()["removed"] if self.deleted else [],
            "freed": self.deleted.to_dict()["freed"] if self.deleted else {"blobs": 0, "bytes": 0},
            "problems": list(self.problems),
        }


# ------------------------------------------------------------------- planning
@dataclass
class _Plan:
    """Removals in the order they run (referrers before their subjects), and the
    digests the deleted store manifests reached (what freeing may consider)."""

    steps: list[Removal] = field(default_factory=list)
    reached: set[Digest] = field(default_factory=set)
    seen: set[Digest] = field(default_factory=set)


def _reach(target: Target, desc: Descriptor, plan: _Plan) -> Manifest | Index | None:
    """The manifest (None if unreadable); its own blobs go into ``plan.reached``."""
    plan.reached.add(desc.digest)
    try:
        node = fetch_node(target, desc)
    except (FormatError, SizeLimitError):
        return None
    if isinstance(node, Manifest):
        plan.reached.add(node.config.digest)
        plan.reached.update(layer.digest for layer in node.layers)
    return node


def _plan_referrers(target: Target, desc: Descriptor, plan: _Plan, depth: int) -> None:
    """Every referrer of ``desc`` (recursively, leaves first) and the fallback tags."""
    if depth > MAX_REFERRER_DEPTH:
        return
    for ref in target.referrers(desc):
        if ref.digest in plan.seen:
            continue
        plan.seen.add(ref.digest)
        if len(plan.seen) > MAX_REFERRERS:
            raise SizeLimitError(
                f"{desc.digest} has more than {MAX_REFERRERS} referrers to delete",
                hint="delete them in smaller steps (`modelreg rm REPO@DIGEST` of each)",
            )
        _plan_referrers(target, ref, plan, depth + 1)
        _reach(target, ref, plan)
        plan.steps.append(Removal("referrer", str(ref.digest), subject=str(desc.digest)))
    _plan_schema_tags(target, desc, plan)


def _plan_schema_tags(target: Target, desc: Descriptor, plan: _Plan) -> None:
    """The fallback index tag and the legacy cosign tags of ``desc``, where present."""
    base = referrers_tag(desc.digest)
    for tag, kind in (
        (base, "referrers-index"),
        (f"{base}.sig", "legacy-tag"),
        (f"{base}.att", "legacy-tag"),
    ):
        try:
            found = target.resolve(tag)
        except NotFoundError:
            continue
        plan.reached.add(found.digest)
        plan.steps.append(Removal(kind, tag, subject=str(desc.digest), note=str(found.digest)))


def _plan_detach(
    target: Target, node: Manifest | Index | None, desc: Descriptor, plan: _Plan
) -> None:
    """A referrer deleted on its own: take it out of its subject's fallback index."""
    if node is None or node.subject is None:
        return
    tag = referrers_tag(node.subject.digest)
    try:
        target.resolve(tag)
    except NotFoundError:
        return
    plan.steps.append(
        Removal("index-entry", str(desc.digest), subject=str(node.subject.digest), note=tag)
    )


def _plan_delete(target: Target, reference: str, *, referrers: bool) -> _Plan:
    desc = target.resolve(reference)
    plan = _Plan(seen={desc.digest})
    is_tag = not reference.startswith(("sha256:", "sha512:"))
    if referrers:
        _plan_referrers(target, desc, plan, 1)
    node = _reach(target, desc, plan)
    if not referrers:
        _plan_detach(target, node, desc, plan)
    if is_tag and not referrers:
        plan.steps.append(Removal("tag", reference, note=str(desc.digest)))
    else:
        if is_tag:
            plan.steps.append(Removal("tag", reference, note=str(desc.digest)))
        plan.steps.append(Removal("manifest", str(desc.digest)))
    return plan


# ------------------------------------------------------------------- carrying out
class _Deleter:
    """Carries out removals on one target (a registry repository or a store view)."""

    def __init__(self, target: Target) -> None:
        if not isinstance(target, RegistryTarget | LayoutTarget):
            raise InvalidInputError(
                f"{target.name} is neither a registry nor the store: no deleting"
            )
        self.target = target

    def run(self, step: Removal) -> Removal:
        if step.kind == "tag":
            return self._tag(step)
        if step.kind == "index-entry":
            self._detach(step)
            return step
        named = step.note if step.kind in ("referrers-index", "legacy-tag") else step.reference
        self.manifest(Digest.parse(named or ""))
        return step

    def manifest(self, digest: Digest) -> None:
        if isinstance(self.target, LayoutTarget):
            self._store_drop(digest)
            return
        try:
            self.target.delete_manifest(digest)
        except UnsupportedError as exc:
            raise UnsupportedError(
                exc.message, hint=_DELETES_OFF_HINT, status=exc.status, code=exc.code
            ) from exc
        except NotFoundError:
            pass  # already gone (listed twice, or another process deleted it)

    def _tag(self, step: Removal) -> Removal:
        if isinstance(self.target, LayoutTarget):
            self.target.untag(step.reference)
            return step
        if self.target.delete_tag(step.reference):
            return step
        assert step.note is not None
        self.manifest(Digest.parse(step.note))
        return Removal(
            "manifest",
            step.note,
            note=f"{self.target.name} cannot delete the tag {step.reference!r} alone: its "
            "manifest was deleted, with every tag on it (its referrers stay: add --referrers "
            "to remove them too)",
        )

    def _store_drop(self, digest: Digest) -> None:
        assert isinstance(self.target, LayoutTarget)
        repository = self.target.repository

        def here(entry: dict[str, Any]) -> bool:
            if entry.get("digest") != str(digest):
                return False
            name = (entry.get("annotations") or {}).get(mt.ANN_REF_NAME)
            return name is None or repository is None or str(name).rpartition(":")[0] == repository

        self.target.store.drop_entries(here)

    def _detach(self, step: Removal) -> None:
        """Rewrite the subject's fallback index without ``step.reference``."""
        assert step.note is not None and step.subject is not None
        if isinstance(self.target, RegistryTarget):  # re-read, conditional, verified
            try:
                self.target.remove_referrer(
                    Digest.parse(step.subject), Digest.parse(step.reference)
                )
            except UnsupportedError as exc:
                raise UnsupportedError(
                    exc.message, hint=_DELETES_OFF_HINT, status=exc.status, code=exc.code
                ) from exc
            return
        try:
            index_desc, data = self._fetch(step.note)
        except NotFoundError:
            return
        index = Index.parse(data, what=f"referrers index {step.note!r}")
        kept = tuple(d for d in index.manifests if str(d.digest) != step.reference)
        if len(kept) == len(index.manifests):
            return
        if not kept:
            self.manifest(index_desc.digest)
            return
        new = Index(manifests=kept)
        self.target.push_manifest(
            Descriptor(mt.OCI_INDEX, new.digest, len(new.raw)), new.raw, step.note
        )

    def _fetch(self, tag: str) -> tuple[Descriptor, bytes]:
        desc = self.target.resolve(tag)
        return desc, fetch_bytes(self.target, desc, limit=MAX_CONFIG_BYTES, what=f"index {tag!r}")


def _free(target: Target, plan: _Plan, dry_run: bool) -> tuple[int, int, list[str]]:
    if not isinstance(target, LayoutTarget) or dry_run:
        return 0, 0, []
    result = gc.prune(target.store, older_than=0, only=plan.reached)
    return len(result.removed_blobs), result.blob_bytes, list(result.problems)


def delete(
    target: Target, reference: str, *, referrers: bool = False, dry_run: bool = False
) -> DeleteResult:
    """Delete ``reference`` (a tag or a digest) from ``target`` (see the module notes)."""
    plan = _plan_delete(target, reference, referrers=referrers)
    return _carry_out(target, plan, dry_run)


def _carry_out(target: Target, plan: _Plan, dry_run: bool) -> DeleteResult:
    deleter = _Deleter(target)
    done = list(plan.steps) if dry_run else [deleter.run(step) for step in plan.steps]
    blobs, size, problems = _free(target, plan, dry_run)
    return DeleteResult(target.name, dry_run, tuple(done), blobs, size, tuple(problems))


# ------------------------------------------------------------------ retention
def _parse_time(text: object) -> dt.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def created_at(target: Target, desc: Descriptor) -> str | None:
    """The creation time of a manifest: its ``org.opencontainers.image.created``, else
    the config's ``descriptor.createdAt`` (ModelPack), else its ``created``."""
    node = fetch_node(target, desc)
    if not isinstance(node, Manifest):
        return node.annotations.get(mt.ANN_CREATED)
    stamp = node.annotations.get(mt.ANN_CREATED)
    if _parse_time(stamp) is not None:
        return stamp
    if not node.config.media_type.endswith("json") or node.config.size > MAX_CONFIG_BYTES:
        return None
    try:
        config = json.loads(fetch_bytes(target, node.config, limit=MAX_CONFIG_BYTES, what="config"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(config, dict):
        return None
    descriptor = config.get("descriptor")
    for value in (
        descriptor.get("createdAt") if isinstance(descriptor, dict) else None,
        config.get("created"),
    ):
        if _parse_time(value) is not None:
            return str(value)
    return None


def _versions(target: Target) -> tuple[list[Version], dict[str, Descriptor]]:
    """The repository's manifests and their tags (schema tags of referrers left out),
    and the descriptor of each manifest by digest."""
    by_digest: dict[Digest, list[str]] = {}
    descs: dict[Digest, Descriptor] = {}
    for tag in target.tags():
        if _SCHEMA_TAG.match(tag):
            continue
        desc = target.resolve(tag)
        by_digest.setdefault(desc.digest, []).append(tag)
        descs[desc.digest] = desc
    versions = [
        Version(str(d), tuple(sorted(tags)), created_at(target, descs[d]))
        for d, tags in by_digest.items()
    ]
    return versions, {str(d): desc for d, desc in descs.items()}


def _decide(
    versions: list[Version],
    keep_last: int,
    keep: Sequence[str],
    older_than: float | None,
    now: dt.datetime,
) -> list[Version]:
    """Each version with the reason it is kept, or None; newest first."""
    dated = [v for v in versions if _parse_time(v.created) is not None]
    dated.sort(key=lambda v: (_parse_time(v.created), v.tags), reverse=True)
    newest = {v.digest for v in dated[:keep_last]}
    out: list[Version] = []
    for v in dated + [v for v in versions if _parse_time(v.created) is None]:
        when = _parse_time(v.created)
        reason: str | None = None
        if v.digest in newest:
            reason = f"among the newest {keep_last}"
        elif any(fnmatch.fnmatchcase(t, glob) for t in v.tags for glob in keep):
            reason = "a tag matches --keep"
        elif when is None:
            reason = "no creation time (undated versions are never pruned)"
        elif older_than is not None and (now - when).total_seconds() < older_than:
            reason = "younger than --older-than"
        out.append(Version(v.digest, v.tags, v.created, reason))
    return out


class _SignedCheck:
    """Whether versions that would go verify against ``keep_signed_by`` (module notes)."""

    def __init__(self, target: Target, policy: VerificationPolicy) -> None:
        from modelreg.attest.storage import MAX_REFERRERS as LISTING_CAP
        from modelreg.verify import prepare_policy  # only prune --keep-signed-by pays for it

        prepare_policy(policy)  # a policy that cannot apply fails before any check
        self.target = target
        # every bundle the listing may hold: forged ones ranked first hide nothing
        self.policy = dataclasses.replace(policy, max_referrers=LISTING_CAP)
        self.problems: list[str] = []

    def reason(self, version: Version, desc: Descriptor) -> str | None:
        """Why ``version`` is kept after all (None: it goes)."""
        from modelreg.verify import verify_artifact

        name = ", ".join(version.tags)
        try:
            result = verify_artifact(self.target, desc, self.policy)
        except (PolicyError, MissingExtraError):
            raise  # the same for every version: nothing is deleted, the caller is told
        except ModelRegError as exc:
            self.problems.append(
                f"{name} ({version.digest}): kept, its signatures could not be checked: "
                f"{exc.message}"
            )
            return "signatures could not be checked (kept to be safe; see problems)"
        if not result.ok:
            return None
        signers = sorted({s.authority for s in result.signatures})
        return "signed by " + ", ".join(signers)


def retain(
    target: Target,
    *,
    keep_last: int,
    keep: Sequence[str] = (),
    older_than: float | None = None,
    keep_signed_by: VerificationPolicy | None = None,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> RetentionResult:
    """Keep the newest ``keep_last`` versions of the repository, those with a tag
    matching a ``keep`` glob, (``older_than`` seconds) the younger ones and those
    that verify against ``keep_signed_by``; delete the rest with their referrers
    (see the module notes)."""
    if keep_last < 0:
        raise InvalidInputError(f"--keep-last must not be negative, not {keep_last}")
    versions, descs = _versions(target)
    decided = _decide(versions, keep_last, keep, older_than, now or dt.datetime.now(dt.UTC))
    problems: list[str] = []
    if keep_signed_by is not None:
        check = _SignedCheck(target, keep_signed_by)
        decided = [
            v
            if v.reason is not None
            else dataclasses.replace(v, reason=check.reason(v, descs[v.digest]))
            for v in decided
        ]
        problems = check.problems
    doomed = [v for v in decided if v.reason is None]
    plan = _Plan()
    for version in doomed:
        digest = Digest.parse(version.digest)
        sub = _plan_delete(target, version.digest, referrers=True)
        sub_tags = [Removal("tag", t, note=version.digest) for t in version.tags]
        if isinstance(target, LayoutTarget):
            plan.steps += [s for s in sub.steps if s.kind != "manifest"] + sub_tags
            plan.steps += [s for s in sub.steps if s.kind == "manifest"]
        else:
            plan.steps += sub.steps  # deleting the manifest by digest removes its tags
        plan.reached |= sub.reached
        plan.seen |= sub.seen | {digest}
    deleted = _carry_out(target, plan, dry_run) if doomed else None
    kept = tuple(v for v in decided if v.reason is not None)
    return RetentionResult(target.name, dry_run, kept, tuple(doomed), deleted, tuple(problems))


# -------------------------------------------------------------------- listing
def describe(target: Target, desc: Descriptor) -> dict[str, Any]:
    """Size (manifest, config and layers), creation time and whether a bundle
    (signature or attestation) refers to it: what ``modelreg list`` shows."""
    node = fetch_node(target, desc)
    size = desc.size
    if isinstance(node, Manifest):
        size += node.config.size + sum(layer.size for layer in node.layers)
    signed = any(r.artifact_type in BUNDLE_MEDIA_TYPES for r in target.referrers(desc))
    return {"size": size, "created": created_at(target, desc), "signed": signed}
