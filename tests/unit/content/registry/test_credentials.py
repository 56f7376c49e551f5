"""Docker config credentials, credential helpers, login/logout file writing."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from modelreg.content.registry import (
    Credential,
    CredentialStore,
    StaticCredentials,
    default_config_path,
    login,
    logout,
)
from modelreg.errors import AuthenticationError, InvalidInputError

SECRET = "s3cr3t-P4ssw0rd"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_config(path: Path, obj: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return tmp_path / "docker" / "config.json"


@pytest.fixture
def no_fallbacks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the developer's own auth files out of the tests."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)


HELPER = """\
#!{python}
import json, pathlib, sys, time
here = pathlib.Path(__file__).parent
db = here / "helper-db.json"
action = sys.argv[1]
data = sys.stdin.read()
with open(here / "helper-calls.txt", "a") as log:
    log.write(action + "\\n")
store = json.loads(db.read_text()) if db.exists() else {{}}
mode = (here / "helper-mode.txt").read_text().strip() if (here / "helper-mode.txt").exists() else ""
if mode == "slow":
    time.sleep(30)
if mode == "broken":
    sys.stderr.write("keychain is locked\\n")
    sys.exit(3)
if action == "get":
    key = data.strip()
    if key not in store:
        print("credentials not found in native keychain")
        sys.exit(1)
    print(json.dumps(dict(ServerURL=key, **store[key])))
elif action == "store":
    obj = json.loads(data)
    store[obj["ServerURL"]] = dict(Username=obj["Username"], Secret=obj["Secret"])
    db.write_text(json.dumps(store))
elif action == "erase":
    key = data.strip()
    if key not in store:
        print("credentials not found in native keychain")
        sys.exit(1)
    del store[key]
    db.write_text(json.dumps(store))
"""


@pytest.fixture
def helper_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake ``docker-credential-test`` on PATH; its store is ``helper-db.json``."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "docker-credential-test"
    script.write_text(HELPER.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bindir


def helper_db(helper_dir: Path) -> dict[str, dict[str, str]]:
    path = helper_dir / "helper-db.json"
    return json.loads(path.read_text()) if path.exists() else {}


# ----------------------------------------------------------------------- reading


@pytest.mark.usefixtures("no_fallbacks")
@pytest.mark.parametrize(
    "key", ["registry.test:5000", "https://registry.test:5000", "http://registry.test:5000/v2/"]
)
def test_auths_base64_by_any_key_form(config: Path, key: str) -> None:
    write_config(config, {"auths": {key: {"auth": b64(f"alice:{SECRET}")}}})
    found = CredentialStore(config).get("registry.test:5000")
    assert found == Credential(username="alice", password=SECRET)


@pytest.mark.usefixtures("no_fallbacks")
def test_auths_username_password_and_identity_token(config: Path) -> None:
    write_config(
        config,
        {
            "auths": {
                "a.test": {"username": "bob", "password": SECRET},
                "b.test": {"identitytoken": "refresh-" + SECRET},
                "c.test": {},
            }
        },
    )
    store = CredentialStore(config)
    assert store.get("a.test") == Credential("bob", SECRET)
    assert store.get("b.test") == Credential(identity_token="refresh-" + SECRET)
    assert store.get("c.test") is None
    assert store.get("unknown.test") is None


@pytest.mark.usefixtures("no_fallbacks")
@pytest.mark.parametrize("key", ["https://index.docker.io/v1/", "docker.io", "index.docker.io"])
def test_docker_hub_keys(config: Path, key: str) -> None:
    write_config(config, {"auths": {key: {"auth": b64(f"hub:{SECRET}")}}})
    assert CredentialStore(config).get("docker.io") == Credential("hub", SECRET)
    assert CredentialStore(config).get("registry-1.docker.io") == Credential("hub", SECRET)


@pytest.mark.usefixtures("no_fallbacks")
def test_config_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "dockercfg"
    write_config(directory / "config.json", {"auths": {"a.test": {"auth": b64("u:p")}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    assert default_config_path() == directory / "config.json"
    assert CredentialStore().get("a.test") == Credential("u", "p")
    assert CredentialStore(directory).get("a.test") == Credential("u", "p")  # a directory works too
    monkeypatch.delenv("DOCKER_CONFIG")
    assert default_config_path() == tmp_path / "home" / ".docker" / "config.json"


@pytest.mark.usefixtures("no_fallbacks")
def test_registry_auth_file_fallback(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth_file = write_config(
        tmp_path / "auth.json", {"auths": {"quay.test/org": {"auth": b64("q:p")}}}
    )
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    assert CredentialStore(config).get("quay.test") == Credential("q", "p")


@pytest.mark.usefixtures("no_fallbacks")
def test_bad_config_does_not_quote_content(config: Path) -> None:
    config.parent.mkdir(parents=True)
    config.write_text('{"auths": {"a.test": {"auth": "' + b64(f"u:{SECRET}") + '"}')
    with pytest.raises(InvalidInputError) as info:
        CredentialStore(config).get("a.test")
    assert "not valid JSON" in info.value.message
    assert SECRET not in str(info.value) and b64(f"u:{SECRET}") not in str(info.value)
    write_config(config, {"auths": {"a.test": {"auth": "bm9jb2xvbg=="}}})  # "nocolon"
    with pytest.raises(InvalidInputError, match="does not hold 'user:password'"):
        CredentialStore(config).get("a.test")


# ----------------------------------------------------------------------- helpers


@pytest.mark.usefixtures("no_fallbacks")
def test_cred_helpers(config: Path, helper_dir: Path) -> None:
    (helper_dir / "helper-db.json").write_text(
        json.dumps(
            {
                "registry.test": {"Username": "carol", "Secret": SECRET},
                "tok.test": {"Username": "<token>", "Secret": "refresh-" + SECRET},
            }
        )
    )
    write_config(
        config,
        {
            "auths": {"registry.test": {"auth": b64("ignored:ignored")}},
            "credHelpers": {"registry.test": "test", "tok.test": "test", "none.test": "test"},
        },
    )
    store = CredentialStore(config)
    assert store.get("registry.test") == Credential("carol", SECRET)
    assert store.get("tok.test") == Credential(identity_token="refresh-" + SECRET)
    assert store.get("none.test") is None  # "credentials not found": not an error


@pytest.mark.usefixtures("no_fallbacks")
def test_creds_store_for_every_host(config: Path, helper_dir: Path) -> None:
    (helper_dir / "helper-db.json").write_text(
        json.dumps({"https://index.docker.io/v1/": {"Username": "dan", "Secret": SECRET}})
    )
    write_config(config, {"credsStore": "test", "auths": {"other.test": {"auth": b64("o:p")}}})
    store = CredentialStore(config)
    assert store.get("docker.io") == Credential("dan", SECRET)
    assert store.get("other.test") == Credential("o", "p")  # file entry when the store has none


@pytest.mark.usefixtures("no_fallbacks")
def test_helper_failures(config: Path, helper_dir: Path) -> None:
    write_config(config, {"credHelpers": {"registry.test": "test", "gone.test": "missing"}})
    (helper_dir / "helper-mode.txt").write_text("broken")
    with pytest.raises(AuthenticationError) as info:
        CredentialStore(config).get("registry.test")
    assert "exit 3" in info.value.message and "keychain is locked" in info.value.message
    (helper_dir / "helper-mode.txt").write_text("slow")
    with pytest.raises(AuthenticationError, match="did not answer 'get'"):
        CredentialStore(config, helper_timeout=0.5).get("registry.test")
    with pytest.raises(AuthenticationError, match="is not installed"):
        CredentialStore(config).get("gone.test")
    write_config(config, {"credsStore": "../../bin/evil"})
    with pytest.raises(InvalidInputError, match="invalid credential helper name"):
        CredentialStore(config).get("registry.test")


# ----------------------------------------------------------------------- writing


@pytest.mark.usefixtures("no_fallbacks")
def test_login_writes_atomically_with_0600_and_keeps_other_keys(config: Path) -> None:
    write_config(
        config,
        {
            "auths": {
                "other.test": {"auth": b64("x:y")},
                "https://registry.test": {"email": "e@x"},
            },
            "proxies": {"default": {"httpProxy": "http://proxy:3128"}},
            "credHelpers": {"gcr.io": "gcloud"},
            "experimental": "enabled",
        },
    )
    config.chmod(0o644)
    written = login("registry.test", "alice", SECRET, config_path=config)
    assert written == config
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    obj = json.loads(config.read_text())
    assert obj["auths"]["https://registry.test"] == {"email": "e@x", "auth": b64(f"alice:{SECRET}")}
    assert obj["auths"]["other.test"] == {"auth": b64("x:y")}
    assert obj["proxies"] == {"default": {"httpProxy": "http://proxy:3128"}}
    assert obj["credHelpers"] == {"gcr.io": "gcloud"}
    assert obj["experimental"] == "enabled"
    assert CredentialStore(config).get("registry.test") == Credential("alice", SECRET)
    assert [p.name for p in config.parent.iterdir()] == ["config.json"]  # no temp file left
    assert logout("registry.test", config_path=config)
    assert not logout("registry.test", config_path=config)
    obj = json.loads(config.read_text())
    assert "https://registry.test" not in obj["auths"] and "other.test" in obj["auths"]


@pytest.mark.usefixtures("no_fallbacks")
def test_login_creates_file_and_docker_hub_key(tmp_path: Path) -> None:
    path = tmp_path / "new" / "config.json"
    login("docker.io", "hub", SECRET, config_path=path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(json.loads(path.read_text())["auths"]) == ["https://index.docker.io/v1/"]
    with pytest.raises(InvalidInputError):
        login("docker.io", "hub", "", config_path=path)


@pytest.mark.usefixtures("no_fallbacks")
def test_login_through_helper(config: Path, helper_dir: Path) -> None:
    write_config(config, {"credsStore": "test"})
    login("registry.test", "erin", SECRET, config_path=config)
    assert helper_db(helper_dir) == {"registry.test": {"Username": "erin", "Secret": SECRET}}
    obj = json.loads(config.read_text())
    assert obj["auths"] == {"registry.test": {}}
    assert SECRET not in config.read_text()
    assert CredentialStore(config).get("registry.test") == Credential("erin", SECRET)
    assert logout("registry.test", config_path=config)
    assert helper_db(helper_dir) == {}
    assert json.loads(config.read_text())["auths"] == {}


@pytest.mark.usefixtures("no_fallbacks")
def test_login_follows_symlinked_config(tmp_path: Path) -> None:
    real = tmp_path / "real" / "config.json"
    write_config(real, {"auths": {}})
    link = tmp_path / "link.json"
    link.symlink_to(real)
    login("registry.test", "u", SECRET, config_path=link)
    assert link.is_symlink()
    assert "registry.test" in json.loads(real.read_text())["auths"]


# ----------------------------------------------------------------------- secrets


def test_secrets_never_in_repr() -> None:
    credential = Credential("alice", SECRET, "tok-" + SECRET)
    for text in (repr(credential), str(credential), repr(StaticCredentials(credential))):
        assert SECRET not in text and "alice" in text
    assert "***" in repr(credential)
    assert StaticCredentials().get("x") is None


def test_helper_secret_not_on_command_line(config: Path, helper_dir: Path) -> None:
    write_config(config, {"credsStore": "test"})
    login("registry.test", "erin", SECRET, config_path=config)
    calls = (helper_dir / "helper-calls.txt").read_text()
    assert calls.split() == ["store"]
    assert SECRET not in calls


def test_config_path_repr(config: Path) -> None:
    assert "config.json" in repr(CredentialStore(config))


@pytest.mark.usefixtures("no_fallbacks")
def test_empty_file_is_empty_config(config: Path) -> None:
    config.parent.mkdir(parents=True)
    config.write_text("")
    assert CredentialStore(config).get("x.test") is None
