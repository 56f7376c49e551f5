"""Challenges, scopes, the token protocol and the token cache (fake registry)."""

from __future__ import annotations

import base64
import urllib.parse

import httpx
import pytest

from modelreg.content.registry import StaticCredentials
from modelreg.content.registry.auth import (
    Challenge,
    covers,
    merge_scopes,
    parse_www_authenticate,
    repository_scope,
)
from modelreg.errors import AuthenticationError
from modelreg.oci.descriptor import Descriptor
from tests.unit.content.registry.conftest import FakeClock, MakeClient
from tests.unit.content.registry.fakes import FakeRegistry

# ----------------------------------------------------------------------- parsing


def test_parse_bearer_with_commas_inside_quoted_scope() -> None:
    header = (
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:team/llm:pull,push repository:base/img:pull"'
    )
    [challenge] = parse_www_authenticate(header)
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.example.com/token"
    assert challenge.service == "registry.example.com"
    assert challenge.scopes == ("repository:team/llm:pull,push", "repository:base/img:pull")


def test_parse_several_challenges_in_one_header_and_several_headers() -> None:
    challenges = parse_www_authenticate(
        [
            'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"',
            'Bearer realm="https://a/t",error="insufficient_scope"',
        ]
    )
    assert [c.scheme for c in challenges] == ["newauth", "basic", "bearer"]
    assert challenges[0].params == {"realm": "apps", "type": "1", "title": 'Login to "apps"'}
    assert challenges[1].realm == "simple"
    assert challenges[2].error == "insufficient_scope"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Basic", [Challenge("basic")]),
        ("basic realm=registry", [Challenge("basic", {"realm": "registry"})]),
        ('BEARER Realm = "x" , Service="y"', [Challenge("bearer", {"realm": "x", "service": "y"})]),
        ("Negotiate abc+/def==", [Challenge("negotiate", {}, "abc+/def==")]),
        ("Negotiate, Basic realm=x", [Challenge("negotiate"), Challenge("basic", {"realm": "x"})]),
        ('Bearer realm="unterminated', [Challenge("bearer", {"realm": "unterminated"})]),
        (", ,  ", []),
        ('Bearer realm="a", realm="b"', [Challenge("bearer", {"realm": "a"})]),
    ],
)
def test_parse_edge_cases(header: str, expected: list[Challenge]) -> None:
    assert parse_www_authenticate(header) == expected


def test_parse_never_hangs_on_garbage() -> None:
    for junk in ['=,="', '"""', "Bearer ,,,=,=", "Bearer realm=\x00\x01", "@@@ realm=x"]:
        parse_www_authenticate(junk)


def test_scopes_merge_and_cover() -> None:
    assert merge_scopes(["repository:a:push", "repository:a:pull", "repository:b:pull"]) == (
        "repository:a:pull,push",
        "repository:b:pull",
    )
    assert covers(["repository:a:pull,push"], ["repository:a:pull"])
    assert not covers(["repository:a:pull"], ["repository:a:pull,push"])
    assert not covers(["repository:a:pull"], ["repository:b:pull"])
    assert covers(["repository:a:*"], ["repository:a:delete"])
    assert repository_scope("x/y", "pull", "push") == "repository:x/y:pull,push"


# ----------------------------------------------------------------------- bearer flow

BLOB = b"weights" * 100


def _desc(fake: FakeRegistry, repo: str = "team/llm") -> Descriptor:
    digest = fake.put_blob(repo, BLOB)
    from modelreg.oci.digest import Digest

    return Descriptor("application/octet-stream", Digest.parse(digest), len(BLOB))


def test_bearer_token_cached_per_scope_and_reused_preemptively(
    fake: FakeRegistry, make_client: MakeClient
) -> None:
    fake.auth = "bearer"
    desc = _desc(fake)
    client = make_client(login=True)
    repo = client.repository("team/llm")
    for _ in range(3):
        assert repo.exists(desc)
        with repo.fetch(desc) as reader:
            assert reader.read() == BLOB
    assert len(fake.token_requests) == 1
    # only the very first request went out without a token
    assert sum(1 for r in fake.requests if "authorization" not in r.headers) == 1
    token_request = fake.token_requests[0]
    assert token_request.url.params.get_list("scope") == ["repository:team/llm:pull"]
    assert token_request.url.params["service"] == fake.host
    expected = base64.b64encode(f"{fake.username}:{fake.password}".encode()).decode()
    assert token_request.headers["authorization"] == f"Basic {expected}"
    # another repository needs another scope, hence another token
    fake.put_blob("other/repo", BLOB)
    assert client.repository("other/repo").exists(desc)
    assert len(fake.token_requests) == 2


def test_push_token_covers_later_pulls(fake: FakeRegistry, make_client: MakeClient) -> None:
    fake.auth = "bearer"
    client = make_client(login=True)
    repo = client.repository("team/llm")
    from modelreg.content.base import bytes_source

    desc = Descriptor.for_bytes("application/octet-stream", BLOB)
    repo.push(desc, bytes_source(BLOB))
    scopes = [tuple(r.url.params.get_list("scope")) for r in fake.token_requests]
    assert scopes == [("repository:team/llm:pull",), ("repository:team/llm:pull,push",)]
    with repo.fetch(desc) as reader:
        assert reader.read() == BLOB
    assert len(fake.token_requests) == 2


def test_token_expiry_is_honoured(
    fake: FakeRegistry, make_client: MakeClient, clock: FakeClock
) -> None:
    fake.auth = "bearer"
    fake.token_expires_in = None  # default: 60 s
    desc = _desc(fake)
    repo = make_client(login=True).repository("team/llm")
    assert repo.exists(desc)
    clock.now += 30
    assert repo.exists(desc)
    assert len(fake.token_requests) == 1
    clock.now += 60
    assert repo.exists(desc)
    assert len(fake.token_requests) == 2


def test_revoked_cached_token_is_refreshed_once(
    fake: FakeRegistry, make_client: MakeClient, clock: FakeClock
) -> None:
    fake.auth = "bearer"
    desc = _desc(fake)
    repo = make_client(login=True).repository("team/llm")
    assert repo.exists(desc)
    clock.now += 10
    fake.revoked.update(fake.issued_tokens)
    assert repo.exists(desc)
    assert len(fake.token_requests) == 2


def test_token_refused_every_time_gives_up_quickly(
    fake: FakeRegistry, make_client: MakeClient
) -> None:
    fake.auth = "bearer"
    desc = _desc(fake)
    original = fake._token

    def revoking(request: httpx.Request) -> httpx.Response:
        response = original(request)
        fake.revoked.update(fake.issued_tokens)
        return response

    fake._token = revoking  # type: ignore[method-assign]
    repo = make_client(login=True).repository("team/llm")
    with pytest.raises(AuthenticationError) as info:
        repo.exists(desc)
    assert len(fake.token_requests) <= 2
    assert fake.password not in str(info.value)
    assert "check the username and password" in str(info.value)


def test_anonymous_pull_token_has_no_authorization(
    fake: FakeRegistry, make_client: MakeClient
) -> None:
    fake.auth = "bearer"
    desc = _desc(fake)
    repo = make_client().repository("team/llm")
    assert repo.exists(desc)
    assert "authorization" not in fake.token_requests[0].headers


def test_anonymous_push_fails_with_login_hint(fake: FakeRegistry, make_client: MakeClient) -> None:
    from modelreg.content.base import bytes_source

    fake.auth = "bearer"
    repo = make_client().repository("team/llm")
    desc = Descriptor.for_bytes("application/octet-stream", BLOB)
    with pytest.raises(AuthenticationError) as info:
        repo.push(desc, bytes_source(BLOB))
    assert f"modelreg login {fake.host}" in str(info.value)


def test_identity_token_uses_oauth2_post(fake: FakeRegistry, make_client: MakeClient) -> None:
    fake.auth = "bearer"
    desc = _desc(fake)
    client = make_client(credentials=StaticCredentials(identity_token=fake.identity_token))
    assert client.repository("team/llm").exists(desc)
    [token_request] = fake.token_requests
    assert token_request.method == "POST"
    form = urllib.parse.parse_qs(token_request.content.decode())
    assert form["grant_type"] == ["refresh_token"]
    assert form["refresh_token"] == [fake.identity_token]
    assert form["service"] == [fake.host]
    assert form["scope"] == ["repository:team/llm:pull"]
    assert "authorization" not in token_request.headers


def test_wrong_password_at_token_service(fake: FakeRegistry, make_client: MakeClient) -> None:
    fake.auth = "bearer"
    desc = _desc(fake)
    secret = "wrong-SECRET-pw"
    client = make_client(credentials=StaticCredentials(username="alice", password=secret))
    with pytest.raises(AuthenticationError) as info:
        client.repository("team/llm").exists(desc)
    text = str(info.value) + repr(info.value) + repr(client) + repr(client.auth)
    assert "rejected the credentials" in text
    assert secret not in text
    assert base64.b64encode(f"alice:{secret}".encode()).decode() not in text


def test_plain_http_token_realm_refused_with_credentials(
    fake: FakeRegistry, make_client: MakeClient
) -> None:
    fake.auth = "bearer"
    desc = _desc(fake)

    def http_realm(request: httpx.Request) -> httpx.Response | None:
        if "authorization" in request.headers:
            return None
        return httpx.Response(
            401, headers={"WWW-Authenticate": 'Bearer realm="http://auth.test/token",service="x"'}
        )

    fake.interceptors.append(http_realm)
    with pytest.raises(AuthenticationError, match="refusing to send credentials unencrypted"):
        make_client(login=True).repository("team/llm").exists(desc)
    assert fake.token_requests == []


# ----------------------------------------------------------------------- basic flow


def test_basic_auth_sent_after_challenge_then_preemptively(
    fake: FakeRegistry, make_client: MakeClient
) -> None:
    fake.auth = "basic"
    desc = _desc(fake)
    repo = make_client(login=True).repository("team/llm")
    for _ in range(3):
        assert repo.exists(desc)
    assert len(fake.requests) == 4  # one 401, then three authenticated requests
    assert fake.token_requests == []


def test_basic_auth_without_credentials(fake: FakeRegistry, make_client: MakeClient) -> None:
    fake.auth = "basic"
    desc = _desc(fake)
    with pytest.raises(AuthenticationError) as info:
        make_client().repository("team/llm").exists(desc)
    assert info.value.hint == f"run `modelreg login {fake.host}`"
    assert fake.host in info.value.message


def test_basic_auth_wrong_password(fake: FakeRegistry, make_client: MakeClient) -> None:
    fake.auth = "basic"
    desc = _desc(fake)
    client = make_client(credentials=StaticCredentials(username="alice", password="nope-SECRET"))
    with pytest.raises(AuthenticationError) as info:
        client.repository("team/llm").exists(desc)
    assert "check the username and password" in str(info.value)
    assert "nope-SECRET" not in str(info.value)
    assert len(fake.requests) == 2  # no loop


def test_unsupported_scheme_is_named(fake: FakeRegistry, make_client: MakeClient) -> None:
    fake.interceptors.append(
        lambda r: httpx.Response(401, headers={"WWW-Authenticate": "Negotiate"})
    )
    with pytest.raises(AuthenticationError, match="'negotiate'"):
        make_client(login=True).ping()
