"""What the real registry (CNCF Distribution 2.8.2, Debian ``docker-registry``) does.

These tests use raw httpx only: they document the server the rest of the
project talks to, and check the fixtures in ``conftest.py`` work.  When a test
here fails after a registry upgrade, the behaviour it documents changed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.registry_server import (
    REGISTRY_BIN_ENV,
    CertificateAuthority,
    RegistryBinaryMissing,
    RegistryError,
    RegistryFactory,
    RegistryServer,
    TokenSigner,
    decode_jwt_claims,
    start_registry,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCTET = {"Content-Type": "application/octet-stream"}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def with_query(location: str, **params: str) -> str:
    """Add params to an upload Location *keeping* its ``_state`` query."""
    return str(httpx.URL(location).copy_merge_params(params))


def start_upload(client: httpx.Client, repo: str) -> str:
    response = client.post(f"/v2/{repo}/blobs/uploads/")
    assert response.status_code == 202, response.text
    return response.headers["Location"]


def push_blob(client: httpx.Client, repo: str, data: bytes) -> httpx.Response:
    """Monolithic upload: POST then PUT ?digest= with the whole body."""
    location = start_upload(client, repo)
    response = client.put(with_query(location, digest=sha256(data)), content=data, headers=OCTET)
    assert response.status_code == 201, response.text
    return response


def descriptor(media_type: str, blob: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(blob), "size": len(blob), **extra}


def artifact_manifest(client: httpx.Client, repo: str, **extra: Any) -> bytes:
    """Push an empty config and one layer; return an OCI manifest using them."""
    config, layer = b"{}", b"model weights " + uuid.uuid4().bytes
    push_blob(client, repo, config)
    push_blob(client, repo, layer)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.modelreg.model.v1+json",
        "config": descriptor(OCI_EMPTY, config, data=base64.b64encode(config).decode()),
        "layers": [
            descriptor(
                "application/vnd.modelreg.weights.v1.safetensors",
                layer,
                annotations={"org.opencontainers.image.title": "model.safetensors"},
            )
        ],
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
        **extra,
    }
    return json.dumps(manifest, separators=(",", ":")).encode()


def put_manifest(
    client: httpx.Client,
    repo: str,
    ref: str,
    body: bytes,
    media_type: str = OCI_MANIFEST,
) -> httpx.Response:
    return client.put(
        f"/v2/{repo}/manifests/{ref}",
        content=body,
        headers={"Content-Type": media_type},
    )


def error_codes(response: httpx.Response) -> list[str]:
    return [e["code"] for e in response.json()["errors"]]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def repo() -> str:
    """A unique repository name (the session registries are shared)."""
    return f"facts/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(registry_plain: RegistryServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry_plain.url) as c:
        yield c


# --------------------------------------------------------------------------
# the fixtures themselves
# --------------------------------------------------------------------------


def test_plain_registry_answers_v2(registry_plain: RegistryServer, client: httpx.Client) -> None:
    response = client.get("/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert registry_plain.scheme == "http"
    assert registry_plain.url == f"http://{registry_plain.host}"
    assert (
        registry_plain.username,
        registry_plain.password,
        registry_plain.ca_file,
    ) == (
        None,
        None,
        None,
    )


def test_tls_basic_needs_ca_and_credentials(registry_tls_basic: RegistryServer) -> None:
    server = registry_tls_basic
    assert server.url.startswith("https://127.0.0.1:") and server.ca_file is not None
    with httpx.Client(base_url=server.url, verify=server.ssl_context()) as c:
        anonymous = c.get("/v2/")
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="modelreg-test-registry"'
        assert c.get("/v2/", auth=server.basic_auth).status_code == 200
        assert c.get("/v2/", auth=(server.username or "", "wrong")).status_code == 401
    untrusting = httpx.Client(base_url=server.url)  # system CAs only
    with (
        untrusting,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        untrusting.get("/v2/")


def test_tls_certificate_also_valid_for_localhost(
    registry_tls_basic: RegistryServer,
) -> None:
    url = f"https://localhost:{registry_tls_basic.port}/v2/"
    with httpx.Client(verify=registry_tls_basic.ssl_context()) as c:
        assert c.get(url, auth=registry_tls_basic.basic_auth).status_code == 200


def test_docker_config(registry_tls_basic: RegistryServer, tmp_path: Path) -> None:
    path = registry_tls_basic.docker_config(tmp_path)
    auth = json.loads(path.read_text())["auths"][registry_tls_basic.host]["auth"]
    user, _, password = base64.b64decode(auth).decode().partition(":")
    assert (user, password) == (
        registry_tls_basic.username,
        registry_tls_basic.password,
    )


def test_factory_gives_an_empty_registry(registry_factory: RegistryFactory) -> None:
    server = registry_factory()
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/v2/_catalog").json() == {"repositories": []}
    assert server.root_dir.is_dir() and "listening on" in server.log_text()


def test_missing_binary_fails_with_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REGISTRY_BIN_ENV, str(tmp_path / "no-such-registry"))
    registry = start_registry(tmp_path)
    with (
        pytest.raises(RegistryBinaryMissing, match=r"bash \.ci/install-deps"),
        registry,
    ):
        pass


def test_start_failure_reports_the_registry_log(tmp_path: Path) -> None:
    broken = {"http": {"tls": {"certificate": str(tmp_path / "missing.pem"), "key": "x"}}}
    registry = start_registry(tmp_path, extra_config=broken)
    with pytest.raises(RegistryError, match=r"missing\.pem"), registry:
        pass


# --------------------------------------------------------------------------
# token auth
# --------------------------------------------------------------------------


def fetch_token(
    c: httpx.Client,
    server: RegistryServer,
    *scopes: str,
    auth: tuple[str, str] | None = None,
) -> httpx.Response:
    assert server.token_server is not None
    params = httpx.QueryParams({"service": server.token_server.service, "scope": list(scopes)})
    return c.get(server.token_server.realm, params=params, auth=auth)


def challenge_params(header: str) -> dict[str, str]:
    """The ``key="value"`` parameters of a WWW-Authenticate header."""
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def scope_actions(scope: str) -> dict[str, set[str]]:
    """``"repository:a:pull,push repository:b:pull"`` -> {resource: actions}."""
    resources = (item.rpartition(":") for item in scope.split(" "))
    return {resource: set(actions.split(",")) for resource, _, actions in resources}


def test_token_challenges_name_the_needed_scopes(registry_token: RegistryServer, repo: str) -> None:
    """Scopes in a challenge; the ORDER of actions varies between requests."""
    ts = registry_token.token_server
    assert ts is not None
    blob, pull_push = sha256(b"x"), {"pull", "push"}
    mount = (("mount", blob), ("from", "other/repo"))
    cases: dict[tuple[str, str, tuple[tuple[str, str], ...]], dict[str, set[str]] | None] = {
        ("GET", "/v2/", ()): None,
        ("GET", f"/v2/{repo}/tags/list", ()): {f"repository:{repo}": {"pull"}},
        ("POST", f"/v2/{repo}/blobs/uploads/", ()): {f"repository:{repo}": pull_push},
        # mount: BOTH scopes in ONE space-separated scope parameter
        ("POST", f"/v2/{repo}/blobs/uploads/", mount): {
            f"repository:{repo}": pull_push,
            "repository:other/repo": {"pull"},
        },
        ("DELETE", f"/v2/{repo}/manifests/{blob}", ()): {f"repository:{repo}": {"delete"}},
        ("GET", "/v2/_catalog", ()): {"registry:catalog": {"*"}},
    }
    with httpx.Client(base_url=registry_token.url) as c:
        for (method, path, params), expected in cases.items():
            response = c.request(method, path, params=list(params))
            assert response.status_code == 401
            header = response.headers["WWW-Authenticate"]
            assert header.startswith('Bearer realm="')
            found = challenge_params(header)
            assert (found["realm"], found["service"]) == (ts.realm, ts.service)
            assert "error" not in found  # no token sent: no error parameter
            if expected is None:
                assert "scope" not in found
            else:
                assert scope_actions(found["scope"]) == expected


def test_token_grants_push_and_pull(registry_token: RegistryServer, repo: str) -> None:
    scope = f"repository:{repo}:pull,push"
    with httpx.Client(base_url=registry_token.url) as c:
        answer = fetch_token(c, registry_token, scope, auth=registry_token.basic_auth)
        assert answer.status_code == 200
        body = answer.json()
        assert body["token"] == body["access_token"] and body["expires_in"] == 300
        claims = decode_jwt_claims(body["token"])
        assert claims["access"] == [
            {"type": "repository", "name": repo, "actions": ["pull", "push"]}
        ]
        c.headers.update(bearer(body["token"]))
        push_blob(c, repo, b"pushed with a token")
        assert c.get(f"/v2/{repo}/blobs/{sha256(b'pushed with a token')}").status_code == 200
        # a push token does not include delete
        denied = c.delete(f"/v2/{repo}/blobs/{sha256(b'pushed with a token')}")
        assert denied.status_code == 401
        assert 'error="insufficient_scope"' in denied.headers["WWW-Authenticate"]


def test_token_anonymous_gets_no_access(registry_token: RegistryServer, repo: str) -> None:
    with httpx.Client(base_url=registry_token.url) as c:
        answer = fetch_token(c, registry_token, f"repository:{repo}:pull")
        assert answer.status_code == 200  # a token, but with an empty access list
        token = answer.json()["token"]
        assert decode_jwt_claims(token)["access"] == []
        denied = c.get(f"/v2/{repo}/tags/list", headers=bearer(token))
        assert denied.status_code == 401
        assert error_codes(denied) == ["UNAUTHORIZED"]
        challenge = challenge_params(denied.headers["WWW-Authenticate"])
        assert challenge["error"] == "insufficient_scope"
        assert challenge["scope"] == f"repository:{repo}:pull"
        # /v2/ itself only needs a valid token
        assert c.get("/v2/", headers=bearer(token)).status_code == 200


def test_token_server_rejects_bad_password(registry_token: RegistryServer, repo: str) -> None:
    ts = registry_token.token_server
    assert ts is not None
    with httpx.Client() as c:
        answer = fetch_token(
            c, registry_token, f"repository:{repo}:pull", auth=("modelreg", "nope")
        )
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Basic ")
    assert ts.count(scope=f"repository:{repo}:pull") == 1
    assert ts.requests[-1].status == 401


def test_token_mount_needs_pull_on_the_source(registry_token: RegistryServer, repo: str) -> None:
    source, data = f"{repo}-src", b"shared layer " + uuid.uuid4().bytes
    user = registry_token.basic_auth
    with httpx.Client(base_url=registry_token.url) as c:
        src_token = fetch_token(c, registry_token, f"repository:{source}:pull,push", auth=user)
        c.headers.update(bearer(src_token.json()["token"]))
        push_blob(c, source, data)
        mount = {"mount": sha256(data), "from": source}
        only_target = fetch_token(c, registry_token, f"repository:{repo}:pull,push", auth=user)
        c.headers.update(bearer(only_target.json()["token"]))
        # no fallback to a plain upload: a 401 asking for both scopes
        assert c.post(f"/v2/{repo}/blobs/uploads/", params=mount).status_code == 401
        both = fetch_token(
            c,
            registry_token,
            f"repository:{repo}:pull,push",
            f"repository:{source}:pull",
            auth=user,
        )
        c.headers.update(bearer(both.json()["token"]))
        assert c.post(f"/v2/{repo}/blobs/uploads/", params=mount).status_code == 201


def test_token_oauth2_password_and_refresh(registry_factory: RegistryFactory) -> None:
    server = registry_factory(auth="token")
    ts = server.token_server
    assert ts is not None
    form = {
        "service": ts.service,
        "client_id": "modelreg-tests",
        "scope": "registry:catalog:*",
    }
    with httpx.Client(base_url=server.url) as c:
        first = c.post(
            ts.realm,
            data={
                **form,
                "grant_type": "password",
                "username": server.username or "",
                "password": server.password or "",
            },
        )
        assert first.status_code == 200
        assert {"access_token", "refresh_token", "expires_in", "issued_at"} <= set(first.json())
        again = c.post(
            ts.realm,
            data={
                **form,
                "grant_type": "refresh_token",
                "refresh_token": first.json()["refresh_token"],
            },
        )
        assert again.status_code == 200
        catalog = c.get("/v2/_catalog", headers=bearer(again.json()["access_token"]))
        assert catalog.status_code == 200
        bad = c.post(ts.realm, data={**form, "grant_type": "refresh_token", "refresh_token": "x"})
        assert bad.status_code == 401
    assert [r.grant_type for r in ts.requests] == [
        "password",
        "refresh_token",
        "refresh_token",
    ]
    assert ts.count(method="POST") == 3 and ts.count(scope="registry:catalog:*") == 3


def test_token_kid_header_also_works(registry_factory: RegistryFactory) -> None:
    server = registry_factory(auth="token", token_options={"key_header": "kid"})
    with httpx.Client(base_url=server.url) as c:
        token = fetch_token(c, server, "registry:catalog:*", auth=server.basic_auth).json()["token"]
        assert c.get("/v2/_catalog", headers=bearer(token)).status_code == 200


def test_token_with_tls(registry_factory: RegistryFactory) -> None:
    server = registry_factory(auth="token", tls=True)
    assert server.token_server is not None
    assert server.token_server.realm.startswith("https://127.0.0.1:")
    with httpx.Client(base_url=server.url, verify=server.ssl_context()) as c:
        answer = fetch_token(c, server, "registry:catalog:*", auth=server.basic_auth)
        token = answer.json()["token"]
        assert c.get("/v2/_catalog", headers=bearer(token)).status_code == 200


def test_token_signed_by_untrusted_key_is_rejected(
    registry_token: RegistryServer,
) -> None:
    ts = registry_token.token_server
    assert ts is not None
    rogue = TokenSigner(CertificateAuthority("rogue CA").issue_signing_cert())
    claims = decode_jwt_claims(ts.issue(registry_token.username, ["registry:catalog:*"])[0])
    with httpx.Client(base_url=registry_token.url) as c:
        response = c.get("/v2/_catalog", headers=bearer(rogue.sign(claims)))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


# --------------------------------------------------------------------------
# blob uploads
# --------------------------------------------------------------------------


def test_upload_locations_are_absolute_with_state(
    registry_plain: RegistryServer, client: httpx.Client, repo: str
) -> None:
    response = client.post(f"/v2/{repo}/blobs/uploads/")
    assert response.status_code == 202
    location = response.headers["Location"]
    assert location.startswith(f"{registry_plain.url}/v2/{repo}/blobs/uploads/")
    assert "?_state=" in location
    assert response.headers["Range"] == "0-0"
    assert response.headers["Docker-Upload-UUID"] in location


def test_relativeurls_option_gives_relative_locations(
    registry_factory: RegistryFactory,
) -> None:
    server = registry_factory(extra_config={"http": {"relativeurls": True}})
    with httpx.Client(base_url=server.url) as c:
        assert start_upload(c, "rel/repo").startswith("/v2/rel/repo/blobs/uploads/")
        assert (
            push_blob(c, "rel/repo", b"x").headers["Location"]
            == f"/v2/rel/repo/blobs/{sha256(b'x')}"
        )


def test_monolithic_post_then_put(
    registry_plain: RegistryServer, client: httpx.Client, repo: str
) -> None:
    data = b"hello world"
    response = push_blob(client, repo, data)
    assert response.headers["Docker-Content-Digest"] == sha256(data)
    assert response.headers["Location"] == f"{registry_plain.url}/v2/{repo}/blobs/{sha256(data)}"


def test_httpx_params_would_drop_the_upload_state(client: httpx.Client, repo: str) -> None:
    """``params=`` REPLACES the Location's query; ``_state`` must be kept."""
    location = start_upload(client, repo)
    lost = client.put(location, params={"digest": sha256(b"x")}, content=b"x", headers=OCTET)
    assert lost.status_code == 404
    assert error_codes(lost) == ["BLOB_UPLOAD_INVALID"]


def test_single_post_with_digest_is_not_supported(client: httpx.Client, repo: str) -> None:
    data = b"single request upload"
    response = client.post(
        f"/v2/{repo}/blobs/uploads/",
        params={"digest": sha256(data)},
        content=data,
        headers=OCTET,
    )
    assert response.status_code == 202  # body ignored: a normal upload session starts
    assert client.head(f"/v2/{repo}/blobs/{sha256(data)}").status_code == 404


def test_wrong_digest_on_put(client: httpx.Client, repo: str) -> None:
    location = start_upload(client, repo)
    response = client.put(with_query(location, digest=sha256(b"a")), content=b"b", headers=OCTET)
    assert response.status_code == 400
    assert error_codes(response) == ["DIGEST_INVALID"]


def test_empty_blob(client: httpx.Client, repo: str) -> None:
    assert push_blob(client, repo, b"").headers["Docker-Content-Digest"] == sha256(b"")


def test_chunked_patch_upload(client: httpx.Client, repo: str) -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    location = start_upload(client, repo)
    first = client.patch(
        location, content=data[:4000], headers={**OCTET, "Content-Range": "0-3999"}
    )
    assert first.status_code == 202
    assert first.headers["Range"] == "0-3999"  # inclusive end, no "bytes=" prefix
    assert first.headers["Location"] != location  # _state changes after every chunk
    stale = client.get(location)
    assert stale.status_code == 404 and error_codes(stale) == ["BLOB_UPLOAD_INVALID"]
    status = client.get(first.headers["Location"])
    assert status.status_code == 204 and status.headers["Range"] == "0-3999"
    # streaming PATCH without Content-Range (or Content-Type) is fine too
    second = client.patch(first.headers["Location"], content=data[4000:8000])
    assert second.status_code == 202 and second.headers["Range"] == "0-7999"
    # the last chunk may travel with the closing PUT
    done = client.put(
        with_query(second.headers["Location"], digest=sha256(data)),
        content=data[8000:],
        headers=OCTET,
    )
    assert done.status_code == 201
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_chunk_content_range_is_not_checked(client: httpx.Client, repo: str) -> None:
    """2.8 ignores Content-Range: a chunk claiming the wrong offset is appended (no 416)."""
    location = start_upload(client, repo)
    first = client.patch(location, content=b"a" * 10, headers={**OCTET, "Content-Range": "0-9"})
    gap = client.patch(
        first.headers["Location"],
        content=b"b" * 10,
        headers={**OCTET, "Content-Range": "50-59"},
    )
    assert gap.status_code == 202 and gap.headers["Range"] == "0-19"


def test_cancel_upload(client: httpx.Client, repo: str) -> None:
    location = start_upload(client, repo)
    assert client.delete(location).status_code == 204


# --------------------------------------------------------------------------
# blob reads, mount, delete
# --------------------------------------------------------------------------


def test_blob_head_headers(client: httpx.Client, repo: str) -> None:
    data = b"0123456789" * 10
    push_blob(client, repo, data)
    head = client.head(f"/v2/{repo}/blobs/{sha256(data)}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == "100"
    assert head.headers["Docker-Content-Digest"] == sha256(data)
    assert head.headers["Content-Type"] == "application/octet-stream"
    assert head.headers["Accept-Ranges"] == "bytes"
    assert head.headers["Etag"] == f'"{sha256(data)}"'
    missing = client.get(f"/v2/{repo}/blobs/{sha256(b'missing')}")
    assert missing.status_code == 404 and error_codes(missing) == ["BLOB_UNKNOWN"]


def test_blob_range_requests(client: httpx.Client, repo: str) -> None:
    data = bytes(range(100))
    path = f"/v2/{repo}/blobs/{sha256(data)}"
    push_blob(client, repo, data)
    part = client.get(path, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.headers["Content-Range"] == "bytes 10-19/100"
    assert part.content == data[10:20]
    tail = client.get(path, headers={"Range": "bytes=90-"})
    assert tail.status_code == 206 and tail.content == data[90:]
    suffix = client.get(path, headers={"Range": "bytes=-5"})
    assert suffix.status_code == 206 and suffix.content == data[-5:]
    clipped = client.get(path, headers={"Range": "bytes=95-200"})
    assert clipped.headers["Content-Range"] == "bytes 95-99/100" and clipped.content == data[95:]


def test_unsatisfiable_range_has_a_broken_content_length(client: httpx.Client, repo: str) -> None:
    """416 arrives with Content-Length of the *whole blob* but a short text body.

    Reading the body makes httpx raise RemoteProtocolError: check the status first.
    """
    data = bytes(100)
    push_blob(client, repo, data)
    with client.stream(
        "GET", f"/v2/{repo}/blobs/{sha256(data)}", headers={"Range": "bytes=500-"}
    ) as r:
        assert r.status_code == 416
        assert r.headers["Content-Range"] == "bytes */100"
        assert r.headers["Content-Length"] == "100"
        with pytest.raises(httpx.RemoteProtocolError):
            r.read()


def test_cross_repo_mount(registry_plain: RegistryServer, client: httpx.Client, repo: str) -> None:
    data = b"mount me " + uuid.uuid4().bytes
    push_blob(client, repo, data)
    target = f"{repo}-target"
    mounted = client.post(
        f"/v2/{target}/blobs/uploads/", params={"mount": sha256(data), "from": repo}
    )
    assert mounted.status_code == 201
    assert mounted.headers["Location"] == f"{registry_plain.url}/v2/{target}/blobs/{sha256(data)}"
    assert mounted.headers["Docker-Content-Digest"] == sha256(data)
    assert client.head(f"/v2/{target}/blobs/{sha256(data)}").status_code == 200


def test_mount_falls_back_to_an_upload_session(client: httpx.Client, repo: str) -> None:
    unknown = client.post(
        f"/v2/{repo}/blobs/uploads/", params={"mount": sha256(b"?"), "from": "x/y"}
    )
    assert unknown.status_code == 202 and "/blobs/uploads/" in unknown.headers["Location"]
    no_from = client.post(f"/v2/{repo}/blobs/uploads/", params={"mount": sha256(b"?")})
    assert no_from.status_code == 202


def test_blob_delete(client: httpx.Client, repo: str) -> None:
    push_blob(client, repo, b"delete me")
    assert client.delete(f"/v2/{repo}/blobs/{sha256(b'delete me')}").status_code == 202
    assert client.head(f"/v2/{repo}/blobs/{sha256(b'delete me')}").status_code == 404


# --------------------------------------------------------------------------
# manifests
# --------------------------------------------------------------------------


def test_oci_artifact_manifest_is_accepted_verbatim(
    registry_plain: RegistryServer, client: httpx.Client, repo: str
) -> None:
    body = artifact_manifest(client, repo)
    response = put_manifest(client, repo, "v1", body)
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == sha256(body)
    assert (
        response.headers["Location"] == f"{registry_plain.url}/v2/{repo}/manifests/{sha256(body)}"
    )
    got = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert got.status_code == 200
    assert got.content == body  # byte-for-byte, artifactType kept
    assert got.headers["Content-Type"] == OCI_MANIFEST
    assert got.headers["Docker-Content-Digest"] == sha256(body)


def test_subject_is_stored_but_ignored(client: httpx.Client, repo: str) -> None:
    """No OCI-Subject header and no check that the subject exists."""
    subject = {"mediaType": OCI_MANIFEST, "digest": sha256(b"not pushed"), "size": 10}
    body = artifact_manifest(client, repo, subject=subject)
    response = put_manifest(client, repo, sha256(body), body)
    assert response.status_code == 201, response.text
    assert "OCI-Subject" not in response.headers
    got = client.get(f"/v2/{repo}/manifests/{sha256(body)}", headers={"Accept": OCI_MANIFEST})
    assert json.loads(got.content)["subject"] == subject


def test_referrers_api_is_not_served(client: httpx.Client, repo: str) -> None:
    body = artifact_manifest(client, repo)
    put_manifest(client, repo, "v1", body)
    response = client.get(f"/v2/{repo}/referrers/{sha256(body)}", headers={"Accept": OCI_INDEX})
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("text/plain")  # router 404, not JSON
    assert response.text.strip() == "404 page not found"


def test_oci_index_with_artifact_type(client: httpx.Client, repo: str) -> None:
    child = artifact_manifest(client, repo)
    put_manifest(client, repo, sha256(child), child)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.modelreg.collection.v1",
        "manifests": [descriptor(OCI_MANIFEST, child)],
    }
    body = json.dumps(index).encode()
    assert put_manifest(client, repo, "index", body, OCI_INDEX).status_code == 201
    got = client.get(f"/v2/{repo}/manifests/index", headers={"Accept": OCI_INDEX})
    assert got.content == body


def test_oci_manifest_needs_an_oci_accept_header(client: httpx.Client, repo: str) -> None:
    put_manifest(client, repo, "v1", artifact_manifest(client, repo))
    for accept in (None, "*/*", DOCKER_MANIFEST):
        headers = {"Accept": accept} if accept else {}
        got = client.get(f"/v2/{repo}/manifests/v1", headers=headers)
        assert got.status_code == 404, accept
        assert got.json()["errors"][0] == {
            "code": "MANIFEST_UNKNOWN",
            "message": "OCI manifest found, but accept header does not support OCI manifests",
        }
        assert client.head(f"/v2/{repo}/manifests/v1", headers=headers).status_code == 404
    head = client.head(
        f"/v2/{repo}/manifests/v1",
        headers={"Accept": f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"},
    )
    assert head.status_code == 200 and head.headers["Content-Type"] == OCI_MANIFEST


def test_manifest_put_needs_content_type(client: httpx.Client, repo: str) -> None:
    body = artifact_manifest(client, repo)
    response = client.put(f"/v2/{repo}/manifests/v1", content=body)
    assert response.status_code == 400 and error_codes(response) == ["MANIFEST_INVALID"]
    mismatch = put_manifest(client, repo, "v1", body, DOCKER_MANIFEST)
    assert mismatch.status_code == 400 and error_codes(mismatch) == ["MANIFEST_INVALID"]


def test_manifest_checks_blobs_exist_but_not_sizes(client: httpx.Client, repo: str) -> None:
    manifest = json.loads(artifact_manifest(client, repo))
    manifest["layers"][0]["size"] += 1000  # wrong size: accepted
    assert put_manifest(client, repo, "badsize", json.dumps(manifest).encode()).status_code == 201
    manifest["layers"].append(descriptor("application/octet-stream", b"never pushed"))
    missing = put_manifest(client, repo, "missing", json.dumps(manifest).encode())
    assert missing.status_code == 400
    assert error_codes(missing) == ["MANIFEST_BLOB_UNKNOWN"]


def test_manifest_without_media_type_field(client: httpx.Client, repo: str) -> None:
    manifest = json.loads(artifact_manifest(client, repo))
    del manifest["mediaType"]
    assert put_manifest(client, repo, "v1", json.dumps(manifest).encode()).status_code == 201


def test_manifest_digest_mismatch(client: httpx.Client, repo: str) -> None:
    response = put_manifest(client, repo, sha256(b"other"), artifact_manifest(client, repo))
    assert response.status_code == 400 and error_codes(response) == ["DIGEST_INVALID"]


def test_manifest_size_limit_is_4_mib(client: httpx.Client, repo: str) -> None:
    manifest = json.loads(artifact_manifest(client, repo))
    manifest["annotations"]["padding"] = "x" * (4 * 1024 * 1024)
    response = put_manifest(client, repo, "big", json.dumps(manifest).encode())
    assert response.status_code == 400
    assert response.json()["errors"][0]["detail"] == "http: request body too large"


def test_invalid_tag_is_a_router_404(client: httpx.Client, repo: str) -> None:
    response = put_manifest(client, repo, "-bad", artifact_manifest(client, repo))
    assert response.status_code == 404 and response.text.strip() == "404 page not found"


def test_manifest_delete(client: httpx.Client, repo: str) -> None:
    body = artifact_manifest(client, repo)
    put_manifest(client, repo, "a", body)
    put_manifest(client, repo, "b", body)
    by_tag = client.delete(f"/v2/{repo}/manifests/a")
    assert by_tag.status_code == 400 and error_codes(by_tag) == ["DIGEST_INVALID"]
    assert client.delete(f"/v2/{repo}/manifests/{sha256(body)}").status_code == 202
    # every tag pointing at it is gone, and the list is null (not [])
    assert client.get(f"/v2/{repo}/tags/list").json() == {"name": repo, "tags": None}
    gone = client.get(f"/v2/{repo}/manifests/a", headers={"Accept": OCI_MANIFEST})
    assert gone.status_code == 404 and error_codes(gone) == ["MANIFEST_UNKNOWN"]


# --------------------------------------------------------------------------
# listing
# --------------------------------------------------------------------------


def test_tag_list_ignores_pagination(client: httpx.Client, repo: str) -> None:
    body = artifact_manifest(client, repo)
    tags = {f"t{i}" for i in range(5)}
    for tag in tags:
        assert put_manifest(client, repo, tag, body).status_code == 201
    for params in ({}, {"n": "2"}, {"n": "2", "last": "t1"}):
        response = client.get(f"/v2/{repo}/tags/list", params=params)
        assert response.status_code == 200
        assert "Link" not in response.headers
        assert response.json()["name"] == repo
        assert set(response.json()["tags"]) == tags  # all of them, order not guaranteed


def test_unknown_repository_tag_list(client: httpx.Client, repo: str) -> None:
    response = client.get(f"/v2/{repo}/tags/list")
    assert response.status_code == 404 and error_codes(response) == ["NAME_UNKNOWN"]


def test_catalog_pagination(registry_factory: RegistryFactory) -> None:
    server = registry_factory()
    with httpx.Client(base_url=server.url) as c:
        for name in ("r/a", "r/b", "r/c"):
            push_blob(c, name, b"x")
        first = c.get("/v2/_catalog", params={"n": "2"})
        assert first.json() == {"repositories": ["r/a", "r/b"]}
        assert first.headers["Link"] == '</v2/_catalog?last=r%2Fb&n=2>; rel="next"'
        last = c.get("/v2/_catalog", params={"n": "2", "last": "r/b"})
        assert last.json() == {"repositories": ["r/c"]}
        assert "Link" not in last.headers
