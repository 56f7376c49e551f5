"""Registry answers and transport failures become errors that say what to do."""

from __future__ import annotations

import socket
import ssl

import httpx
import pytest

from modelreg.content.registry.errors import error_for_response, network_error, parse_error_body
from modelreg.errors import (
    AuthenticationError,
    IntegrityError,
    ModelRegError,
    NetworkError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    RegistryError,
    SizeLimitError,
    UnsupportedError,
)
from tests.unit.content.registry.fakes import error_body

HOST = "registry.example.com"


def err(status: int, body: bytes = b"", **kwargs: object) -> ModelRegError:
    kwargs.setdefault("what", "fetch manifest 'v1' of registry.example.com/team/llm")
    return error_for_response(status, {}, body, host=HOST, **kwargs)  # type: ignore[arg-type]


def test_parse_error_body() -> None:
    [entry] = parse_error_body(error_body("DENIED", "no way", {"repo": "x"}))
    assert (entry.code, entry.message, entry.detail) == ("DENIED", "no way", '{"repo":"x"}')
    assert parse_error_body(b"<html>oops</html>") == []
    assert parse_error_body(b'{"errors": "nope"}') == []


def test_401_hints_login_or_password() -> None:
    anonymous = err(401, error_body("UNAUTHORIZED", "authentication required"))
    assert isinstance(anonymous, AuthenticationError)
    assert anonymous.hint == f"run `modelreg login {HOST}`"
    assert "UNAUTHORIZED" in anonymous.message
    with_creds = err(401, has_credentials=True)
    assert "check the username and password" in (with_creds.hint or "")


def test_403_denied() -> None:
    error = err(403, error_body("DENIED", "requested access to the resource is denied"))
    assert isinstance(error, PermissionDeniedError)
    assert error.code == "DENIED"
    assert "denied" in error.message


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("MANIFEST_UNKNOWN", "modelreg tags registry.example.com/team/llm"),
        ("NAME_UNKNOWN", "check the repository name"),
        ("BLOB_UNKNOWN", "push it first"),
    ],
)
def test_404_codes(code: str, fragment: str) -> None:
    subject = "blob sha256:ab" if code == "BLOB_UNKNOWN" else "manifest 'v1'"
    error = err(404, error_body(code), repository="team/llm", subject=subject)
    assert isinstance(error, NotFoundError)
    assert fragment in str(error)
    assert "registry.example.com/team/llm" in error.message


def test_other_statuses() -> None:
    assert isinstance(err(413), SizeLimitError)
    assert isinstance(err(429, attempts=5), RateLimitedError)
    assert "after 5 attempts" in err(429, attempts=5).message
    assert isinstance(err(400, error_body("DIGEST_INVALID")), IntegrityError)
    assert isinstance(err(405, error_body("UNSUPPORTED")), UnsupportedError)
    server = err(502)
    assert isinstance(server, RegistryError) and server.status == 502
    assert "502 Bad Gateway" in server.message
    plain = err(400, b"Client sent an HTTP request to an HTTPS server.\n")
    assert isinstance(plain, NetworkError)
    assert "drop --plain-http" in (plain.hint or "")


def test_registry_text_is_sanitized_and_bounded() -> None:
    evil = error_body("DENIED", "line1\r\n\x1b[31mFAKE: all good\x1b[0m" + "x" * 5000)
    error = err(403, evil)
    assert "\n" not in error.message and "\x1b" not in error.message
    assert len(error.message) < 600


def _chained(outer: Exception, inner: BaseException) -> Exception:
    try:
        raise inner
    except BaseException as exc:
        try:
            raise outer from exc
        except Exception as chained:
            return chained


@pytest.mark.parametrize(
    ("exc", "fragment", "hint"),
    [
        (
            _chained(httpx.ConnectError("refused"), ConnectionRefusedError(111, "refused")),
            "cannot connect to registry.example.com",
            "--plain-http",
        ),
        (
            _chained(httpx.ConnectError("dns"), socket.gaierror(-2, "Name or service not known")),
            "cannot resolve",
            "DNS",
        ),
        (
            _chained(httpx.ConnectError("verify"), ssl.SSLCertVerificationError(1, "bad cert")),
            "TLS certificate verification failed",
            "--ca-file",
        ),
        (
            _chained(httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER]"), ssl.SSLError(1, "wrong")),
            "did not answer with TLS",
            "--plain-http",
        ),
        (httpx.ReadTimeout("slow"), "did not answer in time", "try again"),
        (httpx.RemoteProtocolError("cut"), "connection to registry.example.com broke", "try again"),
    ],
)
def test_network_errors(exc: Exception, fragment: str, hint: str) -> None:
    error = network_error(exc, host=HOST, what="ping")
    assert isinstance(error, NetworkError)
    assert fragment in error.message
    assert hint in (error.hint or "")
