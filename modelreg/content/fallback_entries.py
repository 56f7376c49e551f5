"""Entries of a tag-schema referrers index that a copying tool rewrote.

The distribution spec has the client that pushes a referrer add an entry for it to
the fallback index (an image index at tag ``sha256-<hex>``), with the referrer's
``artifactType`` and annotations copied into the entry; modelreg writes it so and
filters referrers by that ``artifactType``.

A tool that copies the index by decoding and re-encoding it through a data model
older than image-spec 1.1 loses the field: skopeo 1.9 (Debian 12's), built on
containers/image 5.23 with image-spec 1.1.0-rc2, whose descriptor has no
``artifactType``, writes every entry without it (and refuses the copy outright under
``--preserve-digests``, since the bytes it would write differ). The referrer
manifests themselves travel unchanged, digests and ``subject`` included, so what was
lost can be read back from them: :func:`complete_entries` replaces an entry without
``artifactType`` by one built from the referrer manifest (fetched by digest, hence
verified), and drops it when that manifest is gone or names another subject.

Each completion costs one manifest fetch, so whoever can push to the repository
could make a listing fetch many: at most :data:`MAX_UNTYPED_ENTRIES` are completed,
and an index with more is refused (it is no copy of a real model's referrers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from modelreg.errors import FormatError, SizeLimitError
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import parse_manifest_or_index

__all__ = ["MAX_UNTYPED_ENTRIES", "complete_entries"]

MAX_UNTYPED_ENTRIES: Final = 100
"""Entries without ``artifactType`` one listing completes from their manifests."""

FetchManifest = Callable[[Descriptor], bytes | None]
"""The verified bytes of the manifest an entry names, or None when it is gone."""


def complete_entries(
    entries: Sequence[Descriptor], subject: Descriptor, fetch: FetchManifest, *, where: str
) -> list[Descriptor]:
    """``entries`` with every manifest entry that lacks ``artifactType`` completed
    from the referrer itself (see the module notes); ``where`` names the index."""
    untyped = [d for d in entries if _untyped(d)]
    if not untyped:
        return list(entries)
    if len(untyped) > MAX_UNTYPED_ENTRIES:
        raise SizeLimitError(
            f"{where} lists {len(untyped)} referrers without an artifactType, over the "
            f"limit of {MAX_UNTYPED_ENTRIES} that are looked up one by one",
            hint=(
                "the index was rewritten by a tool that drops artifactType; copy the "
                "model again with its referrers (`modelreg cp --recursive`)"
            ),
        )
    out: list[Descriptor] = []
    for entry in entries:
        if not _untyped(entry):
            out.append(entry)
            continue
        completed = _complete(entry, subject, fetch)
        if completed is not None:
            out.append(completed)
    return out


def _untyped(entry: Descriptor) -> bool:
    return entry.artifact_type is None and entry.media_type in mt.ALL_MANIFEST_TYPES


def _complete(entry: Descriptor, subject: Descriptor, fetch: FetchManifest) -> Descriptor | None:
    data = fetch(entry)
    if data is None:
        return None
    try:
        node = parse_manifest_or_index(data, entry.media_type, what=f"referrer {entry.digest}")
    except (FormatError, SizeLimitError):
        return entry  # not a referrer modelreg can read: listed as it was, never matched
    if not node.is_referrer_of(subject.digest):
        return None
    return Descriptor(
        media_type=entry.media_type,
        digest=entry.digest,
        size=entry.size,
        annotations=dict(node.annotations),
        artifact_type=node.effective_artifact_type,
    )
