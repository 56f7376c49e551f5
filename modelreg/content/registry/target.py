"""One repository of a registry, implementing :class:`~modelreg.content.base.Target`.

Reads are verified: blobs through :class:`~modelreg.content.base.VerifyingReader`,
manifests by hashing the bytes (against the digest asked for, or against
``Docker-Content-Digest`` when fetched by tag) under a 4 MiB cap that is enforced
before and while reading. Writes go through :mod:`~modelreg.content.registry.uploads`.

Transfer bounds (:mod:`~modelreg.content.registry.deadlines`): a document (manifest,
index, referrers or tag page, and any blob up to ``SMALL_BODY``) is fetched and
read under one document deadline covering its retries; a larger blob's body is
read under a throughput floor (its headers under the request's deadline).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Final

import httpx

from modelreg.content.base import (
    BlobSource,
    PushResult,
    ReadOnlyTarget,
    VerifyingReader,
    read_into,
)
from modelreg.content.fallback_entries import complete_entries
from modelreg.content.registry.auth import repository_scope
from modelreg.content.registry.client import BULK_MIN
from modelreg.content.registry.deadlines import SMALL_BODY, TransferBound
from modelreg.content.registry.streams import ResponseReader
from modelreg.content.registry.uploads import BlobUpload, PendingUpload
from modelreg.errors import (
    FormatError,
    IntegrityError,
    InvalidDigestError,
    InvalidInputError,
    InvalidReferenceError,
    ModelRegError,
    NotFoundError,
    RegistryError,
    SizeLimitError,
)
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import MAX_MANIFEST_BYTES, Index, Manifest, parse_manifest_or_index
from modelreg.oci.reference import Reference

if TYPE_CHECKING:
    from modelreg.content.registry.client import RegistryClient

__all__ = [
    "MANIFEST_ACCEPT",
    "MAX_REFERRERS",
    "REFERRERS_UPDATE_ATTEMPTS",
    "RegistryTarget",
    "parse_link_next",
    "referrers_tag",
]

MANIFEST_ACCEPT: Final = ", ".join(
    [mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST]
)
_MANIFEST_HEADERS: Final = {"Accept": MANIFEST_ACCEPT, "Accept-Encoding": "identity"}
MAX_REFERRERS: Final = 1000
MAX_REFERRER_PAGES: Final = 100
REFERRERS_UPDATE_ATTEMPTS: Final = 5
"""PUTs of the tag-schema referrers index tried before concurrent writers win."""
_REFERRERS_BACKOFF_BASE: Final = 0.05
_REFERRERS_BACKOFF_MAX: Final = 1.0
MAX_TAG_PAGES: Final = 1000
TAG_PAGE_SIZE: Final = 1000
MAX_JSON_BYTES: Final = 4 * 1024 * 1024
_TAG_RE: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_CONTENT_RANGE_RE: Final = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")
_LINK_RE: Final = re.compile(r"<([^>]*)>((?:\s*;\s*[^,;<]*)*)")
_STRONG_ETAG_RE: Final = re.compile(r'^"[\x21\x23-\x7e]+"$')

_log = logging.getLogger("modelreg.registry")


def referrers_tag(digest: Digest) -> str:
    """The tag of the referrers tag-schema fallback: ``<alg>-<hex>`` (truncated)."""
    return f"{digest.algorithm[:32]}-{digest.hex[:64]}"


def parse_link_next(link: str | None, base: httpx.URL) -> httpx.URL | None:
    """The ``rel="next"`` target of a ``Link`` header, resolved against ``base``."""
    if not link:
        return None
    for match in _LINK_RE.finditer(link):
        params = match.group(2)
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "rel" and "next" in value.strip().strip('"').split():
                return base.join(match.group(1).strip())
    return None


def _strong_etag(headers: httpx.Headers) -> str | None:
    """The response's ``ETag`` if it is one non-empty strong entity-tag, else None.

    A weak (``W/"…"``), empty, malformed or repeated ETag cannot be used with
    ``If-Match`` (strong comparison), so none is returned for it.
    """
    values = headers.get_list("etag")
    if len(values) != 1:
        return None
    value = values[0].strip()
    return value if _STRONG_ETAG_RE.match(value) else None


class _PreconditionFailed(RegistryError):
    """412 to a conditional manifest PUT: the tag changed since it was read."""


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip()


def _sniff_media_type(data: bytes, content_type: str) -> str:
    if content_type in mt.ALL_MANIFEST_TYPES:
        return content_type
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        obj = None
    if isinstance(obj, dict):
        declared = obj.get("mediaType")
        if isinstance(declared, str) and declared in mt.ALL_MANIFEST_TYPES:
            return declared
        return mt.OCI_INDEX if "manifests" in obj else mt.OCI_MANIFEST
    return mt.OCI_MANIFEST


class RegistryTarget:
    """A repository of a remote registry: the remote :class:`~modelreg.content.base.Target`.

    Besides the target protocol it has the optional capabilities of
    :mod:`modelreg.content.base`: :class:`~modelreg.content.base.Mounter` (``mount``,
    ``mountable_from``), :class:`~modelreg.content.base.PendingPusher`
    (``push_pending``) and :class:`~modelreg.content.base.RangeReader`
    (``supports_range``, learned per registry client, i.e. per host).
    """

    def __init__(self, client: RegistryClient, repository: str) -> None:
        if client.api_host == "registry-1.docker.io" and "/" not in repository:
            repository = f"library/{repository}"
        try:
            Reference(kind="registry", registry=client.host, repository=repository)
        except InvalidReferenceError as exc:
            raise InvalidReferenceError(
                f"invalid repository name {repository!r} for {client.host}", hint=exc.hint
            ) from exc
        self.client = client
        self.repository = repository
        self._pull = (repository_scope(repository, "pull"),)
        self._push = (repository_scope(repository, "pull", "push"),)

    def __repr__(self) -> str:
        return f"RegistryTarget({self.name!r})"

    @property
    def name(self) -> str:
        return f"{self.client.host}/{self.repository}"

    @property
    def supports_range(self) -> bool | None:
        """None until a ranged read was answered; False once the host ignored ``Range``
        (and from then on for this client: one whole answer says enough)."""
        return self.client.supports_range

    def _learned_range(self, honoured: bool) -> None:
        # sticky: a host seen ignoring Range once is not trusted with it again by this
        # client, or every lazy read would risk pulling a whole blob to find out
        if not honoured:
            self.client.supports_range = False
        elif self.client.supports_range is None:
            self.client.supports_range = True

    def mountable_from(self, source: ReadOnlyTarget) -> str | None:
        """``source``'s repository when it is another repository reached through this
        target's registry client (a mount can link blobs from it), else None."""
        if not isinstance(source, RegistryTarget) or source.client is not self.client:
            return None
        return source.repository if source.repository != self.repository else None

    @property
    def pull_scopes(self) -> tuple[str, ...]:
        return self._pull

    @property
    def push_scopes(self) -> tuple[str, ...]:
        return self._push

    def _path(self, kind: str, ref: str) -> str:
        return f"/v2/{self.repository}/{kind}/{ref}"

    @staticmethod
    def _is_manifest(desc: Descriptor) -> bool:
        return desc.media_type in mt.ALL_MANIFEST_TYPES

    def _check_reference(self, reference: str) -> Digest | None:
        """Validate a tag or digest string; return the digest when it is one."""
        if not isinstance(reference, str) or not reference:
            raise InvalidReferenceError(f"invalid tag or digest {reference!r} for {self.name}")
        if ":" in reference:
            try:
                return Digest.parse(reference)
            except InvalidDigestError as exc:
                raise InvalidReferenceError(
                    f"invalid digest {reference!r} for {self.name}", hint=exc.hint
                ) from exc
        if not _TAG_RE.match(reference):
            raise InvalidReferenceError(
                f"invalid tag {reference!r} for {self.name}",
                hint="tags are up to 128 of [A-Za-z0-9_.-], not starting with . or -",
            )
        return None

    # ================================================================== reads
    def fetch(self, desc: Descriptor) -> VerifyingReader:
        """Open a blob (or manifest) for reading; every byte is checked against ``desc``."""
        if not self._is_manifest(desc):
            return self._verifying(
                self.open_blob(desc), desc, f"blob {desc.digest} from {self.name}"
            )
        path = self._path("manifests", str(desc.digest))
        headers = {"Accept-Encoding": "identity", "Accept": f"{desc.media_type}, {MANIFEST_ACCEPT}"}
        reader = self._open_body(desc, "manifest", path, headers, bulk=False, small=True)
        return self._verifying(reader, desc, f"manifest {desc.digest} from {self.name}")

    def open_blob(self, desc: Descriptor, offset: int = 0) -> ResponseReader:
        """The body of blob ``desc`` from byte ``offset`` on, *unverified* (:meth:`fetch`
        puts the verifying reader over it; a mirrored read hands a blob over to the next
        source at the offset reached). A cut connection is resumed here a bounded number
        of times, as :meth:`fetch` does."""
        path = self._path("blobs", str(desc.digest))
        headers = {"Accept-Encoding": "identity"}
        bulk = desc.size - offset >= BULK_MIN
        small = desc.size <= SMALL_BODY
        return self._open_body(desc, "blob", path, headers, offset, bulk=bulk, small=small)

    def _open_body(
        self,
        desc: Descriptor,
        kind: str,
        path: str,
        headers: dict[str, str],
        offset: int = 0,
        *,
        bulk: bool,
        small: bool,
    ) -> ResponseReader:
        """GET ``path`` (a manifest or blob) from byte ``offset``, unverified, resumed after
        a cut a bounded number of times; read whole under a document deadline when
        ``small``, else under the throughput floor."""
        what = f"download {kind} {desc.digest} from {self.name}"
        bound = self._bound(small, what, path)
        skip = 0
        if offset == 0:
            response = self.client.request(
                "GET",
                path,
                scopes=self._pull,
                what=what,
                headers=headers,
                follow_redirects=True,
                bulk=bulk,
                repository=self.repository,
                subject=f"{kind} {desc.digest}",
                bound=bound if small else None,
            )
            self._check_length(response, desc, kind)
        else:
            response, skip = self._open_from(path, headers, desc, offset, desc.size - 1, bulk, what)

        def reopen(delivered: int, attempt: int) -> tuple[httpx.Response, int]:
            self.client.retry.sleep(self.client.retry.backoff(attempt))
            start = offset + delivered
            return self._open_from(path, headers, desc, start, desc.size - 1, bulk, what)

        return ResponseReader(
            response,
            on_bytes=self.client.stats.add_received,
            translate=lambda exc, n: self.client.network_error(exc, what=what, attempts=n),
            reopen=reopen,
            max_resumes=self.client.retry.max_attempts - 1,
            skip=skip,
            bound=bound,
        )

    def _verifying(self, stream: ResponseReader, desc: Descriptor, what: str) -> VerifyingReader:
        """The verifying reader over a fetched stream (a mirror's says who lied)."""
        return VerifyingReader(stream, desc, what=what)

    def _bound(self, small: bool, what: str, path: str) -> TransferBound:
        """A document deadline for what is read whole, else a throughput floor."""
        url = self.client.url(path)
        return self.client.deadline(what, url) if small else self.client.floor(what, url)

    def _check_length(self, response: httpx.Response, desc: Descriptor, kind: str) -> None:
        declared = response.headers.get("content-length", "")
        if (
            declared.isdigit()
            and not response.headers.get("content-encoding")
            and int(declared) != desc.size
        ):
            response.close()
            raise IntegrityError(
                f"{self.client.host} serves {kind} {desc.digest} of {self.name} with "
                f"{int(declared)} bytes, its descriptor declares {desc.size}",
                hint="the registry serves different content than expected; nothing was kept",
            )

    def _open_from(
        self,
        path: str,
        headers: Mapping[str, str],
        desc: Descriptor,
        start: int,
        end: int,
        bulk: bool,
        what: str,
    ) -> tuple[httpx.Response, int]:
        """GET ``bytes=start-end``; returns the response and how many bytes to skip."""
        ranged = dict(headers)
        if start > 0 or end < desc.size - 1:
            ranged["Range"] = f"bytes={start}-{end}"
        response = self.client.request(
            "GET",
            path,
            scopes=self._pull,
            what=what,
            headers=ranged,
            ok=(200, 206),
            follow_redirects=True,
            bulk=bulk,
            repository=self.repository,
            subject=f"blob {desc.digest}",
        )
        if response.status_code == 200:
            if "Range" in ranged:
                self._learned_range(False)
            self._check_length(response, desc, "blob")
            return response, start
        self._learned_range(True)
        content_range = response.headers.get("content-range", "")
        match = _CONTENT_RANGE_RE.match(content_range)
        if match is None or int(match.group(1)) != start or int(match.group(2)) != end:
            response.close()
            raise RegistryError(
                f"{self.client.host} answered the range bytes={start}-{end} of blob "
                f"{desc.digest} in {self.name} with Content-Range {content_range[:80]!r}",
                hint="the registry's range support is broken; report it to its operator",
                status=206,
            )
        return response, 0

    def fetch_range(self, desc: Descriptor, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (206 expected; a 200 is read through and sliced)."""
        buffer = bytearray(length)
        self.fetch_range_into(desc, offset, [memoryview(buffer)])
        return bytes(buffer)

    @property
    def streams_ranges(self) -> bool:
        """One long body may serve many reads (:class:`~modelreg.content.base.RangeStreamer`)."""
        return True

    def open_range(self, desc: Descriptor, offset: int, length: int) -> ResponseReader:
        """The bytes ``[offset, offset + length)`` as a body read at the caller's pace
        (unverified): each ``readinto`` fills what the body allows, a cut connection is
        resumed where it broke, and the bound is a throughput floor counted only while
        waiting on the socket, so a caller that pauses between reads is not blamed."""
        if offset < 0 or length < 0 or offset + length > desc.size:
            raise InvalidInputError(
                f"range of {length} bytes at offset {offset} is outside blob {desc.digest} "
                f"({desc.size} bytes)"
            )
        path = self._path("blobs", str(desc.digest))
        headers = {"Accept-Encoding": "identity"}
        bulk = length >= BULK_MIN
        what = f"read bytes {offset}-{offset + length - 1} of blob {desc.digest} from {self.name}"
        end = offset + length - 1
        bound = self._bound(length <= SMALL_BODY, what, path)
        response, skip = self._open_from(path, headers, desc, offset, end, bulk, what)

        def reopen(delivered: int, attempt: int) -> tuple[httpx.Response, int]:
            self.client.retry.sleep(self.client.retry.backoff(attempt))
            return self._open_from(path, headers, desc, offset + delivered, end, bulk, what)

        return ResponseReader(
            response,
            on_bytes=self.client.stats.add_received,
            translate=lambda exc, n: self.client.network_error(exc, what=what, attempts=n),
            reopen=reopen,
            max_resumes=self.client.retry.max_attempts - 1,
            skip=skip,
            bound=bound,
        )

    def fetch_range_into(self, desc: Descriptor, offset: int, views: list[memoryview]) -> None:
        """The bytes from ``offset`` on, straight into ``views`` in turn (one request for
        their total length; no intermediate copy). Unverified, like :meth:`fetch_range`."""
        length = sum(len(v) for v in views)
        if length == 0:
            if offset < 0 or offset > desc.size:
                raise InvalidInputError(
                    f"offset {offset} is outside blob {desc.digest} ({desc.size} bytes)"
                )
            return
        got = 0
        with self.open_range(desc, offset, length) as reader:
            for view in views:
                filled = read_into(reader, view)
                got += filled
                if filled < len(view):
                    break
        if got != length:
            raise IntegrityError(
                f"{self.client.host} sent {got} of the {length} bytes at offset {offset} of blob "
                f"{desc.digest} in {self.name}",
                hint="the blob is shorter than its descriptor says or the transfer was cut",
            )

    def exists(self, desc: Descriptor) -> bool:
        is_manifest = self._is_manifest(desc)
        kind = "manifest" if is_manifest else "blob"
        headers = {"Accept": f"{desc.media_type}, {MANIFEST_ACCEPT}"} if is_manifest else {}
        response = self.client.request(
            "HEAD",
            self._path("manifests" if is_manifest else "blobs", str(desc.digest)),
            scopes=self._pull,
            what=f"check for {kind} {desc.digest} in {self.name}",
            headers=headers,
            ok=(200, 404),
            follow_redirects=True,
            repository=self.repository,
        )
        response.close()
        return response.status_code == 200

    def resolve(self, reference: str) -> Descriptor:
        """Tag or digest -> the manifest's descriptor (HEAD, else GET and hash)."""
        expected = self._check_reference(reference)
        response = self.client.request(
            "HEAD",
            self._path("manifests", reference),
            scopes=self._pull,
            what=f"resolve {reference!r} in {self.name}",
            headers=_MANIFEST_HEADERS,
            follow_redirects=True,
            repository=self.repository,
            subject=f"manifest {reference!r}",
        )
        response.close()
        digest_header = response.headers.get("docker-content-digest")
        media_type = _media_type(response.headers.get("content-type"))
        length = response.headers.get("content-length", "")
        if digest_header and media_type in mt.ALL_MANIFEST_TYPES and length.isdigit():
            try:
                digest = Digest.parse(digest_header.strip())
            except InvalidDigestError:
                digest = None
            if digest is not None:
                if expected is not None and digest != expected:
                    raise IntegrityError(
                        f"{self.client.host} resolved {reference} in {self.name} to {digest}",
                        hint="the registry answers for a different manifest; do not trust it",
                    )
                return Descriptor(media_type, digest, int(length))
        desc, _ = self.fetch_manifest(reference)
        return desc

    def fetch_manifest(self, reference: str) -> tuple[Descriptor, bytes]:
        """GET a manifest or index by tag or digest, verified and capped at 4 MiB."""
        desc, data, _ = self._fetch_manifest_etag(reference)
        return desc, data

    def _fetch_manifest_etag(self, reference: str) -> tuple[Descriptor, bytes, str | None]:
        """:meth:`fetch_manifest`, plus the answer's strong ``ETag`` (None if it sent none)."""
        expected = self._check_reference(reference)
        what = f"manifest {reference!r} of {self.name}"
        path = self._path("manifests", reference)
        deadline = self.client.deadline(f"fetch {what}", self.client.url(path))
        response = self.client.request(
            "GET",
            path,
            scopes=self._pull,
            what=f"fetch {what}",
            headers=_MANIFEST_HEADERS,
            follow_redirects=True,
            repository=self.repository,
            subject=f"manifest {reference!r}",
            bound=deadline,
        )
        data = self.client.read_body(response, MAX_MANIFEST_BYTES, what=what, bound=deadline)
        header = response.headers.get("docker-content-digest")
        if expected is not None:
            actual = Digest.from_bytes(data, expected.algorithm)
            if actual != expected:
                raise IntegrityError(
                    f"{what} hashes to {actual}, not the digest it was fetched by",
                    hint="the registry serves tampered or corrupt content; nothing was kept",
                )
        else:
            declared: Digest | None = None
            if header:
                try:
                    declared = Digest.parse(header.strip())
                except InvalidDigestError:
                    _log.debug("ignoring malformed Docker-Content-Digest %r", header[:100])
            actual = Digest.from_bytes(data, declared.algorithm if declared else "sha256")
            if declared is not None and actual != declared:
                raise IntegrityError(
                    f"{what} hashes to {actual}, but the registry says it is {declared}",
                    hint="the registry serves tampered or corrupt content; nothing was kept",
                )
        media_type = _sniff_media_type(data, _media_type(response.headers.get("content-type")))
        return Descriptor(media_type, actual, len(data)), data, _strong_etag(response.headers)

    def referrers(self, desc: Descriptor, artifact_type: str | None = None) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``desc``: the referrers API, else the tag schema."""
        url: str | httpx.URL = self._path("referrers", str(desc.digest))
        params = {"artifactType": artifact_type} if artifact_type else None
        found: list[Descriptor] = []
        seen: set[str] = set()
        for page in range(MAX_REFERRER_PAGES):
            what = f"list the referrers of {desc.digest} in {self.name}"
            deadline = self.client.deadline(what)
            response = self.client.request(
                "GET",
                url,
                scopes=self._pull,
                bound=deadline,
                what=what,
                headers={"Accept": mt.OCI_INDEX},
                params=params if page == 0 else None,
                ok=(200, 404),
                follow_redirects=True,
                repository=self.repository,
            )
            if response.status_code == 404:
                response.close()
                if page == 0:
                    return self._referrers_fallback(desc, artifact_type)
                raise NotFoundError(
                    f"page {page + 1} of the referrers of {desc.digest} in {self.name} vanished",
                    hint="the referrers changed while being listed; try again",
                )
            link = response.headers.get("link")
            request_url = response.request.url
            data = self.client.read_body(
                response,
                MAX_JSON_BYTES,
                what=f"the referrers of {desc.digest} in {self.name}",
                bound=deadline,
            )
            try:
                index = Index.parse(data, what=f"referrers index of {desc.digest}")
            except FormatError:
                if page == 0:
                    _log.debug("referrers API of %s answered a non-index; using tags", self.name)
                    return self._referrers_fallback(desc, artifact_type)
                raise
            found.extend(index.manifests)
            self._check_referrer_count(len(found), desc)
            next_url = parse_link_next(link, request_url)
            if next_url is None or str(next_url) in seen:
                if not found:
                    # Referrers that reached the repository only as the fallback tag
                    # (copied by a tool that knows no referrers API) are found there.
                    return self._referrers_fallback(desc, artifact_type)
                return self._filter(found, artifact_type)
            self._check_same_origin(next_url, "referrers Link")
            seen.add(str(next_url))
            url = next_url
        raise SizeLimitError(
            f"the referrers of {desc.digest} in {self.name} span more than "
            f"{MAX_REFERRER_PAGES} pages",
            hint="refused: too many referrers to check",
        )

    def _referrers_fallback(self, desc: Descriptor, artifact_type: str | None) -> list[Descriptor]:
        tag = referrers_tag(desc.digest)
        try:
            _, data = self.fetch_manifest(tag)
        except NotFoundError:
            return []
        index = self._parse_referrers_index(data, tag)
        self._check_referrer_count(len(index.manifests), desc)
        where = f"the referrers index at tag {tag!r} of {self.name}"
        entries = complete_entries(index.manifests, desc, self._fetch_referrer, where=where)
        return self._filter(entries, artifact_type)

    def _fetch_referrer(self, entry: Descriptor) -> bytes | None:
        """The manifest a fallback-index entry names (verified), None when it is gone."""
        try:
            return self.fetch_manifest(str(entry.digest))[1]
        except NotFoundError:
            return None

    def _parse_referrers_index(self, data: bytes, tag: str) -> Index:
        try:
            return Index.parse(data, what=f"referrers index at tag {tag!r} of {self.name}")
        except FormatError as exc:
            raise FormatError(
                f"the tag {tag!r} of {self.name} should hold the referrers index, but: "
                f"{exc.message}",
                hint="something else was pushed under this tag; remove or fix it",
            ) from exc

    def _check_referrer_count(self, count: int, desc: Descriptor) -> None:
        if count > MAX_REFERRERS:
            raise SizeLimitError(
                f"{desc.digest} in {self.name} has more than {MAX_REFERRERS} referrers",
                hint="refused: too many signatures/attestations to check; clean up old ones",
            )

    @staticmethod
    def _filter(found: list[Descriptor], artifact_type: str | None) -> list[Descriptor]:
        # Filter here even when the registry says it did (OCI-Filters-Applied).
        if artifact_type is None:
            return found
        return [d for d in found if d.artifact_type == artifact_type]

    def _check_same_origin(self, url: httpx.URL, what: str) -> None:
        if not self.client.same_origin(url):
            raise RegistryError(
                f"{self.client.host} pointed its {what} at another host ({url.host!r})",
                hint="refused: modelreg follows pagination only on the registry's own host",
            )

    def tags(self) -> Iterator[str]:
        """Every tag of the repository, page by page (``Link: <…>; rel="next"``)."""
        return self._iter_tags()

    def _iter_tags(self) -> Iterator[str]:
        url: str | httpx.URL = self._path("tags", "list")
        seen: set[str] = set()
        for page in range(MAX_TAG_PAGES):
            deadline = self.client.deadline(f"list the tags of {self.name}")
            response = self.client.request(
                "GET",
                url,
                scopes=self._pull,
                bound=deadline,
                what=f"list the tags of {self.name}",
                params={"n": str(TAG_PAGE_SIZE)} if page == 0 else None,
                repository=self.repository,
                subject=f"repository {self.name}",
            )
            link = response.headers.get("link")
            request_url = response.request.url
            data = self.client.read_body(
                response, MAX_JSON_BYTES, what=f"tags of {self.name}", bound=deadline
            )
            yield from self._parse_tags(data)
            next_url = parse_link_next(link, request_url)
            if next_url is None or str(next_url) in seen:
                return
            self._check_same_origin(next_url, "tag list Link")
            seen.add(str(next_url))
            url = next_url
        raise SizeLimitError(
            f"the tag list of {self.name} spans more than {MAX_TAG_PAGES} pages",
            hint="refused: the registry keeps sending more pages",
        )

    def _parse_tags(self, data: bytes) -> list[str]:
        try:
            obj: Any = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"the tag list of {self.name} is not JSON") from exc
        tags = obj.get("tags") if isinstance(obj, dict) else None
        if tags is None:
            return []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise FormatError(f"the tag list of {self.name} is not a list of strings")
        return list(tags)

    # ================================================================== writes
    def push(self, desc: Descriptor, source: BlobSource) -> PushResult:
        """Upload a blob unless the repository has it (HEAD first)."""
        if self.exists(desc):
            return PushResult(existed=True)
        if self._is_manifest(desc):
            with source(0) as stream:
                data = stream.read(MAX_MANIFEST_BYTES + 1)
            self.push_manifest(desc, data)
            return PushResult(sent=len(data))
        sent = BlobUpload(self, desc, source).run()
        return PushResult(sent=sent)

    def push_pending(
        self,
        media_type: str,
        size: int,
        source: BlobSource,
        digest: Future[Digest],
        mount_from: Callable[[Descriptor], Iterable[str]] | None = None,
    ) -> tuple[Descriptor, PushResult]:
        """Upload a blob while its digest is still being computed elsewhere.

        See :class:`~modelreg.content.registry.uploads.PendingUpload`. Returns the
        blob's descriptor and what was done: bytes sent, and whether the upload
        stopped because the blob existed or was mounted from a repository that
        ``mount_from(desc)`` names (same registry).
        """
        upload = PendingUpload(self, media_type, size, source, digest, mount_from)
        sent = upload.run()
        desc = Descriptor(media_type, digest.result(), size)
        return desc, PushResult(sent=sent, existed=upload.existed, mounted=upload.mounted)

    def mount(self, desc: Descriptor, from_repo: str) -> bool:
        """Cross-repository mount: True when the registry linked the blob (201)."""
        try:
            Reference(kind="registry", registry=self.client.host, repository=from_repo)
        except InvalidReferenceError as exc:
            raise InvalidReferenceError(
                f"invalid repository name {from_repo!r} to mount from", hint=exc.hint
            ) from exc
        response = self.client.request(
            "POST",
            self._path("blobs", "uploads/"),
            scopes=(*self._push, repository_scope(from_repo, "pull")),
            what=f"mount blob {desc.digest} from {from_repo} into {self.name}",
            params={"mount": str(desc.digest), "from": from_repo},
            ok=(201, 202),
            idempotent=False,
            repository=self.repository,
        )
        response.close()
        if response.status_code == 201:
            return True
        location = response.headers.get("location")
        if location:
            self.cancel_upload(location)
        return False

    def cancel_upload(self, location: str) -> None:
        """Best effort DELETE of an upload session (never raises)."""
        try:
            url = response_url(self, location)
            response = self.client.request(
                "DELETE",
                url,
                scopes=self._push,
                what=f"cancel an upload session in {self.name}",
                ok=(200, 202, 204, 404),
                repository=self.repository,
            )
            response.close()
        except ModelRegError as exc:
            _log.debug("could not cancel upload session in %s: %s", self.name, exc.message)

    def push_manifest(self, desc: Descriptor, data: bytes, tag: str | None = None) -> None:
        """PUT a manifest by tag (or digest); keep the referrers fallback index current."""
        if len(data) != desc.size or Digest.from_bytes(data, desc.digest.algorithm) != desc.digest:
            raise IntegrityError(
                f"the manifest bytes to push do not match {desc.digest} ({desc.size} bytes)",
                hint="the manifest was changed after its descriptor was computed",
            )
        subject_processed = self._put_manifest(desc, data, tag)
        if subject_processed:
            return
        try:
            node = parse_manifest_or_index(data, desc.media_type)
        except (FormatError, SizeLimitError):
            return
        if node.subject is not None:
            self._add_referrer(node, desc)

    def _put_manifest(
        self,
        desc: Descriptor,
        data: bytes,
        tag: str | None,
        *,
        conditions: Mapping[str, str] | None = None,
    ) -> bool:
        """PUT the manifest; True when the registry answered ``OCI-Subject``.

        ``conditions`` are ``If-Match`` / ``If-None-Match`` headers; with them a 412
        answer raises :class:`_PreconditionFailed` (the tag changed since it was read).
        """
        reference = tag if tag is not None else str(desc.digest)
        self._check_reference(reference)
        what = f"push manifest {desc.digest} to {self.name}" + (f" as {tag!r}" if tag else "")
        response = self.client.request(
            "PUT",
            self._path("manifests", reference),
            scopes=self._push,
            what=what,
            headers={"Content-Type": desc.media_type, **(conditions or {})},
            content=data,
            idempotent=True,
            ok=(200, 201, 202, 204, 412) if conditions else (200, 201, 202, 204),
            repository=self.repository,
            subject=f"manifest {reference!r}",
        )
        response.close()
        if response.status_code == 412:
            raise _PreconditionFailed(
                f"{self.client.host} refused to {what}: 412 Precondition Failed "
                "(the tag changed since it was read)",
                hint="another writer updated the tag at the same time; try again",
                status=412,
            )
        stored = response.headers.get("docker-content-digest")
        if stored:
            try:
                stored_digest: Digest | None = Digest.parse(stored.strip())
            except InvalidDigestError:
                stored_digest = None
            if stored_digest is not None and stored_digest != desc.digest:
                raise IntegrityError(
                    f"{self.client.host} stored the manifest pushed as {desc.digest} in "
                    f"{self.name} under {stored_digest}",
                    hint="the registry rewrote the manifest; references by digest would break",
                )
        return bool(response.headers.get("oci-subject"))

    def _add_referrer(self, node: Manifest | Index, desc: Descriptor) -> None:
        """Add ``desc`` to the tag-schema referrers index of ``node.subject``.

        The index (an OCI image index at tag ``<alg>-<hex>``) is updated by
        read-modify-write. Threads of this process take turns on the client's lock;
        against other processes (two CI jobs signing the same model at once) the
        update goes as far as the distribution protocol allows:

        * the PUT is conditional: ``If-Match`` with the strong ``ETag`` the registry
          sent for the index that was read, or ``If-None-Match: *`` when the tag did
          not exist. A registry that implements conditional requests answers 412 to
          the writer that lost the race, which reads the index again and retries;
        * after each successful PUT the tag is read again and must list ``desc``
          (verify-after-write); if another writer's PUT replaced the index without
          it, the entry is merged in again and the PUT retried.

        A merge keeps every entry already in the index and adds ``desc`` if it is
        absent. A 412 after which the index reads exactly as before (same ETag, or
        still absent) means the registry mishandles conditions: the next PUTs are
        unconditional. At most :data:`REFERRERS_UPDATE_ATTEMPTS` PUTs are made, with short
        jittered pauses between attempts; then :class:`RegistryError`.

        On registries that ignore conditional requests (Distribution 2.8, among
        others) this narrows the race but cannot close it: a writer that read the
        index before our PUT and writes it back after our verifying GET still drops
        our entry, and nothing tells us. Registries that answer ``OCI-Subject`` to
        the manifest PUT keep the referrers themselves and never come here.
        """
        subject = node.subject
        assert subject is not None
        entry = Descriptor(
            media_type=desc.media_type,
            digest=desc.digest,
            size=desc.size,
            artifact_type=node.effective_artifact_type,
            annotations=dict(node.annotations),
        )
        tag = referrers_tag(subject.digest)
        with self.client.referrers_lock(f"{self.repository}:{tag}"):
            conditional = True
            refused: tuple[bool, str | None] | None = None  # the state a 412 answered
            for attempt in range(1, REFERRERS_UPDATE_ATTEMPTS + 1):
                if attempt > 1:
                    self._referrers_backoff(attempt - 1)
                existing, etag, exists = self._read_referrers_index(tag)
                if any(d.digest == desc.digest for d in existing):
                    return
                if refused is not None and refused == (exists, etag):
                    # 412 although nothing changed: the registry mishandles conditions;
                    # verify-after-write is all that is left
                    _log.debug("%s: 412 for unchanged %s; unconditional PUTs", self.name, tag)
                    conditional = False
                refused = None
                self._check_referrer_count(len(existing) + 1, subject)
                index = Index(manifests=(*existing, entry))
                index_desc = Descriptor(mt.OCI_INDEX, index.digest, len(index.raw))
                conditions: dict[str, str] = {}
                if conditional and not exists:
                    conditions["If-None-Match"] = "*"
                elif conditional and etag is not None:
                    conditions["If-Match"] = etag
                try:
                    self._put_manifest(index_desc, index.raw, tag, conditions=conditions)
                except _PreconditionFailed:
                    _log.debug("referrers index %s of %s changed before our PUT", tag, self.name)
                    refused = (exists, etag)
                    continue
                after, _, _ = self._read_referrers_index(tag)
                if any(d.digest == desc.digest for d in after):
                    return
                _log.debug("referrers index %s of %s was replaced after our PUT", tag, self.name)
        raise RegistryError(
            f"the referrers index of {subject.digest} in {self.name} (tag {tag!r}) kept "
            f"changing under concurrent writers: {desc.digest} was still missing from it "
            f"after {REFERRERS_UPDATE_ATTEMPTS} attempts",
            hint=(
                "other processes are adding signatures or attestations to the same model; "
                f"retry (the manifest {desc.digest} itself was pushed, only its entry in the "
                "index is missing)"
            ),
        )

    def remove_referrer(self, subject: Digest, referrer: Digest) -> bool:
        """Take ``referrer`` out of the tag-schema referrers index of ``subject``;
        the index is deleted when nothing is left in it. False: it was not listed.

        The counterpart of :meth:`_add_referrer` (``rm`` of one signature), under the
        same lock and the same protocol, so it cannot silently drop what a concurrent
        signer adds: each attempt starts from the index as it is now and keeps every
        other entry; the PUT is conditional (``If-Match`` with the ETag read), a 412
        reads again and retries, and verify-after-write reads the tag back: an index
        listing ``referrer`` again (a writer put back what it read before our PUT) is
        corrected. Registries that ignore conditions (Distribution 2.8) keep the race
        :meth:`_add_referrer` describes: narrowed, not closed. An empty index is
        deleted by the digest that was read, so an index another writer put there
        meanwhile (another digest) stays.
        """
        tag = referrers_tag(subject)
        removed = False
        with self.client.referrers_lock(f"{self.repository}:{tag}"):
            conditional = True
            refused: str | None = None  # the ETag a 412 answered
            for attempt in range(1, REFERRERS_UPDATE_ATTEMPTS + 1):
                if attempt > 1:
                    self._referrers_backoff(attempt - 1)
                try:
                    found, data, etag = self._fetch_manifest_etag(tag)
                except NotFoundError:
                    return removed
                existing = self._parse_referrers_index(data, tag).manifests
                kept = tuple(d for d in existing if d.digest != referrer)
                if len(kept) == len(existing):
                    return removed
                if refused is not None and refused == etag:
                    conditional = False  # 412 for an unchanged index: conditions are broken
                refused = None
                if not kept:
                    self.delete_manifest(found.digest)
                else:
                    index = Index(manifests=kept)
                    conditions = {"If-Match": etag} if conditional and etag is not None else {}
                    try:
                        self._put_manifest(
                            Descriptor(mt.OCI_INDEX, index.digest, len(index.raw)),
                            index.raw,
                            tag,
                            conditions=conditions,
                        )
                    except _PreconditionFailed:
                        refused = etag
                        continue
                removed = True
                after, _, _ = self._read_referrers_index(tag)
                if all(d.digest != referrer for d in after):
                    return True
                _log.debug("%s listed %s again after our write to %s", tag, referrer, self.name)
        raise RegistryError(
            f"the referrers index of {subject} in {self.name} (tag {tag!r}) kept listing "
            f"{referrer} under concurrent writers after {REFERRERS_UPDATE_ATTEMPTS} attempts",
            hint="other processes are signing the same model; retry when they are done",
        )

    def _read_referrers_index(self, tag: str) -> tuple[tuple[Descriptor, ...], str | None, bool]:
        """The entries of the fallback index, its strong ETag, and whether the tag exists."""
        try:
            _, data, etag = self._fetch_manifest_etag(tag)
        except NotFoundError:
            return (), None, False
        return self._parse_referrers_index(data, tag).manifests, etag, True

    def _referrers_backoff(self, failures: int) -> None:
        """A short jittered pause before the next attempt at the fallback index."""
        policy = self.client.retry
        ceiling = min(_REFERRERS_BACKOFF_MAX, _REFERRERS_BACKOFF_BASE * 2.0 ** (failures - 1))
        pause = ceiling * policy.jitter()
        if pause > 0:
            policy.sleep(pause)

    def tag(self, desc: Descriptor, tag: str) -> None:
        """Point ``tag`` at the manifest ``desc`` (fetched by digest, PUT under the tag)."""
        self._check_reference(tag)
        fetched, data = self.fetch_manifest(str(desc.digest))
        media_type = desc.media_type if self._is_manifest(desc) else fetched.media_type
        self._put_manifest(Descriptor(media_type, fetched.digest, fetched.size), data, tag)

    def delete_manifest(self, digest: Digest | str) -> None:
        """DELETE a manifest by digest (registries may refuse: UnsupportedError)."""
        text = str(digest)
        if self._check_reference(text) is None:
            raise InvalidInputError(
                f"delete_manifest takes a digest, got {text!r}",
                hint="resolve the tag first; deleting by tag is not portable",
            )
        response = self.client.request(
            "DELETE",
            self._path("manifests", text),
            scopes=(repository_scope(self.repository, "delete"), *self._push),
            what=f"delete manifest {text} from {self.name}",
            ok=(200, 202, 204),
            repository=self.repository,
            subject=f"manifest {text}",
        )
        response.close()

    def delete_tag(self, tag: str) -> bool:
        """DELETE a tag alone (distribution-spec 1.1: the manifest stays). False when
        the registry refuses (Distribution 2.8 cannot untag: 400; 405 with deletes
        off): the caller decides whether deleting the manifest by digest will do."""
        if self._check_reference(tag) is not None:
            raise InvalidInputError(f"delete_tag takes a tag, got {tag!r}")
        response = self.client.request(
            "DELETE",
            self._path("manifests", tag),
            scopes=(repository_scope(self.repository, "delete"), *self._push),
            what=f"delete tag {tag!r} from {self.name}",
            ok=(200, 202, 204, 400, 405),
            repository=self.repository,
            subject=f"tag {tag!r}",
        )
        response.close()
        return response.status_code in (200, 202, 204)


def response_url(target: RegistryTarget, location: str) -> httpx.URL:
    """An upload ``Location`` (relative or absolute) as an absolute URL."""
    return httpx.URL(target.client.base_url).join(location)
