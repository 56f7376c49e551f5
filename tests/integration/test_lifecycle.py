"""Deleting and retaining model versions (``modelreg rm``, ``modelreg prune``) against a
real Distribution 2.8 registry, with deletes enabled and disabled, and in the store.

Distribution 2.8 has no referrers API: signatures live in the tag-schema fallback
index (``sha256-<hex>``), which these tests check stays true: every remaining
referrer's subject exists, and ``tags`` and ``referrers`` agree.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from modelreg_cli.main import app
from typer.testing import CliRunner

from modelreg import settings
from modelreg.attest.storage import attach_bundle
from modelreg.client import Client, RemoteOptions
from modelreg.content.layout import LayoutStore
from modelreg.content.registry.target import referrers_tag
from modelreg.errors import NotFoundError
from modelreg.model.pack import ModelMetadata
from modelreg.oci.digest import Digest
from tests.integration.registry_server import RegistryFactory, RegistryServer

runner = CliRunner()
PREDICATE = "https://modelreg.dev/test/v1"


def client() -> Client:
    return Client(RemoteOptions(plain_http=True, fsync=False))


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def push_version(c: Client, tmp_path: Path, ref: str, step: int, *, signatures: int = 1) -> str:
    root = tmp_path / f"ckpt-{step}"
    root.mkdir(exist_ok=True)
    (root / "weights.bin").write_bytes(step.to_bytes(4, "big") * 64)
    (root / "config.json").write_text('{"architectures": ["X"]}')
    created = f"2030-01-01T{step:02d}:00:00Z"
    # no chunk index referrer: these tests count signatures among the referrers
    c.push(root, ref, metadata=ModelMetadata(created_at=created), chunk_index=False)
    _, target, desc = c.resolve(ref)
    for n in range(signatures):
        bundle = json.dumps({"signature": n, "step": step}).encode()
        attach_bundle(target, desc, bundle, predicate_type=PREDICATE)
    return str(desc.digest)


def assert_no_orphans(c: Client, repo: str) -> None:
    """Every fallback index names an existing subject; each entry exists; tags and
    referrers agree."""
    tags = c.tags(repo)
    target = c.target(repo, create=False)
    for tag in tags:
        if not tag.startswith("sha256-"):
            continue
        subject = "sha256:" + tag.removeprefix("sha256-")
        _, _, subject_desc = c.resolve(f"{repo}@{subject}")  # raises if orphaned
        for referrer in target.referrers(subject_desc):
            target.resolve(str(referrer.digest))
    for tag in tags:
        if tag.startswith("sha256-"):
            continue
        _, _, desc = c.resolve(f"{repo}:{tag}")
        has_index = referrers_tag(desc.digest) in tags
        assert bool(target.referrers(desc)) == has_index


# ------------------------------------------------------------------ retention
def test_retention_over_20_signed_checkpoints(
    registry_plain: RegistryServer, tmp_path: Path
) -> None:
    repo = f"{registry_plain.host}/ckpt/{uuid.uuid4().hex[:8]}"
    with client() as c:
        digests = [push_version(c, tmp_path, f"{repo}:step-{i:03d}", i) for i in range(20)]
        c.copy(f"{repo}:step-003", f"{repo}:v1")  # a release among the checkpoints
        before = sorted(c.tags(repo))

        code, out, err = cli(
            "prune", repo, "--keep-last", "5", "--keep", "v*", "--dry-run", "--json"
        )
        assert code == 0, out + err
        planned = json.loads(out)
        assert sorted(c.tags(repo)) == before, "--dry-run deleted something"
        assert len(planned["removed"]) == 14

        code, out, err = cli("prune", repo, "--keep-last", "5", "--keep", "v*", "--json")
        assert code == 0, out + err
        doc = json.loads(out)
        kept = {v["digest"] for v in doc["kept"]}
        assert kept == set(digests[15:]) | {digests[3]}
        assert {v["digest"] for v in doc["removed"]} == set(digests) - kept
        assert doc["removals"] == planned["removals"]

        names = [t for t in c.tags(repo) if not t.startswith("sha256-")]
        assert sorted(names) == sorted([f"step-{i:03d}" for i in (3, 15, 16, 17, 18, 19)] + ["v1"])
        for digest in set(digests) - kept:
            with pytest.raises(NotFoundError):
                c.resolve(f"{repo}@{digest}")
            assert referrers_tag_of(digest) not in c.tags(repo)
        for digest in kept:
            assert len(c.referrers(f"{repo}@{digest}")) == 1
        assert_no_orphans(c, repo)


def referrers_tag_of(digest: str) -> str:
    return digest.replace(":", "-")


# ------------------------------------------------------------------- rm, registry
def test_rm_with_referrers_removes_manifest_signatures_and_index(
    registry_plain: RegistryServer, tmp_path: Path
) -> None:
    repo = f"{registry_plain.host}/rm/{uuid.uuid4().hex[:8]}"
    with client() as c:
        digest = push_version(c, tmp_path, f"{repo}:v1", 1, signatures=2)
        push_version(c, tmp_path, f"{repo}:v2", 2)
        code, out, _ = cli("rm", f"{repo}:v1", "--referrers", "--dry-run", "--json")
        assert code == 0
        kinds = sorted(r["kind"] for r in json.loads(out)[0]["removed"])
        assert kinds == ["manifest", "referrer", "referrer", "referrers-index", "tag"]
        assert "v1" in c.tags(repo)

        code, out, err = cli("rm", f"{repo}:v1", "--referrers")
        assert code == 0, out + err
        assert "removed referrer" in out and "removed referrers-index" in out
        tags = c.tags(repo)
        assert "v1" not in tags and referrers_tag_of(digest) not in tags and "v2" in tags
        with pytest.raises(NotFoundError):
            c.resolve(f"{repo}@{digest}")
        assert_no_orphans(c, repo)


def test_rm_of_one_signature_takes_it_out_of_the_fallback_index(
    registry_plain: RegistryServer, tmp_path: Path
) -> None:
    repo = f"{registry_plain.host}/rm-sig/{uuid.uuid4().hex[:8]}"
    with client() as c:
        push_version(c, tmp_path, f"{repo}:v1", 1, signatures=2)
        first, second = c.referrers(f"{repo}:v1")
        code, out, err = cli("rm", f"{repo}@{first.digest}")
        assert code == 0, out + err
        assert [d.digest for d in c.referrers(f"{repo}:v1")] == [second.digest]
        code, _, _ = cli("rm", f"{repo}@{second.digest}")
        assert code == 0
        assert c.referrers(f"{repo}:v1") == []
        assert not [t for t in c.tags(repo) if t.startswith("sha256-")], "empty index left"
        assert_no_orphans(c, repo)


def test_a_registry_with_deletes_disabled_names_the_setting(
    registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    server = registry_factory(extra_config={"storage": {"delete": {"enabled": False}}})
    repo = f"{server.host}/nodelete/m"
    with client() as c:
        push_version(c, tmp_path, f"{repo}:v1", 1, signatures=0)
    code, _, err = cli("rm", f"{repo}:v1")
    assert code == 6
    assert "storage.delete.enabled" in err
    code, _, err = cli("prune", repo, "--keep-last", "0", "--json")
    assert code == 6 and "storage.delete.enabled" in err
    with client() as c:
        assert c.tags(repo) == ["v1"]


# ------------------------------------------------------------------- the store
def test_rm_from_the_store_frees_its_blobs(tmp_path: Path) -> None:
    with client() as c:
        digest = push_version(c, tmp_path, "local/m:v1", 7)
        push_version(c, tmp_path, "local/m:v2", 8, signatures=0)
        store = LayoutStore(settings.store_dir())
        weights = store.blob_path(Digest.from_bytes((7).to_bytes(4, "big") * 64))
        assert weights.exists()
        result = c.delete("local/m:v1", referrers=True)
        assert result.freed_blobs >= 3 and not weights.exists()
        assert c.tags("local/m") == ["v2"]
        assert not [e for e in store.entries() if str(e.digest) == digest]
        assert all(not c.referrers(f"local/m:{t}") for t in c.tags("local/m"))
        retained = c.prune("local/m", keep_last=0, dry_run=True)
        assert [v.tags for v in retained.removed] == [("v2",)]
        push_version(c, tmp_path, "local/m:v3", 9)
    code, out, _ = cli("list", "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert sorted(rows) == ["local/m:v2", "local/m:v3"]
    assert rows["local/m:v2"]["created"] == "2030-01-01T08:00:00Z"
    assert not rows["local/m:v2"]["signed"] and rows["local/m:v3"]["signed"]
    assert rows["local/m:v2"]["size"] > 256
    code, out, _ = cli("list")
    assert code == 0 and "signed" in out and "2030-01-01T09:00:00Z" in out
