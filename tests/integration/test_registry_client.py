"""The registry client against a real CNCF Distribution registry (docker-registry 2.8)."""

from __future__ import annotations

import base64
import hashlib
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from modelreg.content.base import bytes_source, file_source
from modelreg.content.registry import (
    CredentialStore,
    RegistryClient,
    RegistryTarget,
    RetryPolicy,
    StaticCredentials,
    referrers_tag,
)
from modelreg.errors import (
    AuthenticationError,
    IntegrityError,
    NetworkError,
    NotFoundError,
)
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import Index, Manifest, empty_config
from tests.integration.helpers import random_blob
from tests.integration.registry_server import RegistryServer, free_port
from tests.unit.content.registry.fakes import CountingSource, round_trip_in_threads

MiB = 1024 * 1024
FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05)


def unique(prefix: str = "it") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def desc_of(data: bytes, media_type: str = "application/octet-stream") -> Descriptor:
    return Descriptor.for_bytes(media_type, data)


def client_for(server: RegistryServer, **kwargs: object) -> RegistryClient:
    if server.username and "credentials" not in kwargs:
        kwargs["credentials"] = StaticCredentials(
            username=server.username, password=server.password or ""
        )
    if server.ca_file and "ca_file" not in kwargs:
        kwargs["ca_file"] = str(server.ca_file)
    kwargs.setdefault("retry", FAST_RETRY)
    return RegistryClient(server.host, **kwargs)  # type: ignore[arg-type]


def push_model(repo: RegistryTarget, tag: str = "v1") -> tuple[Descriptor, list[bytes]]:
    layers = [random_blob(3 * MiB + 17, seed=1), random_blob(1000, seed=2)]
    descs = []
    for data in layers:
        desc = desc_of(data, mt.model_layer("weight"))
        repo.push(desc, bytes_source(data))
        descs.append(desc)
    repo.push(empty_config(), bytes_source(mt.EMPTY_JSON))
    manifest = Manifest(config=empty_config(), layers=tuple(descs), artifact_type=mt.MODEL_ARTIFACT)
    repo.push_manifest(manifest.descriptor(), manifest.raw, tag)
    return manifest.descriptor(), layers


# ----------------------------------------------------------------------- round trips


def test_round_trip_on_plain_loopback(registry_plain: RegistryServer) -> None:
    with client_for(registry_plain) as client:
        assert client.scheme == "http"  # loopback probe: the server does not speak TLS
        repo = client.repository(unique())
        manifest_desc, layers = push_model(repo)
        resolved = repo.resolve("v1")
        assert (resolved.digest, resolved.size) == (manifest_desc.digest, manifest_desc.size)
        assert repo.resolve(str(manifest_desc.digest)).digest == manifest_desc.digest
        fetched_desc, raw = repo.fetch_manifest("v1")
        assert fetched_desc.digest == manifest_desc.digest
        manifest = Manifest.parse(raw)
        for layer, data in zip(manifest.layers, layers, strict=True):
            assert repo.exists(layer)
            with repo.fetch(layer) as reader:
                assert reader.read() == data
                assert reader.verified
        assert repo.exists(manifest_desc)
        assert not repo.exists(desc_of(b"absent"))
        repo.tag(manifest_desc, "stable")
        assert sorted(repo.tags()) == ["stable", "v1"]
        repo.delete_manifest(manifest_desc.digest)
        with pytest.raises(NotFoundError):
            repo.resolve(str(manifest_desc.digest))


def test_push_is_skipped_when_present_and_mount_across_repositories(
    registry_plain: RegistryServer,
) -> None:
    data = random_blob(2 * MiB, seed=3)
    desc = desc_of(data)
    with client_for(registry_plain) as client:
        source_repo = client.repository(unique("src"))
        first = source_repo.push(desc, bytes_source(data))
        assert first.sent == len(data) and not first.existed
        assert source_repo.push(desc, bytes_source(data)).existed
        destination = client.repository(unique("dst"))
        assert not destination.exists(desc)
        before = client.stats.bytes_sent
        assert destination.mount(desc, source_repo.repository)
        assert destination.exists(desc)
        assert client.stats.bytes_sent == before
        assert not destination.mount(desc_of(b"nowhere"), source_repo.repository)


def test_large_blob_goes_through_patch_and_back(
    registry_plain: RegistryServer, tmp_path: Path
) -> None:
    size = 70 * MiB + 3
    path = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        for i in range(0, size, MiB):
            block = random_blob(min(MiB, size - i), seed=i)
            digest.update(block)
            fh.write(block)
    from modelreg.oci.digest import Digest

    desc = Descriptor("application/octet-stream", Digest("sha256", digest.hexdigest()), size)
    with client_for(registry_plain) as client:
        repo = client.repository(unique())
        assert repo.push(desc, file_source(str(path))).sent == size
        assert client.stats.bytes_sent == size
        check = hashlib.sha256()
        with repo.fetch(desc) as reader:
            buf = bytearray(8 * MiB)
            while n := reader.readinto(buf):
                check.update(memoryview(buf)[:n])
        assert check.hexdigest() == digest.hexdigest()
        assert client.stats.bytes_received == size


def _pushed_blob(client: RegistryClient, data: bytes) -> tuple[RegistryTarget, Descriptor]:
    """``data`` pushed as a blob to a new repository: the repository and its descriptor."""
    repo = client.repository(unique())
    desc = desc_of(data)
    repo.push(desc, bytes_source(data))
    return repo, desc


def test_chunked_upload(registry_plain: RegistryServer) -> None:
    data = random_blob(5 * MiB + 123, seed=4)
    with client_for(registry_plain, upload_chunk_size=MiB) as client:
        repo, desc = _pushed_blob(client, data)
        with repo.fetch(desc) as reader:
            assert reader.read() == data


def test_range_reads(registry_plain: RegistryServer) -> None:
    data = random_blob(3 * MiB, seed=5)
    with client_for(registry_plain) as client:
        repo, desc = _pushed_blob(client, data)
        assert client.supports_range is None
        assert repo.fetch_range(desc, 12345, 100) == data[12345:12445]
        assert client.supports_range is True
        assert repo.fetch_range(desc, MiB, 2 * MiB) == data[MiB:]  # lean path, to the end


def test_tampered_blob_in_storage_is_detected(registry_plain: RegistryServer) -> None:
    data = random_blob(2 * MiB, seed=6)
    with client_for(registry_plain) as client:
        repo, desc = _pushed_blob(client, data)
        stored = (
            registry_plain.root_dir
            / "docker/registry/v2/blobs/sha256"
            / desc.digest.hex[:2]
            / desc.digest.hex
            / "data"
        )
        with open(stored, "r+b") as fh:
            fh.seek(MiB)
            fh.write(b"\x00" * 16)
        with repo.fetch(desc) as reader, pytest.raises(IntegrityError, match="hashes to"):
            reader.read()


def test_referrers_fall_back_to_the_tag_schema(registry_plain: RegistryServer) -> None:
    with client_for(registry_plain) as client:
        repo = client.repository(unique())
        subject, _ = push_model(repo)
        repo.push(empty_config(), bytes_source(mt.EMPTY_JSON))
        signature = Manifest(
            config=empty_config(),
            layers=(),
            artifact_type="application/vnd.dev.sigstore.bundle.v0.3+json",
            subject=subject,
            annotations={"dev.sigstore.bundle.content": "dsse-envelope"},
        )
        attestation = Manifest(
            config=empty_config(),
            layers=(),
            artifact_type="application/vnd.in-toto+json",
            subject=subject,
        )
        repo.push_manifest(signature.descriptor(), signature.raw)
        repo.push_manifest(attestation.descriptor(), attestation.raw)
        found = repo.referrers(subject)
        assert [d.digest for d in found] == [signature.digest, attestation.digest]
        assert found[0].annotations == {"dev.sigstore.bundle.content": "dsse-envelope"}
        only = repo.referrers(subject, "application/vnd.in-toto+json")
        assert [d.digest for d in only] == [attestation.digest]
        _, raw = repo.fetch_manifest(referrers_tag(subject.digest))
        assert len(Index.parse(raw).manifests) == 2
        assert repo.referrers(desc_of(b"no subject here")) == []


def test_missing_things(registry_plain: RegistryServer) -> None:
    with client_for(registry_plain) as client:
        repo = client.repository(unique())
        with pytest.raises(NotFoundError) as info:
            list(repo.tags())
        assert repo.repository in info.value.message
        with pytest.raises(NotFoundError) as info:
            repo.resolve("v9")
        assert "'v9'" in info.value.message
        assert "modelreg tags" in (info.value.hint or "")


# ----------------------------------------------------------------------- uploads that break


def test_upload_cut_between_chunks_resumes_exactly(registry_plain: RegistryServer) -> None:
    data = random_blob(6 * MiB, seed=7)
    source = CountingSource(data, fail_at=4 * MiB)  # the start of the 3rd chunk
    with client_for(registry_plain, upload_chunk_size=2 * MiB) as client:
        repo = client.repository(unique())
        result = repo.push(desc_of(data), source)
        assert source.opened == [0, 2 * MiB, 4 * MiB, 4 * MiB]
        assert result.sent == len(data) == client.stats.bytes_sent
        with repo.fetch(desc_of(data)) as reader:
            assert reader.read() == data


def test_upload_cut_mid_stream_recovers(registry_plain: RegistryServer) -> None:
    # Distribution 2.8 cannot resume a PATCH that was cut after some bytes arrived
    # (its upload state no longer matches): the client starts a new session.
    data = random_blob(80 * MiB, seed=8)
    source = CountingSource(data, fail_at=10 * MiB + 4321)
    with client_for(registry_plain) as client:
        repo = client.repository(unique())
        result = repo.push(desc_of(data), source)
        assert source.opened[0] == 0 and len(source.opened) == 2
        assert result.sent == client.stats.bytes_sent > len(data)
        with repo.fetch(desc_of(data)) as reader:
            assert reader.read() == data


# ----------------------------------------------------------------------- TLS and auth


def test_basic_auth_over_tls(registry_tls_basic: RegistryServer) -> None:
    with client_for(registry_tls_basic) as client:
        assert client.scheme == "https"
        client.ping()
        repo = client.repository(unique())
        manifest_desc, layers = push_model(repo)
        layer = Manifest.parse(repo.fetch_manifest("v1")[1]).layers[0]
        with repo.fetch(layer) as reader:  # lean path over TLS with Basic
            assert reader.read() == layers[0]
        assert repo.resolve("v1").digest == manifest_desc.digest


def test_basic_auth_from_docker_config(
    registry_tls_basic: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = registry_tls_basic.docker_config(tmp_path)
    monkeypatch.setenv("DOCKER_CONFIG", str(config.parent))
    with client_for(registry_tls_basic, credentials=CredentialStore()) as client:
        client.ping()


def test_no_or_wrong_credentials(registry_tls_basic: RegistryServer) -> None:
    with client_for(registry_tls_basic, credentials=None) as client:
        with pytest.raises(AuthenticationError) as info:
            client.ping()
        assert info.value.hint == f"run `modelreg login {registry_tls_basic.host}`"
    wrong = StaticCredentials(username="modelreg", password="not-the-Password")
    with client_for(registry_tls_basic, credentials=wrong) as client:
        with pytest.raises(AuthenticationError) as info:
            client.repository(unique()).resolve("v1")
        assert "check the username and password" in str(info.value)
        assert "not-the-Password" not in str(info.value)


def test_tls_without_the_ca(registry_tls_basic: RegistryServer) -> None:
    with RegistryClient(registry_tls_basic.host, retry=FAST_RETRY) as client:
        with pytest.raises(NetworkError) as info:
            client.ping()
        assert "--ca-file" in (info.value.hint or "")
    warnings: list[str] = []
    with RegistryClient(
        registry_tls_basic.host,
        insecure=True,
        on_warning=warnings.append,
        retry=FAST_RETRY,
        credentials=StaticCredentials(
            username=registry_tls_basic.username or "", password=registry_tls_basic.password or ""
        ),
    ) as client:
        client.ping()
    assert warnings and "--insecure" in warnings[0]


def test_plain_http_against_tls_registry(registry_tls_basic: RegistryServer) -> None:
    with (
        RegistryClient(registry_tls_basic.host, plain_http=True, retry=FAST_RETRY) as client,
        pytest.raises(NetworkError) as info,
    ):
        client.ping()
    assert "drop --plain-http" in (info.value.hint or "")


def test_connection_refused() -> None:
    port = free_port()
    with (
        RegistryClient(f"127.0.0.1:{port}", plain_http=True, retry=FAST_RETRY) as client,
        pytest.raises(NetworkError) as info,
    ):
        client.ping()
    assert f"127.0.0.1:{port}" in info.value.message
    assert "is the registry running" in (info.value.hint or "")


def test_token_auth_reuses_tokens_per_scope(registry_token: RegistryServer) -> None:
    token_server = registry_token.token_server
    assert token_server is not None
    token_server.reset()
    with client_for(registry_token) as client:
        name = unique()
        repo = client.repository(name)
        manifest_desc, layers = push_model(repo)
        pushes = token_server.count()
        for _ in range(3):
            assert repo.resolve("v1").digest == manifest_desc.digest
            layer = Manifest.parse(repo.fetch_manifest("v1")[1]).layers[0]
            with repo.fetch(layer) as reader:
                assert reader.read() == layers[0]
        assert token_server.count() == pushes  # the push token covers every pull
        other = client.repository(unique())
        other.mount(Manifest.parse(repo.fetch_manifest("v1")[1]).layers[0], name)
        assert token_server.count() == pushes + 1
    scopes = [r.scopes for r in token_server.requests]
    assert scopes[0] == (f"repository:{name}:pull",)
    assert (f"repository:{name}:pull,push",) in scopes
    assert all(r.username == registry_token.username for r in token_server.requests)
    assert len(scopes) <= 3


def test_token_auth_anonymous_is_refused(registry_token: RegistryServer) -> None:
    with (
        client_for(registry_token, credentials=None) as client,
        pytest.raises(AuthenticationError) as info,
    ):
        client.repository(unique()).resolve("v1")
    assert f"modelreg login {registry_token.host}" in (info.value.hint or "")


def test_token_auth_wrong_password(registry_token: RegistryServer) -> None:
    wrong = StaticCredentials(username="modelreg", password="bad-PASSWORD-x")
    with (
        client_for(registry_token, credentials=wrong) as client,
        pytest.raises(AuthenticationError, match="rejected the credentials") as info,
    ):
        client.ping()
    assert "bad-PASSWORD-x" not in str(info.value)


def test_concurrent_pushes_and_pulls(registry_token: RegistryServer) -> None:
    blobs = [random_blob(MiB + i * 1000, seed=100 + i) for i in range(8)]
    with client_for(registry_token) as client:
        round_trip_in_threads(client, client.repository(unique()), blobs, desc_of)


def test_stats_count_requests(registry_plain: RegistryServer) -> None:
    with client_for(registry_plain, plain_http=True) as client:
        client.ping()
        client.ping()
        assert client.stats.requests == 2


# ----------------------------------------------------------------------- redirects


class _Recorded:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()

    def add(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self.lock:
            self.requests.append((method, path, {k.lower(): v for k, v in headers.items()}))


class _QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1, no access log on stderr, and one way to answer."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, threading.Thread]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    return server, thread


@pytest.fixture
def redirecting_registry() -> Iterator[tuple[str, _Recorded, _Recorded, dict[str, bytes]]]:
    """A Basic-auth 'registry' whose blob GETs redirect (307) to 'object storage' on
    another origin. Yields (registry host, registry log, storage log, blobs by digest)."""
    registry_log, storage_log = _Recorded(), _Recorded()
    blobs: dict[str, bytes] = {}
    expected = "Basic " + base64.b64encode(b"alice:redirect-Secret").decode()
    storage_port: list[int] = []

    class Storage(_QuietHandler):
        def do_GET(self) -> None:
            storage_log.add("GET", self.path, dict(self.headers.items()))
            self.reply(200, blobs[self.path.rsplit("/", 1)[1]])

    class Front(_QuietHandler):
        def do_GET(self) -> None:
            registry_log.add("GET", self.path, dict(self.headers.items()))
            if self.headers.get("Authorization") != expected:
                body = b'{"errors":[{"code":"UNAUTHORIZED","message":"auth required"}]}'
                self.reply(401, body, {"WWW-Authenticate": 'Basic realm="front"'})
                return
            digest = self.path.rsplit("/", 1)[1]
            self.reply(307, b"", {"Location": f"http://127.0.0.1:{storage_port[0]}/obj/{digest}"})

    storage, storage_thread = _serve(Storage)
    storage_port.append(storage.server_address[1])
    front, front_thread = _serve(Front)
    try:
        yield f"127.0.0.1:{front.server_address[1]}", registry_log, storage_log, blobs
    finally:
        for server, thread in ((front, front_thread), (storage, storage_thread)):
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


@pytest.mark.parametrize("size", [1000, 2 * MiB], ids=["httpx-path", "lean-path"])
def test_redirect_to_other_host_drops_authorization(
    redirecting_registry: tuple[str, _Recorded, _Recorded, dict[str, bytes]], size: int
) -> None:
    host, registry_log, storage_log, blobs = redirecting_registry
    data = random_blob(size, seed=size)
    desc = desc_of(data)
    blobs[str(desc.digest)] = data
    credentials = StaticCredentials(username="alice", password="redirect-Secret")
    with (
        RegistryClient(host, plain_http=True, credentials=credentials, retry=FAST_RETRY) as c,
        c.repository("team/llm").fetch(desc) as reader,
    ):
        assert reader.read() == data
    assert [h.get("authorization") is not None for _, _, h in registry_log.requests] == [
        False,
        True,
    ]
    [(_, path, headers)] = storage_log.requests
    assert path == f"/obj/{desc.digest}"
    assert "authorization" not in headers
