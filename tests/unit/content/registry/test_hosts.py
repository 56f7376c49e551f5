"""Per-host configuration: containerd's hosts.toml and containers-registries.conf.

Both are parsed strictly (an operator's typo must not silently send traffic elsewhere):
every malformed case names the file and the key.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modelreg.content.registry.hosts import (
    HostsResolver,
    default_server,
    parse_hosts_toml,
    parse_registries_conf,
)
from modelreg.errors import InvalidInputError

FILE = "/etc/containerd/certs.d/registry.example.com/hosts.toml"


def _hosts(text: str, host: str = "registry.example.com") -> object:
    return parse_hosts_toml(text, path=FILE, host=host)


def test_full_hosts_toml_in_file_order() -> None:
    config = parse_hosts_toml(
        """
server = "https://registry.example.com"
ca = "upstream-ca.pem"
capabilities = ["pull", "resolve", "push"]

[host."https://cache.internal:5000"]
  capabilities = ["pull", "resolve"]
  ca = ["/etc/certs/cache-ca.pem", "second.pem"]
  client = [["/etc/certs/client.cert", "/etc/certs/client.key"], ["/etc/certs/both.pem", ""]]
  dial_timeout = "1.5s"
  [host."https://cache.internal:5000".header]
    x-team = "ml"
    x-multi = ["a", "b"]

[host."http://127.0.0.1:5001"]
  capabilities = ["pull"]
  skip_verify = true

[host."https://proxy.internal/v2/hub"]
  override_path = true
""",
        path=FILE,
        host="registry.example.com",
    )
    assert config.configured and config.files == (FILE,)
    base = "/etc/containerd/certs.d/registry.example.com"
    assert config.server.url == "https://registry.example.com/v2"
    assert config.server.ca_files == (f"{base}/upstream-ca.pem",)
    first, second, third = config.mirrors
    assert (first.scheme, first.host, first.capabilities) == (
        "https",
        "cache.internal:5000",
        frozenset({"pull", "resolve"}),
    )
    assert first.ca_files == ("/etc/certs/cache-ca.pem", f"{base}/second.pem")
    assert first.client_certs == (
        ("/etc/certs/client.cert", "/etc/certs/client.key"),
        ("/etc/certs/both.pem", None),
    )
    assert first.dial_timeout == 1.5
    assert first.headers == (("x-team", "ml"), ("x-multi", "a"), ("x-multi", "b"))
    assert second.plain_http and second.skip_verify and second.capabilities == {"pull"}
    assert second.explicit
    assert third.api_root == "/v2/hub" and third.url == "https://proxy.internal/v2/hub"
    described = config.to_dict()
    assert described["mirrors"][0]["headers"] == ["x-multi", "x-team"]  # names, not values


def test_defaults_without_server_and_capabilities() -> None:
    config = parse_hosts_toml('[host."mirror.local:5000"]\n', path=FILE, host="docker.io")
    assert config.server.host == "registry-1.docker.io"
    (mirror,) = config.mirrors
    assert mirror.scheme == "https" and not mirror.explicit
    assert mirror.capabilities == {"pull", "resolve", "push"}
    assert mirror.api_root == "/v2"


def test_path_without_override_gets_v2_appended() -> None:
    config = _hosts('[host."https://mirror.local/cache"]\n')
    assert config.mirrors[0].api_root == "/cache/v2"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("server = [", "not valid TOML"),
        ('sever = "https://x"', "sever"),
        ('server = "ftp://x"', "server"),
        ('server = "https://user:pw@x"', "server"),
        ('capabilities = ["pull", "fly"]', "capabilities"),
        ('capabilities = "pull"', "capabilities"),
        ("skip_verify = 'yes'", "skip_verify"),
        ("ca = 3", "ca"),
        ("client = [[1, 2]]", "client"),
        ('dial_timeout = "soon"', "dial_timeout"),
        ('dial_timeout = "5"', "dial_timeout"),
        ('[host."https://m"]\ncapabilites = ["pull"]', 'host."https://m".capabilites'),
        ('[host."https://m".header]\nAuthorization = "Bearer x"', "Authorization"),
        ('[host."https://m".header]\nx-a = "a\\nb"', "x-a"),
        ('[host."https://m"]\noverride_path = true', "override_path"),
        ('host = "https://m"', "host"),
    ],
)
def test_malformed_hosts_toml_names_file_and_key(text: str, key: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        _hosts(text)
    assert FILE in info.value.message
    assert key in info.value.message


def test_registries_conf_mirrors() -> None:
    conf = "/etc/containers/registries.conf"
    entries = parse_registries_conf(
        """
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "registry.example.com"
location = "registry.example.com"
insecure = false

[[registry.mirror]]
location = "cache.local:5000"
insecure = true

[[registry.mirror]]
location = "digest-only.local"
pull-from-mirror = "digest-only"

[[registry]]
prefix = "quay.io/team"
location = "quay.io/team"

[[registry]]
location = "blocked.example.com"
blocked = true
""",
        path=conf,
    )
    assert [e.prefix for e in entries] == [
        "registry.example.com",
        "quay.io/team",
        "blocked.example.com",
    ]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[[registry]]\nlocation = 'x'\nmirrors = []", "registry[0].mirrors"),
        ("[[registry]]\nlocation = 'x'\n[[registry.mirror]]\nlocation = 'a/b'", "location"),
        (
            "[[registry]]\nlocation = 'x'\n[[registry.mirror]]\nlocation = 'a'\n"
            "pull-from-mirror = 'some'",
            "pull-from-mirror",
        ),
        ("[[registry]]\ninsecure = true", "registry[0]"),
        ("[registries.search]\nregistries = []", "registries"),
        ("colour = 1", "colour"),
    ],
)
def test_malformed_registries_conf(text: str, key: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_registries_conf(text, path="/r.conf")
    assert "/r.conf" in info.value.message and key in info.value.message


# ------------------------------------------------------------------ search path


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_first_directory_with_the_host_wins_then_default(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    _write(second / "localhost:5000" / "hosts.toml", '[host."https://second"]\n')
    _write(first / "_default" / "hosts.toml", '[host."https://default"]\n')
    _write(second / "other:1" / "hosts.toml", '[host."https://other"]\n')
    resolver = HostsResolver([first, second], env={})
    # the first directory has only _default: it decides, before the second's exact match
    assert resolver.lookup("localhost:5000").mirrors[0].host == "default"
    assert resolver.lookup("other:1").mirrors[0].host == "default"
    only_second = HostsResolver([second], env={})
    assert only_second.lookup("localhost:5000").mirrors[0].host == "second"
    assert not only_second.lookup("unknown.example").configured


def test_exact_host_beats_default_in_the_same_directory(tmp_path: Path) -> None:
    _write(tmp_path / "_default" / "hosts.toml", '[host."https://default"]\n')
    _write(tmp_path / "docker.io" / "hosts.toml", '[host."https://hub-cache"]\n')
    resolver = HostsResolver([tmp_path], env={})
    assert resolver.lookup("index.docker.io").mirrors[0].host == "hub-cache"
    assert resolver.lookup("quay.io").mirrors[0].host == "default"
    server = resolver.lookup("quay.io").server
    assert server.url == default_server("quay.io").url and not server.explicit


def test_environment_replaces_the_search_path(tmp_path: Path) -> None:
    env = {"MODELREG_HOSTS_DIR": "", "MODELREG_REGISTRIES_CONF": ""}
    resolver = HostsResolver(env=env)
    assert resolver.dirs == () and resolver.registries_conf is None
    default = HostsResolver(env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert default.dirs == (
        tmp_path / "modelreg" / "certs.d",
        Path("/etc/containerd/certs.d"),
    )
    assert default.registries_conf == Path("/etc/containers/registries.conf")
    _write(tmp_path / "containers" / "registries.conf", "")
    user = HostsResolver(env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert user.registries_conf == tmp_path / "containers" / "registries.conf"
    # an explicit --hosts-dir is the whole configuration
    assert HostsResolver([tmp_path], env={}).registries_conf is None


def test_registries_conf_applies_when_no_hosts_toml(tmp_path: Path) -> None:
    conf = _write(
        tmp_path / "registries.conf",
        '[[registry]]\nlocation = "reg.example"\n[[registry.mirror]]\nlocation = "m:1"\n'
        '[[registry]]\nlocation = "bad.example"\nblocked = true\n'
        '[[registry]]\nprefix = "ns.example/team"\nlocation = "ns.example/team"\n',
    )
    _write(tmp_path / "d" / "reg.example" / "hosts.toml", "")
    resolver = HostsResolver([tmp_path / "d"], registries_conf=str(conf), env={})
    assert resolver.lookup("reg.example").mirrors == ()  # hosts.toml decided
    nodir = HostsResolver([], registries_conf=str(conf), env={})
    assert [m.host for m in nodir.lookup("reg.example").mirrors] == ["m:1"]
    assert nodir.lookup("bad.example").blocked
    namespaced = nodir.lookup("ns.example")
    assert not namespaced.configured and "namespace" in namespaced.notes[0]


def test_unreadable_or_huge_file_is_an_error(tmp_path: Path) -> None:
    big = _write(tmp_path / "h" / "x.example" / "hosts.toml", "#" * (1024 * 1024 + 10))
    with pytest.raises(InvalidInputError, match=str(big)):
        HostsResolver([tmp_path / "h"], env={}).lookup("x.example")
    _write(tmp_path / "u" / "x.example" / "hosts.toml", "")
    (tmp_path / "u" / "x.example" / "hosts.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(InvalidInputError, match="UTF-8"):
        HostsResolver([tmp_path / "u"], env={}).lookup("x.example")
