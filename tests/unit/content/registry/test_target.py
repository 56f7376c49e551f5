"""RegistryTarget against the fake registry: reads, writes, uploads, referrers, tags."""

from __future__ import annotations

import httpx
import pytest

from modelreg.content.base import BlobSource, bytes_source
from modelreg.content.registry import RegistryTarget, referrers_tag
from modelreg.content.registry import uploads as uploads_module
from modelreg.errors import (
    FormatError,
    IntegrityError,
    InvalidInputError,
    InvalidReferenceError,
    NotFoundError,
    RegistryError,
    SizeLimitError,
)
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import Index, Manifest, empty_config
from tests.unit.content.registry.conftest import MakeClient
from tests.unit.content.registry.fakes import (
    CountingSource,
    FailingStream,
    FakeRegistry,
    TrackingStream,
    error_body,
    referrer_manifest,
    round_trip_in_threads,
    sha256,
)

REPO = "team/llm"
DATA = bytes(range(256)) * 4096  # 1 MiB


def blob(data: bytes = DATA) -> Descriptor:
    return Descriptor.for_bytes("application/octet-stream", data)


@pytest.fixture
def repo(make_client: MakeClient) -> RegistryTarget:
    return make_client().repository(REPO)


# ======================================================================= reads


def test_fetch_verifies_and_counts(fake: FakeRegistry, repo: RegistryTarget) -> None:
    fake.put_blob(REPO, DATA)
    with repo.fetch(blob()) as reader:
        assert reader.read() == DATA
        assert reader.verified
    assert repo.client.stats.bytes_received == len(DATA)


def test_fetch_tampered_blob_fails(fake: FakeRegistry, repo: RegistryTarget) -> None:
    desc = blob()
    fake.blobs[REPO] = {str(desc.digest): DATA[:-1] + b"X"}
    with repo.fetch(desc) as reader, pytest.raises(IntegrityError, match="hashes to"):
        reader.read()


def test_fetch_wrong_length_refused_before_reading(
    fake: FakeRegistry, repo: RegistryTarget
) -> None:
    desc = blob()
    stream = TrackingStream(DATA + b"extra")
    fake.interceptors.append(
        lambda r: httpx.Response(200, headers={"Content-Length": str(len(DATA) + 5)}, stream=stream)
    )
    with pytest.raises(IntegrityError, match="serves blob"):
        repo.fetch(desc)
    assert not stream.iterated and stream.closed


def test_fetch_cut_mid_stream_resumes_with_range(fake: FakeRegistry, repo: RegistryTarget) -> None:
    desc = blob()
    fake.put_blob(REPO, DATA)
    cut = 300_000
    stream = FailingStream(DATA[:cut], httpx.RemoteProtocolError("peer closed connection"))

    def cut_first(request: httpx.Request) -> httpx.Response | None:
        if request.method == "GET" and "range" not in request.headers and not stream.iterated:
            return httpx.Response(200, headers={"Content-Length": str(len(DATA))}, stream=stream)
        return None

    fake.interceptors.append(cut_first)
    with repo.fetch(desc) as reader:
        assert reader.read() == DATA
    ranged = [r for r in fake.requests if "range" in r.headers]
    assert [r.headers["range"] for r in ranged] == [f"bytes={cut}-{len(DATA) - 1}"]
    assert stream.closed
    assert repo.client.supports_range is True


def test_fetch_follows_cross_host_redirect_without_authorization(
    fake: FakeRegistry, make_client: MakeClient
) -> None:
    fake.auth = "basic"
    fake.redirect_blobs = "storage.test"
    fake.put_blob(REPO, DATA)
    repo = make_client(login=True).repository(REPO)
    with repo.fetch(blob()) as reader:
        assert reader.read() == DATA
    [storage] = fake.storage_requests
    assert "authorization" not in storage.headers
    registry_gets = [r for r in fake.requests if r.method == "GET"]
    assert registry_gets[-1].headers["authorization"].startswith("Basic ")


def test_fetch_range_206(fake: FakeRegistry, repo: RegistryTarget) -> None:
    fake.put_blob(REPO, DATA)
    assert repo.fetch_range(blob(), 1000, 500) == DATA[1000:1500]
    assert repo.client.supports_range is True
    assert repo.fetch_range(blob(), 0, 0) == b""
    with pytest.raises(InvalidInputError):
        repo.fetch_range(blob(), len(DATA) - 1, 2)


def test_fetch_range_when_registry_ignores_range(fake: FakeRegistry, repo: RegistryTarget) -> None:
    fake.ignore_range = True
    fake.put_blob(REPO, DATA)
    assert repo.fetch_range(blob(), 700_000, 1234) == DATA[700_000:701_234]
    assert repo.client.supports_range is False


def test_fetch_range_wrong_content_range(fake: FakeRegistry, repo: RegistryTarget) -> None:
    fake.interceptors.append(
        lambda r: httpx.Response(206, headers={"Content-Range": "bytes 0-9/100"}, content=b"x" * 10)
    )
    with pytest.raises(RegistryError, match="Content-Range"):
        repo.fetch_range(blob(), 10, 10)


def test_exists(fake: FakeRegistry, repo: RegistryTarget) -> None:
    fake.put_blob(REPO, DATA)
    assert repo.exists(blob())
    assert not repo.exists(blob(b"other"))
    manifest = Manifest(config=empty_config(), layers=())
    assert not repo.exists(manifest.descriptor())
    fake.put_manifest(REPO, manifest.raw, mt.OCI_MANIFEST)
    assert repo.exists(manifest.descriptor())
    assert fake.count("HEAD", "/manifests/sha256:") == 2


def _manifest(fake: FakeRegistry, tag: str = "v1") -> tuple[Descriptor, bytes]:
    manifest = Manifest(config=empty_config(), layers=(blob(),), artifact_type=mt.MODEL_ARTIFACT)
    fake.put_manifest(REPO, manifest.raw, mt.OCI_MANIFEST, tag)
    return manifest.descriptor(), manifest.raw


def test_resolve_by_head(fake: FakeRegistry, repo: RegistryTarget) -> None:
    desc, raw = _manifest(fake)
    resolved = repo.resolve("v1")
    assert (resolved.digest, resolved.size, resolved.media_type) == (
        desc.digest,
        len(raw),
        mt.OCI_MANIFEST,
    )
    assert fake.count("GET", "/manifests/") == 0
    head = next(r for r in fake.requests if r.method == "HEAD")
    assert mt.OCI_INDEX in head.headers["accept"]
    assert mt.DOCKER_MANIFEST_LIST in head.headers["accept"]


def test_resolve_falls_back_to_get_when_head_has_no_digest(
    fake: FakeRegistry, repo: RegistryTarget
) -> None:
    desc, _ = _manifest(fake)
    fake.interceptors.append(
        lambda r: (
            httpx.Response(200, headers={"Content-Type": mt.OCI_MANIFEST})
            if r.method == "HEAD"
            else None
        )
    )
    assert repo.resolve("v1").digest == desc.digest
    assert fake.count("GET", "/manifests/v1") == 1


def test_resolve_missing_tag(fake: FakeRegistry, repo: RegistryTarget) -> None:
    _manifest(fake)
    with pytest.raises(NotFoundError) as info:
        repo.resolve("nope")
    assert "'nope'" in info.value.message and f"registry.test/{REPO}" in info.value.message
    assert f"modelreg tags registry.test/{REPO}" in (info.value.hint or "")
    with pytest.raises(InvalidReferenceError):
        repo.resolve("bad tag!")


def test_fetch_manifest_by_digest_must_hash_to_it(fake: FakeRegistry, repo: RegistryTarget) -> None:
    desc, raw = _manifest(fake)
    got_desc, got = repo.fetch_manifest(str(desc.digest))
    assert got == raw and got_desc.digest == desc.digest
    fake.manifests[REPO][str(desc.digest)] = (mt.OCI_MANIFEST, raw + b" ")
    with pytest.raises(IntegrityError, match="not the digest it was fetched by"):
        repo.fetch_manifest(str(desc.digest))


def test_fetch_manifest_by_tag_checks_docker_content_digest(
    fake: FakeRegistry, repo: RegistryTarget
) -> None:
    _, raw = _manifest(fake)
    fake.interceptors.append(
        lambda r: httpx.Response(
            200,
            headers={"Docker-Content-Digest": sha256(b"other"), "Content-Type": mt.OCI_MANIFEST},
            content=raw,
        )
    )
    with pytest.raises(IntegrityError, match="but the registry says"):
        repo.fetch_manifest("v1")


def test_oversized_manifest_refused_before_read(fake: FakeRegistry, repo: RegistryTarget) -> None:
    stream = TrackingStream(b"{}")
    fake.interceptors.append(
        lambda r: httpx.Response(
            200, headers={"Content-Length": str(5 * 1024 * 1024)}, stream=stream
        )
    )
    with pytest.raises(SizeLimitError, match="declares 5242880 bytes"):
        repo.fetch_manifest("v1")
    assert not stream.iterated and stream.closed


def test_manifest_without_length_stops_at_cap(fake: FakeRegistry, repo: RegistryTarget) -> None:
    chunks_read = []

    class Endless(httpx.SyncByteStream):
        def __iter__(self):  # type: ignore[no-untyped-def]
            while True:
                chunks_read.append(1)
                yield b"x" * 65536

    fake.interceptors.append(lambda r: httpx.Response(200, stream=Endless()))
    with pytest.raises(SizeLimitError, match="over the 4194304-byte limit"):
        repo.fetch_manifest("v1")
    assert len(chunks_read) == 4 * 16 + 1


# ======================================================================= uploads


def test_push_small_blob_monolithic(fake: FakeRegistry, repo: RegistryTarget) -> None:
    result = repo.push(blob(), bytes_source(DATA))
    assert result.sent == len(DATA) and not result.existed
    assert fake.blobs[REPO][str(blob().digest)] == DATA
    assert [r.method for r in fake.requests] == ["HEAD", "POST", "PUT"]
    put = fake.requests[-1]
    assert put.url.params["_state"] == "s1" and put.url.params["digest"] == str(blob().digest)
    assert put.headers["content-length"] == str(len(DATA))
    assert repo.push(blob(), bytes_source(DATA)).existed
    assert repo.client.stats.bytes_sent == len(DATA)


def test_push_large_blob_one_patch_then_put(
    fake: FakeRegistry, repo: RegistryTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uploads_module, "MONOLITHIC_MAX", 100_000)
    repo.push(blob(), bytes_source(DATA))
    patch, put = [r for r in fake.requests if r.method in ("PATCH", "PUT")]
    assert patch.headers["content-range"] == f"0-{len(DATA) - 1}"
    assert patch.headers["content-length"] == str(len(DATA))
    assert "transfer-encoding" not in patch.headers
    assert put.url.params["_state"] == "s2"  # the Location of the PATCH answer
    assert put.headers["content-length"] == "0"


def test_push_in_chunks_follows_last_location(fake: FakeRegistry, make_client: MakeClient) -> None:
    repo = make_client(upload_chunk_size=300_000).repository(REPO)
    repo.push(blob(), bytes_source(DATA))
    patches = [r for r in fake.requests if r.method == "PATCH"]
    assert [p.headers["content-range"] for p in patches] == [
        "0-299999",
        "300000-599999",
        "600000-899999",
        f"900000-{len(DATA) - 1}",
    ]
    assert [p.url.params["_state"] for p in patches] == ["s1", "s2", "s3", "s4"]
    assert fake.blobs[REPO][str(blob().digest)] == DATA


def test_upload_cut_mid_patch_resumes_from_reported_range(
    fake: FakeRegistry, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uploads_module, "MONOLITHIC_MAX", 100_000)
    received = 400_000

    def cut_first_patch(request: httpx.Request) -> httpx.Response | None:
        if request.method != "PATCH" or fake.count("PATCH", "") > 1:
            return None
        upload = fake.uploads[request.url.path.rsplit("/", 1)[1]]
        for chunk in request.stream:  # type: ignore[union-attr]
            upload.data += chunk
            if len(upload.data) >= received:
                del upload.data[received:]
                raise httpx.WriteError("connection reset by peer")
        return None

    fake.interceptors.append(cut_first_patch)
    source = CountingSource(DATA)
    client = make_client()
    result = client.repository(REPO).push(blob(), source)
    assert fake.blobs[REPO][str(blob().digest)] == DATA
    assert source.opened == [0, received]
    status = [r for r in fake.requests if r.method == "GET" and "/uploads/" in r.url.path]
    assert len(status) == 1
    second = [r for r in fake.requests if r.method == "PATCH"][1]
    assert second.headers["content-range"] == f"{received}-{len(DATA) - 1}"
    # the status answer's Location (s2), not the one the cut PATCH was sent to (s1)
    assert (status[0].url.params["_state"], second.url.params["_state"]) == ("s1", "s2")
    assert result.sent == client.stats.bytes_sent >= len(DATA)


def test_upload_5xx_mid_patch_resumes(fake: FakeRegistry, make_client: MakeClient) -> None:
    answered = {"n": 0}

    def fail_second_chunk(request: httpx.Request) -> httpx.Response | None:
        if request.method == "PATCH":
            answered["n"] += 1
            if answered["n"] == 2:
                request.read()
                return httpx.Response(503)
        return None

    fake.interceptors.append(fail_second_chunk)
    source = CountingSource(DATA)
    make_client(upload_chunk_size=400_000).repository(REPO).push(blob(), source)
    assert source.opened == [0, 400_000, 400_000, 800_000]
    assert fake.blobs[REPO][str(blob().digest)] == DATA


def test_source_failure_resumes_by_reopening(fake: FakeRegistry, make_client: MakeClient) -> None:
    source = CountingSource(DATA, fail_at=500_000)
    make_client(upload_chunk_size=250_000).repository(REPO).push(blob(), source)
    assert source.opened == [0, 250_000, 500_000, 500_000, 750_000, 1_000_000]
    assert fake.blobs[REPO][str(blob().digest)] == DATA


def test_lost_session_restarts_from_zero(
    fake: FakeRegistry, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uploads_module, "MONOLITHIC_MAX", 100_000)

    def cut_and_forget(request: httpx.Request) -> httpx.Response | None:
        if request.method == "PATCH" and fake.count("POST", "/uploads/") == 1:
            fake.uploads.clear()
            raise httpx.RemoteProtocolError("server disconnected")
        return None

    fake.interceptors.append(cut_and_forget)
    source = CountingSource(DATA)
    make_client().repository(REPO).push(blob(), source)
    assert fake.count("POST", "/uploads/") == 2
    assert source.opened == [0, 0]
    assert fake.blobs[REPO][str(blob().digest)] == DATA


def test_lost_answer_to_final_put_is_success(fake: FakeRegistry, repo: RegistryTarget) -> None:
    original = fake._upload

    def lose_answer(request: httpx.Request) -> httpx.Response | None:
        if request.method == "PUT" and "digest" in request.url.params:
            original(request, REPO, request.url.path.rsplit("/", 1)[1])
            raise httpx.ReadError("connection reset")
        return None

    fake.interceptors.append(lose_answer)
    assert repo.push(blob(), bytes_source(DATA)).sent == len(DATA)
    assert fake.count("POST", "/uploads/") == 1


def test_digest_invalid_is_integrity_error_and_not_retried(
    fake: FakeRegistry, repo: RegistryTarget
) -> None:
    wrong = Descriptor("application/octet-stream", Digest.from_bytes(b"other"), len(DATA))
    with pytest.raises(IntegrityError, match="does not match its digest"):
        repo.push(wrong, bytes_source(DATA))
    assert fake.count("PUT", "/uploads/") == 1
    assert fake.count("DELETE", "/uploads/") == 1
    assert fake.uploads == {}


def test_short_source_is_integrity_error(fake: FakeRegistry, repo: RegistryTarget) -> None:
    desc = blob()
    with pytest.raises(IntegrityError, match="ended at byte"):
        repo.push(desc, bytes_source(DATA[:1000]))
    assert str(desc.digest) not in fake.blobs.get(REPO, {})


def test_upload_gives_up_after_bounded_attempts(
    fake: FakeRegistry, make_client: MakeClient
) -> None:
    def always_cut(request: httpx.Request) -> httpx.Response | None:
        if request.method == "PUT":
            raise httpx.WriteError("broken pipe")
        return None

    fake.interceptors.append(always_cut)
    with pytest.raises(Exception, match="failed after 5 attempts") as info:
        make_client().repository(REPO).push(blob(), bytes_source(DATA))
    assert info.type.__name__ == "NetworkError"
    assert fake.count("PUT", "/uploads/") == 5


def test_mount(fake: FakeRegistry, repo: RegistryTarget) -> None:
    fake.put_blob("base/model", DATA)
    assert repo.mount(blob(), "base/model")
    assert fake.blobs[REPO][str(blob().digest)] == DATA
    assert not repo.mount(blob(b"missing"), "base/model")
    assert fake.count("DELETE", "/uploads/") == 1
    assert fake.uploads == {}


def test_mount_asks_for_both_scopes(fake: FakeRegistry, make_client: MakeClient) -> None:
    fake.auth = "bearer"
    fake.put_blob("base/model", DATA)
    assert make_client(login=True).repository(REPO).mount(blob(), "base/model")
    assert fake.token_requests[-1].url.params.get_list("scope") == [
        "repository:base/model:pull",
        f"repository:{REPO}:pull,push",
    ]


# ======================================================================= manifests


def test_push_manifest_checks_bytes_and_answer(fake: FakeRegistry, repo: RegistryTarget) -> None:
    manifest = Manifest(config=empty_config(), layers=())
    desc = manifest.descriptor()
    with pytest.raises(IntegrityError):
        repo.push_manifest(desc, manifest.raw + b" ")
    repo.push_manifest(desc, manifest.raw, "v1")
    put = next(r for r in fake.requests if r.method == "PUT")
    assert put.headers["content-type"] == mt.OCI_MANIFEST
    assert put.url.path.endswith("/manifests/v1")
    fake.interceptors.append(
        lambda r: httpx.Response(201, headers={"Docker-Content-Digest": sha256(b"x")})
    )
    with pytest.raises(IntegrityError, match="under sha256"):
        repo.push_manifest(desc, manifest.raw, "v2")


def test_push_manifest_too_large(fake: FakeRegistry, repo: RegistryTarget) -> None:
    manifest = Manifest(
        config=empty_config(), layers=(), annotations={"pad": "x" * (4 * 1024 * 1024)}
    )
    with pytest.raises(SizeLimitError, match="413"):
        repo.push_manifest(manifest.descriptor(), manifest.raw)


def test_referrers_fallback_index_maintained(fake: FakeRegistry, repo: RegistryTarget) -> None:
    subject, _ = _manifest(fake)
    sig = referrer_manifest(subject, "application/vnd.test.sig", "one")
    att = referrer_manifest(subject, "application/vnd.test.att", "two")
    repo.push_manifest(sig.descriptor(), sig.raw)
    repo.push_manifest(att.descriptor(), att.raw)
    repo.push_manifest(sig.descriptor(), sig.raw)  # again: no duplicate
    tag = referrers_tag(subject.digest)
    assert tag == f"sha256-{subject.digest.hex}"
    index = Index.parse(fake.manifests[REPO][fake.tags[REPO][tag]][1])
    assert [d.digest for d in index.manifests] == [sig.digest, att.digest]
    assert index.manifests[0].artifact_type == "application/vnd.test.sig"
    assert index.manifests[0].annotations == {"note": "one"}
    found = repo.referrers(subject)
    assert [d.digest for d in found] == [sig.digest, att.digest]
    assert [d.digest for d in repo.referrers(subject, "application/vnd.test.att")] == [att.digest]
    assert fake.count("GET", "/referrers/") == 2  # tried the API first each time


def test_referrers_api_used_when_present(fake: FakeRegistry, repo: RegistryTarget) -> None:
    fake.referrers_api = True
    fake.oci_subject = True
    subject, _ = _manifest(fake)
    sig = referrer_manifest(subject, "application/vnd.test.sig", "one")
    att = referrer_manifest(subject, "application/vnd.test.att", "two")
    repo.push_manifest(sig.descriptor(), sig.raw)
    repo.push_manifest(att.descriptor(), att.raw)
    assert referrers_tag(subject.digest) not in fake.tags.get(REPO, {})  # OCI-Subject honoured
    assert {d.digest for d in repo.referrers(subject)} == {sig.digest, att.digest}
    [only] = repo.referrers(subject, "application/vnd.test.sig")
    assert only.digest == sig.digest and only.annotations == {"note": "one"}
    last = [r for r in fake.requests if "/referrers/" in r.url.path][-1]
    assert last.url.params["artifactType"] == "application/vnd.test.sig"
    fake.referrers_filter = False  # the server ignores the filter: we filter
    assert [d.digest for d in repo.referrers(subject, "application/vnd.test.att")] == [att.digest]


def test_referrers_api_pagination_and_cap(fake: FakeRegistry, repo: RegistryTarget) -> None:
    subject, _ = _manifest(fake)
    entries = [
        {"mediaType": mt.OCI_MANIFEST, "digest": sha256(str(i).encode()), "size": 10}
        for i in range(6)
    ]

    def pages(request: httpx.Request) -> httpx.Response | None:
        if "/referrers/" not in request.url.path:
            return None
        page = int(request.url.params.get("page", "0"))
        headers = {"Content-Type": mt.OCI_INDEX}
        if page < 2:
            headers["Link"] = f'<{request.url.path}?page={page + 1}>; rel="next"'
        body = {"schemaVersion": 2, "manifests": entries[page * 2 : page * 2 + 2]}
        return httpx.Response(200, headers=headers, json=body)

    fake.interceptors.append(pages)
    assert len(repo.referrers(subject)) == 6
    from modelreg.content.registry import target as target_module

    original = target_module.MAX_REFERRERS
    target_module.MAX_REFERRERS = 3
    try:
        with pytest.raises(SizeLimitError, match="more than 3 referrers"):
            repo.referrers(subject)
    finally:
        target_module.MAX_REFERRERS = original


def test_referrers_fallback_tag_holding_something_else(
    fake: FakeRegistry, repo: RegistryTarget
) -> None:
    subject, _ = _manifest(fake)
    other = Manifest(config=empty_config(), layers=())
    fake.put_manifest(REPO, other.raw, mt.OCI_MANIFEST, referrers_tag(subject.digest))
    with pytest.raises(FormatError, match="should hold the referrers index"):
        repo.referrers(subject)
    assert repo.referrers(blob()) == []


def test_tag_and_delete(fake: FakeRegistry, repo: RegistryTarget) -> None:
    desc, raw = _manifest(fake)
    repo.tag(desc, "stable")
    assert fake.tags[REPO]["stable"] == str(desc.digest)
    put = [r for r in fake.requests if r.method == "PUT"][-1]
    assert put.content == raw
    repo.delete_manifest(desc.digest)
    with pytest.raises(NotFoundError):
        repo.fetch_manifest(str(desc.digest))
    with pytest.raises(InvalidInputError):
        repo.delete_manifest("v1")


# ======================================================================= tags


def test_tags_paginate_over_link_pages(fake: FakeRegistry, repo: RegistryTarget) -> None:
    fake.page_size = 2
    fake.tags[REPO] = {f"v{i}": sha256(b"x") for i in range(7)}
    assert list(repo.tags()) == [f"v{i}" for i in range(7)]
    lists = [r for r in fake.requests if r.url.path.endswith("/tags/list")]
    assert len(lists) == 4
    assert lists[0].url.params["n"] == "1000"
    assert lists[1].url.params["last"] == "v1"


def test_tags_link_to_other_host_refused(fake: FakeRegistry, repo: RegistryTarget) -> None:
    fake.interceptors.append(
        lambda r: httpx.Response(
            200,
            headers={"Link": '<https://evil.test/v2/x/tags/list?last=a>; rel="next"'},
            json={"tags": ["a"]},
        )
    )
    with pytest.raises(RegistryError, match="another host"):
        list(repo.tags())


def test_tags_of_unknown_repository(repo: RegistryTarget) -> None:
    with pytest.raises(NotFoundError, match=r"repository registry\.test/team/llm not found"):
        list(repo.tags())


def test_error_body_mapping_through_target(fake: FakeRegistry, repo: RegistryTarget) -> None:
    fake.interceptors.append(
        lambda r: httpx.Response(403, content=error_body("DENIED", "access to team/llm denied"))
    )
    with pytest.raises(Exception, match="DENIED: access to team/llm denied") as info:
        repo.resolve("v1")
    assert info.type.__name__ == "PermissionDeniedError"


# ======================================================================= threads


def test_concurrent_use_from_threads(fake: FakeRegistry, make_client: MakeClient) -> None:
    fake.auth = "bearer"
    client = make_client(login=True)
    repo = client.repository(REPO)
    datas = [bytes([i]) * (50_000 + i) for i in range(16)]
    round_trip_in_threads(client, repo, datas, blob)
    assert len(fake.token_requests) <= 2 * len(datas)


def test_counting_source_is_a_blob_source() -> None:
    source: BlobSource = CountingSource(b"x")
    with source(0) as stream:
        assert stream.read() == b"x"
