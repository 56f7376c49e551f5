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
from modelreg.attest.bundle import key_bundle
from modelreg.attest.intoto import cosign_sign_statement
from modelreg.attest.keys import PrivateKey, generate_private_key, key_hint, public_key_pem
from modelreg.attest.storage import attach_bundle
from modelreg.client import Client, RemoteOptions
from modelreg.content.layout import LayoutStore
from modelreg.content.registry.target import referrers_tag
from modelreg.errors import NotFoundError
from modelreg.model.pack import ModelMetadata
from modelreg.oci.digest import Digest
from modelreg.sign import KeySigner, sign
from modelreg.verify import policy_from_options
from tests.integration.registry_server import RegistryFactory, RegistryServer
from tests.integration.sigstore_fixtures import FakeSigstore

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


SIGNED_AT = "2030-02-01T00:00:00Z"


def key_file(tmp_path: Path, name: str) -> tuple[PrivateKey, Path]:
    key = generate_private_key()
    path = tmp_path / f"{name}.pub"
    path.write_bytes(public_key_pem(key.public_key()))
    return key, path


def sign_with(c: Client, ref: str, key: PrivateKey) -> bytes:
    """Sign ``ref`` as ``modelreg sign --key`` does; the cosign signature bundle."""
    _, target, desc = c.resolve(ref)
    result = sign(target, desc, KeySigner(key), created=SIGNED_AT)
    bundle = result.bundles[0].bundle
    return bundle


def forged_for(
    c: Client, ref: str, signer: PrivateKey, posing_as: PrivateKey, created: str = SIGNED_AT
) -> None:
    """A real signature of ``ref`` by ``signer``, hinted as ``posing_as``'s key."""
    _, target, desc = c.resolve(ref)
    doc = json.loads(key_bundle(signer, cosign_sign_statement(desc.digest)))
    doc["verificationMaterial"]["publicKey"]["hint"] = key_hint(posing_as.public_key())
    attach_bundle(
        target,
        desc,
        json.dumps(doc).encode(),
        predicate_type="https://sigstore.dev/cosign/sign/v1",
        created=created,
    )


def test_retention_keeps_what_a_key_signed_and_nothing_forged(
    registry_plain: RegistryServer, tmp_path: Path
) -> None:
    """20 checkpoints: some signed with key A, some with key B, one with a junk bundle,
    one with B's signature posing as A's (A's key hint), one with A's valid bundle of
    another checkpoint replayed onto it. ``--keep-signed-by A`` keeps exactly the
    A-signed ones beside --keep-last and --keep."""
    repo = f"{registry_plain.host}/ckpt-signed/{uuid.uuid4().hex[:8]}"
    key_a, pub_a = key_file(tmp_path, "a")
    key_b, _ = key_file(tmp_path, "b")
    signed_a, signed_b, junk, forged, replayed = (2, 6, 9, 17), (4, 8, 11), 10, 12, 13
    with client() as c:
        step = {i: f"{repo}:step-{i:03d}" for i in range(20)}
        digests = [push_version(c, tmp_path, step[i], i, signatures=0) for i in range(20)]
        c.copy(step[3], f"{repo}:v1")
        bundles = {i: sign_with(c, step[i], key_a) for i in signed_a}
        for i in signed_b:
            sign_with(c, step[i], key_b)
        _, target, desc = c.resolve(step[junk])
        attach_bundle(target, desc, b'{"junk": true}', predicate_type=PREDICATE)
        forged_for(c, step[forged], key_b, posing_as=key_a)
        _, target, desc = c.resolve(step[replayed])
        attach_bundle(
            target,
            desc,
            bundles[2],
            predicate_type="https://sigstore.dev/cosign/sign/v1",
            created=SIGNED_AT,
        )
        before = sorted(c.tags(repo))

        args = ("prune", repo, "--keep-last", "5", "--keep", "v*", "--keep-signed-by", str(pub_a))
        code, out, err = cli(*args, "--dry-run", "--json")
        assert code == 0, out + err
        planned = json.loads(out)
        assert sorted(c.tags(repo)) == before, "--dry-run deleted something"
        why = {v["digest"]: v["keptBecause"] for v in planned["kept"]}
        for i in (2, 6, 9):
            assert why[digests[i]] == "signed by a.pub"
        assert why[digests[17]] == "among the newest 5"
        assert why[digests[3]] == "a tag matches --keep"
        assert planned["problems"] == []

        code, out, err = cli(*args, "--dry-run")
        assert code == 0, out + err
        assert "step-002" in out and "signed by a.pub" in out

        code, out, err = cli(*args, "--json")
        assert code == 0, out + err
        doc = json.loads(out)
        expected = {digests[i] for i in (2, 3, 6, 9, *range(15, 20))}
        assert {v["digest"] for v in doc["kept"]} == expected
        assert {v["digest"] for v in doc["removed"]} == set(digests) - expected
        assert doc["removals"] == planned["removals"]
        assert doc["problems"] == []

        names = [t for t in c.tags(repo) if not t.startswith("sha256-")]
        assert sorted(names) == sorted(
            [f"step-{i:03d}" for i in (2, 3, 6, 9, *range(15, 20))] + ["v1"]
        )
        for i in (*signed_b, junk, forged, replayed):
            with pytest.raises(NotFoundError):
                c.resolve(f"{repo}@{digests[i]}")
            assert referrers_tag_of(digests[i]) not in c.tags(repo)
        for i in (2, 6, 9, 17):  # their signatures (cosign + model-level) stay
            assert len(c.referrers(step[i])) == 2
        code, out, err = cli("verify", step[9], "--key", str(pub_a))
        assert code == 0, out + err
        assert_no_orphans(c, repo)


def test_retention_keeps_a_version_whose_signature_cannot_be_checked(
    registry_plain: RegistryServer, tmp_path: Path
) -> None:
    """Fail safe: the registry serves a tampered signature bundle, so whether the
    version is signed cannot be known; it is kept and the result says why."""
    repo = f"{registry_plain.host}/ckpt-unsure/{uuid.uuid4().hex[:8]}"
    key_a, pub_a = key_file(tmp_path, "a")
    with client() as c:
        digests = [push_version(c, tmp_path, f"{repo}:step-{i}", i, signatures=0) for i in range(3)]
        bundle = sign_with(c, f"{repo}:step-0", key_a)
        blob = Digest.from_bytes(bundle)
        on_disk = (
            registry_plain.root_dir
            / "docker/registry/v2/blobs/sha256"
            / blob.hex[:2]
            / blob.hex
            / "data"
        )
        data = on_disk.read_bytes()
        on_disk.write_bytes(data[:-2] + bytes([data[-2] ^ 1]) + data[-1:])  # same size

        policy = policy_from_options(keys=[pub_a])
        result = c.prune(repo, keep_last=1, keep_signed_by=policy)
        kept = {v.digest: v.reason for v in result.kept}
        assert kept[digests[0]] == "signatures could not be checked (kept to be safe; see problems)"
        assert [v.digest for v in result.removed] == [digests[1]]
        [problem] = result.problems
        assert "step-0" in problem and digests[0] in problem
        assert c.tags(repo) == sorted(["step-0", "step-2", referrers_tag_of(digests[0])])


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


def test_store_retention_keeps_what_a_key_signed(tmp_path: Path) -> None:
    key_a, pub_a = key_file(tmp_path, "a")
    key_b, _ = key_file(tmp_path, "b")
    with client() as c:
        digests = [
            push_version(c, tmp_path, f"local/signed:s{i}", i, signatures=0) for i in range(4)
        ]
        sign_with(c, "local/signed:s0", key_a)
        sign_with(c, "local/signed:s1", key_b)
        forged_for(c, "local/signed:s2", key_b, posing_as=key_a)
        # a flood ranked before A's real signature (A's hint, newer) hides nothing:
        # prune examines every bundle, not verify's default first 64
        for n in range(64):
            forged_for(c, "local/signed:s0", key_b, key_a, created=f"2031-01-01T00:{n:02d}:00Z")

        result = c.prune(
            "local/signed", keep_last=1, keep_signed_by=policy_from_options(keys=[pub_a])
        )
        assert {v.digest: v.reason for v in result.kept} == {
            digests[3]: "among the newest 1",
            digests[0]: "signed by a.pub",
        }
        assert {v.digest for v in result.removed} == {digests[1], digests[2]}
        assert result.deleted is not None and result.deleted.freed_blobs > 0
        assert c.tags("local/signed") == ["s0", "s3"]
        assert len(c.referrers("local/signed:s0")) == 2 + 64


def test_store_retention_keeps_what_a_keyless_identity_signed(tmp_path: Path) -> None:
    issuer, alice, bob = "https://oidc.modelreg.test", "alice@example.com", "bob@example.com"
    fake = FakeSigstore()
    root = fake.write_trusted_root(tmp_path / "trusted_root.json")
    with client() as c:
        digests = [push_version(c, tmp_path, f"local/kl:s{i}", i, signatures=0) for i in range(3)]
        for i, who in ((0, alice), (1, bob)):
            _, target, desc = c.resolve(f"local/kl:s{i}")
            statement = cosign_sign_statement(desc.digest)
            bundle = fake.keyless_bundle(statement.raw, who, issuer)
            attach_bundle(target, desc, bundle, predicate_type=statement.predicate_type)
    args = ("prune", "local/kl", "--keep-last", "1", "--keep-signed-issuer", issuer)
    code, out, err = cli(
        *args, "--keep-signed-identity", alice, "--trusted-root", str(root), "--json"
    )
    assert code == 0, out + err
    doc = json.loads(out)
    assert {v["digest"]: v["keptBecause"] for v in doc["kept"]} == {
        digests[2]: "among the newest 1",
        digests[0]: f"signed by {alice} ({issuer})",
    }
    assert [v["digest"] for v in doc["removed"]] == [digests[1]]


def test_keep_signed_flags_are_checked_before_anything_runs(tmp_path: Path) -> None:
    private = tmp_path / "a.key"
    private.write_text("-----BEGIN PRIVATE KEY-----\n")
    for extra, says in (
        (("--keep-signed-identity", "x@example.com"), "--keep-signed-issuer"),
        (("--keep-signed-issuer", "https://issuer.test"), "--keep-signed-identity"),
        (("--keep-signed-by", str(private)), "private key"),
        (("--keep-signed-by", str(tmp_path / "absent.pub")), "cannot read key"),
    ):
        code, _, err = cli("prune", "local/none", "--keep-last", "1", *extra)
        assert code == 2 and says in err, err
