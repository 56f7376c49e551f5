"""A store blob that no longer matches its digest (SECURITY.md case 28).

Two ways it happens: bytes flipped on disk, and a file pulled with ``--link`` edited
in place (the output file and the store blob are one inode). The store must never
serve it: a read moves it into ``quarantine/`` and raises CorruptCacheError naming
the digest; ``modelreg cache verify`` finds it before anyone reads, and
``--repair --from`` fetches it again from a real Distribution registry.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from modelreg_cli.main import app
from typer.testing import CliRunner

from modelreg import settings
from modelreg.client import Client, RemoteOptions
from modelreg.content.layout import LayoutStore
from modelreg.errors import CorruptCacheError, IntegrityError
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from tests.integration.registry_server import RegistryServer, start_registry

runner = CliRunner()
WEIGHTS = b"\x01\x02\x03\x04" * 40_000


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with start_registry(tmp_path_factory.mktemp("corrupt-store-registry")) as server:
        yield server


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    root.mkdir()
    (root / "weights.bin").write_bytes(WEIGHTS)
    (root / "config.json").write_text('{"architectures": ["X"]}')
    return root


@pytest.fixture
def pushed(model: Path, registry: RegistryServer) -> str:
    """A repository of its own on the registry, holding ``model`` as v1 (the source a
    damaged blob is fetched from again)."""
    repo = f"{registry.host}/pushed/{uuid.uuid4().hex[:8]}"
    with client() as c:
        c.push(model, f"{repo}:v1")
    return repo


def client() -> Client:
    return Client(RemoteOptions(plain_http=True, fsync=False))


def store() -> LayoutStore:
    return LayoutStore(settings.store_dir())


def weights_digest() -> Digest:
    return Digest.from_bytes(WEIGHTS)


def flip_a_byte(path: Path) -> None:
    os.chmod(path, 0o600)
    with open(path, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


# --------------------------------------------------------------- the store read
def test_a_flipped_blob_is_quarantined_on_read_and_never_served(model: Path) -> None:
    with client() as c:
        c.push(model, "flip/m:v1")
    digest = weights_digest()
    path = store().blob_path(digest)
    flip_a_byte(path)
    target = store().target("flip/m")
    with (
        pytest.raises(CorruptCacheError) as caught,
        target.fetch(Descriptor("application/octet-stream", digest, len(WEIGHTS))) as r,
    ):
        r.read()
    assert caught.value.digest == str(digest)
    assert "damaged" in caught.value.message and caught.value.hint
    assert isinstance(caught.value, IntegrityError)  # exit 5, like every mismatch
    assert not path.exists(), "the damaged blob must not stay where reads find it"
    moved = Path(caught.value.quarantined or "")
    assert moved.parent == settings.store_dir() / "quarantine"
    assert moved.read_bytes() != WEIGHTS and len(moved.read_bytes()) == len(WEIGHTS)
    assert not target.exists(Descriptor("application/octet-stream", digest, len(WEIGHTS)))


def test_a_good_copy_written_meanwhile_is_not_quarantined(model: Path) -> None:
    """The rename checks the inode that was read: a writer that committed a good copy
    after the bad read is not undone."""
    with client() as c:
        c.push(model, "race/m:v1")
    layout = store()
    digest = weights_digest()
    stale = os.stat(layout.blob_path(digest))
    replacement = layout.blob_path(digest).with_suffix(".new")
    replacement.write_bytes(WEIGHTS)
    os.replace(replacement, layout.blob_path(digest))
    assert layout.quarantine(digest, read=stale) is None
    assert layout.blob_path(digest).read_bytes() == WEIGHTS


# ----------------------------------------------------------------- cache verify
def test_cache_verify_finds_flipped_bytes_and_repairs_from_the_registry(
    pushed: str, tmp_path: Path
) -> None:
    repo = pushed
    with client() as c:
        c.copy(f"{repo}:v1", "fixme/m:v1")
    digest = weights_digest()
    flip_a_byte(store().blob_path(digest))

    code, out, _ = cli("cache", "verify", "--json")
    assert code == 5, out
    doc = json.loads(out)
    assert doc["outstanding"] == [str(digest)] and not doc["clean"]
    assert doc["damaged"][0]["quarantined"].startswith(str(settings.store_dir() / "quarantine"))
    assert not store().has_blob(digest)

    # found again as outstanding (quarantined earlier, still absent) until repaired
    code, out, _ = cli("cache", "fsck", "--json")
    assert code == 5 and json.loads(out)["outstanding"] == [str(digest)]

    code, out, err = cli("cache", "verify", "--repair", "--from", repo, "--plain-http")
    assert code == 0, out + err
    assert f"the local copy of {digest} was damaged and has been repaired" in out
    assert store().blob_path(digest).read_bytes() == WEIGHTS
    with client() as c:
        c.pull("fixme/m:v1", tmp_path / "out")
    assert (tmp_path / "out" / "weights.bin").read_bytes() == WEIGHTS
    code, out, _ = cli("cache", "verify")
    assert code == 0 and "the store is sound" in out


def test_cache_verify_without_a_source_says_what_to_do(model: Path) -> None:
    with client() as c:
        c.push(model, "nosrc/m:v1")
    flip_a_byte(store().blob_path(weights_digest()))
    code, out, err = cli("cache", "verify")
    assert code == 5
    assert "damaged" in out and "--repair --from" in err
    code, _, err = cli("cache", "verify", "--repair")
    assert code == 2 and "--from" in err


def test_an_edit_through_a_link_pull_is_found_by_cache_verify(pushed: str, tmp_path: Path) -> None:
    repo = pushed
    out_dir = tmp_path / "linked"
    with client() as c:
        c.pull(f"{repo}:v1", tmp_path / "fills-the-cache", link=True)
        c.pull(f"{repo}:v1", out_dir, link=True)
    pulled = out_dir / "weights.bin"
    assert os.stat(pulled).st_ino == os.stat(store().blob_path(weights_digest())).st_ino
    flip_a_byte(pulled)  # the user edits the pulled file in place

    code, out, _ = cli("cache", "verify", "--json")
    assert code == 5 and json.loads(out)["outstanding"] == [str(weights_digest())]
    # the user's edited file is theirs: quarantine moved the store's name, not their file
    assert pulled.exists() and pulled.read_bytes() != WEIGHTS
    with client() as c:
        c.pull(f"{repo}:v1", tmp_path / "again", cache_mode="copy")
    assert (tmp_path / "again" / "weights.bin").read_bytes() == WEIGHTS
    assert store().blob_path(weights_digest()).read_bytes() == WEIGHTS


# ------------------------------------------------------- pulls (unpack's side)


def test_a_pull_from_the_registry_heals_a_damaged_cached_blob(pushed: str, tmp_path: Path) -> None:
    repo = pushed
    with client() as c:
        # the cache keeps its own copy (not only a reference to the first output)
        c.pull(f"{repo}:v1", tmp_path / "first", cache_mode="copy")
        flip_a_byte(store().blob_path(weights_digest()))
        result = c.pull(f"{repo}:v1", tmp_path / "second", cache_mode="copy")
    assert result.repaired == (str(weights_digest()),)
    assert (tmp_path / "second" / "weights.bin").read_bytes() == WEIGHTS
    assert store().blob_path(weights_digest()).read_bytes() == WEIGHTS
    assert store().quarantined()


def test_a_store_only_pull_of_a_damaged_blob_says_what_to_do(model: Path, tmp_path: Path) -> None:
    with client() as c:
        c.push(model, "only/m:v1")
    flip_a_byte(store().blob_path(weights_digest()))
    code, _, err = cli("pull", "only/m:v1", "-o", str(tmp_path / "out"))
    assert code == 5
    assert f"the local copy of {weights_digest()}" in err and "--repair --from" in err
    assert store().quarantined()


def test_link_output_is_read_only_and_a_damaged_blob_is_never_linked(
    model: Path, tmp_path: Path
) -> None:
    with client() as c:
        c.push(model, "only/m:v1")
        c.pull("only/m:v1", tmp_path / "linked", link=True)
        linked = tmp_path / "linked" / "weights.bin"
        # shares its inode with the store's blob: an edit in place would change it
        assert linked.stat().st_ino == store().blob_path(weights_digest()).stat().st_ino
        assert linked.stat().st_mode & 0o222 == 0
        flip_a_byte(store().blob_path(weights_digest()))
        with pytest.raises(CorruptCacheError):
            c.pull("only/m:v1", tmp_path / "again", link=True)
    assert not (tmp_path / "again" / "weights.bin").exists()
    assert store().quarantined()
