"""An in-memory OCI registry behind ``httpx.MockTransport``, with fault injection.

It speaks enough of the distribution spec for the client's corner cases: blob
HEAD/GET (with ``Range``), uploads (POST/PATCH/PUT/status GET/DELETE, with a
``_state`` that changes at every step so following the *last* Location is
checked), mounts, manifests (HEAD/GET/PUT/DELETE), tag listing with ``Link``
pagination, the referrers API (optional), Basic and Bearer auth with a token
service on another host, and redirects of blob GETs to object storage.

``interceptors`` run first: a callable returning a response (or raising an
httpx exception) replaces the normal handling of that request.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import httpx

from modelreg.content.base import bytes_source
from modelreg.content.registry import RegistryClient, RegistryTarget
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import Manifest, empty_config

Interceptor = Callable[[httpx.Request], "httpx.Response | None"]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


class CountingSource:
    """A BlobSource that records the offsets it was opened at and can fail once: the
    first read that would cross ``fail_at`` returns the bytes up to it, the next raises
    ``EIO`` (a disk or network read failing mid-upload)."""

    def __init__(self, data: bytes, fail_at: int | None = None) -> None:
        self.data = data
        self.fail_at = fail_at
        self.opened: list[int] = []

    def __call__(self, offset: int) -> BinaryIO:
        self.opened.append(offset)
        source = self

        class Stream(io.BytesIO):
            def read(self, n: int | None = -1) -> bytes:
                limit = source.fail_at
                position = self.tell()
                if limit is not None and n is not None and n > 0 and position + n > limit:
                    if position < limit:
                        return super().read(limit - position)
                    source.fail_at = None
                    raise OSError(5, "Input/output error (simulated)")
                return super().read(n)

        stream = Stream(self.data)
        stream.seek(offset)
        return stream


def round_trip_in_threads(
    client: RegistryClient,
    repo: RegistryTarget,
    blobs: list[bytes],
    describe: Callable[[bytes], Descriptor],
) -> None:
    """Pushes each blob and reads it back, each from a thread of its own: no thread
    fails, and the client's counters add up to exactly the bytes moved each way."""
    errors: list[BaseException] = []

    def work(data: bytes) -> None:
        try:
            desc = describe(data)
            repo.push(desc, bytes_source(data))
            with repo.fetch(desc) as reader:
                assert reader.read() == data
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(b,)) for b in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    total = sum(len(b) for b in blobs)
    assert client.stats.bytes_sent == total and client.stats.bytes_received == total


def referrer_manifest(subject: Descriptor, artifact_type: str, note: str) -> Manifest:
    """An empty manifest of ``artifact_type`` referring to ``subject``, told apart from
    its siblings by a ``note`` annotation."""
    return Manifest(
        config=empty_config(),
        layers=(),
        artifact_type=artifact_type,
        subject=subject,
        annotations={"note": note},
    )


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def error_body(code: str, message: str = "", detail: object = None) -> bytes:
    entry: dict[str, object] = {"code": code, "message": message or code.lower()}
    if detail is not None:
        entry["detail"] = detail
    return json.dumps({"errors": [entry]}).encode()


class FailingStream(httpx.SyncByteStream):
    """Yields ``data`` in blocks, then raises ``exc`` instead of finishing."""

    def __init__(self, data: bytes, exc: Exception, block: int = 65536) -> None:
        self.data = data
        self.exc = exc
        self.block = block
        self.iterated = False
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        self.iterated = True
        for i in range(0, len(self.data), self.block):
            yield self.data[i : i + self.block]
        raise self.exc

    def close(self) -> None:
        self.closed = True


class TrackingStream(httpx.SyncByteStream):
    """A body that records whether anyone read it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.iterated = False
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        self.iterated = True
        yield self.data

    def close(self) -> None:
        self.closed = True


@dataclass
class Upload:
    repo: str
    data: bytearray = field(default_factory=bytearray)
    step: int = 0


@dataclass
class FakeRegistry:
    host: str = "registry.test"
    auth: str | None = None  # None | "basic" | "bearer"
    username: str = "alice"
    password: str = "pa55-w0rd-SECRET"
    identity_token: str = "refresh-SECRET-token"
    token_host: str = "auth.test"
    token_expires_in: int | None = 300
    referrers_api: bool = False
    referrers_filter: bool = True
    page_size: int | None = None
    ignore_range: bool = False
    redirect_blobs: str | None = None  # host of the object storage
    oci_subject: bool = False
    scheme: str = "https"

    blobs: dict[str, dict[str, bytes]] = field(default_factory=dict)
    manifests: dict[str, dict[str, tuple[str, bytes]]] = field(default_factory=dict)
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    token_requests: list[httpx.Request] = field(default_factory=list)
    storage_requests: list[httpx.Request] = field(default_factory=list)
    interceptors: list[Interceptor] = field(default_factory=list)
    issued_tokens: dict[str, tuple[str, ...]] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    _ids: Iterator[int] = field(default_factory=itertools.count)

    # ------------------------------------------------------------------ helpers
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def put_blob(self, repo: str, data: bytes) -> str:
        digest = sha256(data)
        self.blobs.setdefault(repo, {})[digest] = data
        return digest

    def put_manifest(self, repo: str, data: bytes, media_type: str, tag: str | None = None) -> str:
        digest = sha256(data)
        self.manifests.setdefault(repo, {})[digest] = (media_type, data)
        if tag:
            self.tags.setdefault(repo, {})[tag] = digest
        return digest

    def count(self, method: str, pattern: str) -> int:
        return sum(
            1 for r in self.requests if r.method == method and re.search(pattern, r.url.path)
        )

    # ------------------------------------------------------------------ dispatch
    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == self.token_host:
            self.token_requests.append(request)
            return self._token(request)
        if self.redirect_blobs and request.url.host == self.redirect_blobs:
            self.storage_requests.append(request)
            key = request.url.params.get("key", "")
            for repo_blobs in self.blobs.values():
                if key in repo_blobs:
                    return self._bytes(request, repo_blobs[key])
            return httpx.Response(404)
        self.requests.append(request)
        for interceptor in list(self.interceptors):
            response = interceptor(request)
            if response is not None:
                return response
        denied = self._check_auth(request)
        if denied is not None:
            return denied
        return self._route(request)

    # ------------------------------------------------------------------ auth
    def scopes_needed(self, request: httpx.Request) -> tuple[str, ...]:
        match = re.match(r"^/v2/(.+?)/(blobs|manifests|tags|referrers)/", request.url.path)
        if not match:
            return ()
        repo = match.group(1)
        actions = "pull" if request.method in ("GET", "HEAD") else "pull,push"
        scopes = [f"repository:{repo}:{actions}"]
        source = request.url.params.get("from")
        if source:
            scopes.append(f"repository:{source}:pull")
        return tuple(scopes)

    def _check_auth(self, request: httpx.Request) -> httpx.Response | None:
        if self.auth is None:
            return None
        header = request.headers.get("authorization", "")
        if self.auth == "basic":
            expected = (
                "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            )
            if header == expected:
                return None
            return httpx.Response(
                401,
                headers={"WWW-Authenticate": 'Basic realm="fake"'},
                content=error_body("UNAUTHORIZED", "authentication required"),
            )
        needed = self.scopes_needed(request)
        if header.startswith("Bearer "):
            token = header[len("Bearer ") :]
            granted = self.issued_tokens.get(token)
            if (
                granted is not None
                and token not in self.revoked
                and all(s in granted or _covered(granted, s) for s in needed)
            ):
                return None
        scope = f',scope="{" ".join(needed)}"' if needed else ""
        return httpx.Response(
            401,
            headers={
                "WWW-Authenticate": (
                    f'Bearer realm="https://{self.token_host}/token",service="{self.host}"{scope}'
                )
            },
            content=error_body("UNAUTHORIZED", "authentication required"),
        )

    def _token(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            form = urllib.parse.parse_qs(request.content.decode())
            if form.get("grant_type") != ["refresh_token"] or form.get("refresh_token") != [
                self.identity_token
            ]:
                return httpx.Response(401, json={"error": "invalid_grant"})
            scopes = tuple(" ".join(form.get("scope", [])).split())
            token = f"tok-{next(self._ids)}"
            self.issued_tokens[token] = scopes
            return httpx.Response(200, json={"access_token": token, "expires_in": 300})
        header = request.headers.get("authorization")
        if header is not None:
            expected = (
                "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            )
            if header != expected:
                return httpx.Response(401, json={"details": "bad credentials"})
            user = self.username
        else:
            user = None
        scopes = tuple(request.url.params.get_list("scope"))
        granted = scopes if user else tuple(s for s in scopes if s.endswith(":pull"))
        token = f"tok-{next(self._ids)}"
        self.issued_tokens[token] = granted
        body: dict[str, object] = {"token": token}
        if self.token_expires_in is not None:
            body["expires_in"] = self.token_expires_in
        return httpx.Response(200, json=body)

    # ------------------------------------------------------------------ routes
    def _route(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v2/":
            return httpx.Response(200, json={})
        m = re.match(r"^/v2/(.+?)/blobs/uploads/([^/]*)$", path)
        if m:
            return self._upload(request, m.group(1), m.group(2))
        m = re.match(r"^/v2/(.+?)/blobs/([^/]+)$", path)
        if m:
            return self._blob(request, m.group(1), m.group(2))
        m = re.match(r"^/v2/(.+?)/manifests/([^/]+)$", path)
        if m:
            return self._manifest(request, m.group(1), m.group(2))
        m = re.match(r"^/v2/(.+?)/tags/list$", path)
        if m:
            return self._tags(request, m.group(1))
        m = re.match(r"^/v2/(.+?)/referrers/([^/]+)$", path)
        if m and self.referrers_api:
            return self._referrers(request, m.group(1), m.group(2))
        return httpx.Response(404, text="404 page not found")

    def _bytes(self, request: httpx.Request, data: bytes) -> httpx.Response:
        headers = {"Docker-Content-Digest": sha256(data), "Content-Length": str(len(data))}
        if request.method == "HEAD":
            return httpx.Response(200, headers=headers)
        rng = request.headers.get("range")
        if rng and not self.ignore_range:
            m = re.match(r"bytes=(\d+)-(\d*)", rng)
            assert m
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(data) - 1
            part = data[start : end + 1]
            return httpx.Response(
                206,
                headers={
                    "Content-Range": f"bytes {start}-{end}/{len(data)}",
                    "Content-Length": str(len(part)),
                },
                content=part,
            )
        return httpx.Response(200, headers=headers, content=data)

    def _blob(self, request: httpx.Request, repo: str, digest: str) -> httpx.Response:
        data = self.blobs.get(repo, {}).get(digest)
        if data is None:
            if repo not in self.blobs and repo not in self.manifests:
                return httpx.Response(
                    404, content=error_body("NAME_UNKNOWN", detail={"name": repo})
                )
            return httpx.Response(404, content=error_body("BLOB_UNKNOWN", detail=digest))
        if request.method == "DELETE":
            del self.blobs[repo][digest]
            return httpx.Response(202)
        if self.redirect_blobs and request.method == "GET":
            return httpx.Response(
                307, headers={"Location": f"https://{self.redirect_blobs}/obj?key={digest}"}
            )
        return self._bytes(request, data)

    def _location(self, uuid: str, upload: Upload) -> str:
        upload.step += 1
        return f"/v2/{upload.repo}/blobs/uploads/{uuid}?_state=s{upload.step}"

    def _upload(self, request: httpx.Request, repo: str, uuid: str) -> httpx.Response:
        if request.method == "POST" and not uuid:
            mount = request.url.params.get("mount")
            source = request.url.params.get("from")
            if mount and source and mount in self.blobs.get(source, {}):
                self.blobs.setdefault(repo, {})[mount] = self.blobs[source][mount]
                return httpx.Response(201, headers={"Location": f"/v2/{repo}/blobs/{mount}"})
            new = f"u{next(self._ids)}"
            upload = Upload(repo)
            self.uploads[new] = upload
            return httpx.Response(
                202,
                headers={"Location": self._location(new, upload), "Range": "0-0"},
            )
        upload = self.uploads.get(uuid)
        if upload is None:
            return httpx.Response(404, content=error_body("BLOB_UPLOAD_UNKNOWN"))
        state = request.url.params.get("_state")
        if state != f"s{upload.step}":
            return httpx.Response(
                400, content=error_body("BLOB_UPLOAD_INVALID", f"stale state {state}")
            )
        if request.method == "DELETE":
            del self.uploads[uuid]
            return httpx.Response(204)
        if request.method == "GET":
            end = max(0, len(upload.data) - 1)
            return httpx.Response(
                204, headers={"Location": self._location(uuid, upload), "Range": f"0-{end}"}
            )
        if request.method == "PATCH":
            content_range = request.headers.get("content-range", "")
            m = re.match(r"^(\d+)-(\d+)$", content_range)
            if m and int(m.group(1)) != len(upload.data):
                return httpx.Response(416, content=error_body("BLOB_UPLOAD_INVALID", "range"))
            for chunk in request.stream:  # type: ignore[union-attr]
                upload.data += chunk
            return httpx.Response(
                202,
                headers={
                    "Location": self._location(uuid, upload),
                    "Range": f"0-{len(upload.data) - 1}",
                },
            )
        if request.method == "PUT":
            for chunk in request.stream:  # type: ignore[union-attr]
                upload.data += chunk
            digest = request.url.params.get("digest")
            data = bytes(upload.data)
            if sha256(data) != digest:
                return httpx.Response(400, content=error_body("DIGEST_INVALID", "digest mismatch"))
            del self.uploads[uuid]
            self.blobs.setdefault(repo, {})[digest] = data
            return httpx.Response(
                201,
                headers={"Location": f"/v2/{repo}/blobs/{digest}", "Docker-Content-Digest": digest},
            )
        return httpx.Response(405)

    def _manifest(self, request: httpx.Request, repo: str, ref: str) -> httpx.Response:
        store = self.manifests.setdefault(repo, {})
        if request.method == "PUT":
            data = request.read()
            if len(data) > 4 * 1024 * 1024:
                return httpx.Response(413, content=error_body("MANIFEST_INVALID", "too big"))
            digest = self.put_manifest(
                repo, data, request.headers["content-type"], None if ":" in ref else ref
            )
            headers = {
                "Docker-Content-Digest": digest,
                "Location": f"/v2/{repo}/manifests/{digest}",
            }
            obj = json.loads(data)
            if self.oci_subject and "subject" in obj:
                headers["OCI-Subject"] = obj["subject"]["digest"]
            return httpx.Response(201, headers=headers)
        digest = ref if ":" in ref else self.tags.get(repo, {}).get(ref)
        entry = store.get(digest) if digest else None
        if entry is None:
            return httpx.Response(404, content=error_body("MANIFEST_UNKNOWN", detail={"tag": ref}))
        if request.method == "DELETE":
            del store[digest]  # type: ignore[arg-type]
            return httpx.Response(202)
        media_type, data = entry
        headers = {
            "Content-Type": media_type,
            "Docker-Content-Digest": digest or "",
            "Content-Length": str(len(data)),
        }
        if request.method == "HEAD":
            return httpx.Response(200, headers=headers)
        return httpx.Response(200, headers=headers, content=data)

    def _tags(self, request: httpx.Request, repo: str) -> httpx.Response:
        if repo not in self.tags:
            return httpx.Response(404, content=error_body("NAME_UNKNOWN", detail={"name": repo}))
        names = sorted(self.tags[repo])
        last = request.url.params.get("last")
        if last:
            names = [n for n in names if n > last]
        size = self.page_size or int(request.url.params.get("n", "1000"))
        page, rest = names[:size], names[size:]
        headers = {}
        if rest:
            headers["Link"] = f'</v2/{repo}/tags/list?last={page[-1]}&n={size}>; rel="next"'
        return httpx.Response(200, headers=headers, json={"name": repo, "tags": page})

    def _referrers(self, request: httpx.Request, repo: str, digest: str) -> httpx.Response:
        found = []
        for candidate, (media_type, data) in self.manifests.get(repo, {}).items():
            obj = json.loads(data)
            subject = obj.get("subject") or {}
            if subject.get("digest") != digest:
                continue
            artifact = obj.get("artifactType") or (obj.get("config") or {}).get("mediaType")
            entry = {"mediaType": media_type, "digest": candidate, "size": len(data)}
            if artifact:
                entry["artifactType"] = artifact
            if obj.get("annotations"):
                entry["annotations"] = obj["annotations"]
            found.append(entry)
        headers = {"Content-Type": OCI_INDEX}
        wanted = request.url.params.get("artifactType")
        if wanted and self.referrers_filter:
            found = [f for f in found if f.get("artifactType") == wanted]
            headers["OCI-Filters-Applied"] = "artifactType"
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": found}
        return httpx.Response(200, headers=headers, json=index)


def _covered(granted: tuple[str, ...], scope: str) -> bool:
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    for item in granted:
        g_kind, _, g_rest = item.partition(":")
        g_name, _, g_actions = g_rest.rpartition(":")
        if (g_kind, g_name) == (kind, name) and set(actions.split(",")) <= set(
            g_actions.split(",")
        ):
            return True
    return False
