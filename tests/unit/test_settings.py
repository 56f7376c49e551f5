"""Settings.from_env: every variable parsed once, bad values named; and the rule that
nothing else in modelreg/ reads the environment."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from modelreg.errors import InvalidInputError
from modelreg.settings import DEFAULT_MAX_SIGNATURE_REFERRERS, Settings

PACKAGE = Path(__file__).resolve().parents[2] / "modelreg"

# Modules that may read the process environment, and why (modelreg/settings.py says more).
BOUNDARY = {
    "settings.py": "the one place that parses the environment",
    "attest/keys.py": "key passphrases: a secret, read when the key is opened",
    "sign/_keyless.py": "SIGSTORE_ID_TOKEN: a secret, read when signing",
    "content/registry/credentials.py": "docker/podman credentials and helpers: secrets",
    "content/registry/hosts.py": "hosts.toml search path: moves to Settings after the "
    "mirrors work lands",
}
READS_ENV = re.compile(r"\bos\.environ\b|\bgetenv\b|\benviron\.get\b|\bputenv\b")


def test_nothing_outside_the_boundary_reads_the_environment() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name in BOUNDARY:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if READS_ENV.search(line.split("#", 1)[0]):
                offenders.append(f"modelreg/{name}:{number}: {line.strip()}")
    assert not offenders, (
        "read the environment in Settings.from_env (modelreg/settings.py) and pass the "
        "value down:\n" + "\n".join(offenders)
    )


def test_the_boundary_list_names_real_files() -> None:
    assert all((PACKAGE / name).is_file() for name in BOUNDARY)


def test_defaults_when_nothing_is_set(tmp_path: Path) -> None:
    s = Settings.from_env({"MODELREG_HOME": str(tmp_path)})
    assert s.home == tmp_path
    assert s.store_dir == tmp_path / "store"
    assert (s.hosts_dirs, s.registries_conf, s.chunk_cache_max) == (None, None, None)
    assert s.max_signature_referrers == DEFAULT_MAX_SIGNATURE_REFERRERS
    assert (s.timeout, s.document_deadline, s.min_throughput, s.throughput_window) == (
        60.0,
        None,
        1024.0,
        30.0,
    )
    assert (s.fsync, s.cache_mode, s.source_date_epoch) == (True, None, None)


def test_every_variable_is_parsed(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "MODELREG_HOME": str(tmp_path),
            "MODELREG_HOSTS_DIR": "/a:/b",
            "MODELREG_REGISTRIES_CONF": "",
            "MODELREG_CHUNK_CACHE_MAX": "1MiB",
            "MODELREG_MAX_SIGNATURE_REFERRERS": "16",
            "MODELREG_TIMEOUT": "7.5",
            "MODELREG_DOCUMENT_DEADLINE": "90",
            "MODELREG_MIN_THROUGHPUT": "2048",
            "MODELREG_THROUGHPUT_WINDOW": " 10 ",
            "MODELREG_FSYNC": "0",
            "MODELREG_CACHE_MODE": "Copy",
            "SOURCE_DATE_EPOCH": "86400",
        }
    )
    assert s.hosts_dirs == ("/a", "/b")
    assert s.registries_conf == ""
    assert s.chunk_cache_max == 1024 * 1024
    assert s.max_signature_referrers == 16
    assert (s.timeout, s.document_deadline, s.min_throughput, s.throughput_window) == (
        7.5,
        90.0,
        2048.0,
        10.0,
    )
    assert (s.fsync, s.cache_mode) == (False, "copy")
    assert s.now() == dt.datetime(1970, 1, 2, tzinfo=dt.UTC)


def test_empty_hosts_dir_means_none() -> None:
    assert Settings.from_env({"MODELREG_HOSTS_DIR": ""}).hosts_dirs == ()


def test_home_falls_back_to_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.platform", "linux")
    assert Settings.from_env({"XDG_DATA_HOME": str(tmp_path)}).home == tmp_path / "modelreg"


@pytest.mark.parametrize(
    ("name", "value", "form"),
    [
        ("MODELREG_TIMEOUT", "soon", "a positive number of seconds"),
        ("MODELREG_TIMEOUT", "-1", "a positive number of seconds"),
        ("MODELREG_TIMEOUT", "inf", "a positive number of seconds"),
        ("MODELREG_DOCUMENT_DEADLINE", "0", "a positive number of seconds"),
        ("MODELREG_MIN_THROUGHPUT", "nan", "a positive number of bytes per second"),
        ("MODELREG_THROUGHPUT_WINDOW", "x", "a positive number of seconds"),
        ("MODELREG_MAX_SIGNATURE_REFERRERS", "0", "a whole number of at least 1"),
        ("MODELREG_MAX_SIGNATURE_REFERRERS", "1.5", "a whole number of at least 1"),
        ("MODELREG_FSYNC", "maybe", "0 or 1"),
        ("MODELREG_CHUNK_CACHE_MAX", "lots", "MODELREG_CHUNK_CACHE_MAX"),
        ("MODELREG_CACHE_MODE", "hardlink", "is not one of auto, copy, reference"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_form(name: str, value: str, form: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        Settings.from_env({name: value})
    assert name in str(caught.value.message)
    assert form in caught.value.message
    assert caught.value.exit_code == 2


def test_a_malformed_source_date_epoch_is_ignored() -> None:
    # reproducible-builds tooling sets it for every step; a bad one means "no epoch"
    assert Settings.from_env({"SOURCE_DATE_EPOCH": "yesterday"}).source_date_epoch is None


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    with pytest.raises(AttributeError):
        s.timeout = 1.0  # type: ignore[misc]
