"""Hostile auth challenges (the token dance is input from the registry, too).

A registry names the token service it wants credentials sent to; that service answers
with a token document. Both are the registry's to forge.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelreg import Client
from modelreg.errors import AuthenticationError, ModelRegError, SizeLimitError
from tests.hostile.crafted import CraftedRegistry, Reply, Seen, docker_login

WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
TITLE = "org.opencontainers.image.title"


@pytest.fixture
def registry() -> Iterator[CraftedRegistry]:
    with CraftedRegistry() as server:
        server.model("m", "v1", [(WEIGHT, b"w", {TITLE: "w.bin"})])
        yield server


def _pull(server: CraftedRegistry, out: Path) -> None:
    with Client() as client:
        client.pull(f"{server.host}/m:v1", out, cache=False)


@pytest.mark.parametrize("realm", ["file:///etc/passwd", "ftp://127.0.0.1/token", "http:///x"])
def test_token_realm_with_a_non_http_scheme_is_refused(
    registry: CraftedRegistry, tmp_path: Path, realm: str
) -> None:
    registry.challenge = f'Bearer realm="{realm}",service="hostile"'
    with pytest.raises(AuthenticationError, match="invalid token service"):
        _pull(registry, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_oversized_token_document_is_refused(registry: CraftedRegistry, tmp_path: Path) -> None:
    registry.challenge = f'Bearer realm="http://{registry.host}/token",service="hostile"'
    huge = json.dumps({"token": "x" * (16 * 1024 * 1024)}).encode()
    registry.route("GET", r"/token(\?.*)?", lambda seen: Reply(200, {}, huge))
    with pytest.raises(SizeLimitError):
        _pull(registry, tmp_path / "out")


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b'{"token": 42}', b'{"token": ""}', b'{"token": "a\\nb"}']
)
def test_malformed_token_document_is_refused(
    registry: CraftedRegistry, tmp_path: Path, body: bytes
) -> None:
    registry.challenge = f'Bearer realm="http://{registry.host}/token",service="hostile"'
    registry.route("GET", r"/token(\?.*)?", lambda seen: Reply(200, {}, body))
    with pytest.raises(AuthenticationError):
        _pull(registry, tmp_path / "out")


def test_error_messages_never_echo_the_password(
    registry: CraftedRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = base64.b64encode(b"alice:hunter2-s3cret").decode()
    docker_login(monkeypatch, tmp_path, registry.host, b"alice:hunter2-s3cret")
    registry.challenge = 'Basic realm="hostile"'

    def echo(seen: Seen) -> Reply:  # a registry that quotes the credentials back
        challenge = {"WWW-Authenticate": 'Basic realm="hostile"'}
        return Reply(401, challenge, seen.headers.get("authorization", "").encode())

    registry.route("GET", r"/v2/m/manifests/v1", echo)
    with pytest.raises(ModelRegError) as info:
        _pull(registry, tmp_path / "out")
    text = str(info.value) + repr(info.value.__cause__)
    assert "hunter2" not in text and auth not in text
