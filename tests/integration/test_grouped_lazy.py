"""Issue 18 item 2: files inside a small-file group are per-file citizens of the lazy
reader (``open``, ``mount``) and of model-level signatures, against a real Distribution
registry and the embedded store.

A grouped file is read with one Range request covering exactly its bytes in the
group layer and checked against its own digest (from the group's member table,
which the manifest digest covers) before anything is returned: a registry serving
other bytes, or a member table pointing at another member's bytes or past the layer,
gets an error, never data.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
import uuid
from pathlib import Path

import pytest

from modelreg.client import Client, RemoteOptions
from modelreg.errors import FormatError, IntegrityError, UnsafeContentError
from modelreg.lazy import open_model
from modelreg.model.grouping import ANN_GROUP_FILES
from tests.integration.lazy_proxy import LazyProxy
from tests.interop.peers import NO_PASSWORD, key_pair, ok, run
from tests.isolation import isolate

FILES = 40  # one bucket of 40 small files: one group (16 or more are grouped)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    isolate(tmp_path, monkeypatch)


def client_for(tmp_path: Path, name: str = "store") -> Client:
    return Client(RemoteOptions(plain_http=True, store=str(tmp_path / name), fsync=False))


def write_model(root: Path) -> Path:
    """40 small tokenizer files of different sizes (one empty, one executable), and a
    config at the root; deterministic."""
    for i in range(FILES):
        data = bytes((i * 7 + k) % 251 for k in range(i * 97))
        path = root / "tokenizer" / f"part-{i:02d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "tokenizer" / "part-05.json").chmod(0o755)
    (root / "config.json").write_bytes(b'{"model_type": "llama"}')
    return root


def group_layer(manifest: dict) -> dict:
    groups = [layer for layer in manifest["layers"] if ANN_GROUP_FILES in layer["annotations"]]
    assert len(groups) == 1
    return groups[0]


def member_rows(manifest: dict) -> list[list]:
    return json.loads(group_layer(manifest)["annotations"][ANN_GROUP_FILES])


def push(client: Client, root: Path, ref: str) -> None:
    client.push(root, ref)


def manifest_json(host: str, repo: str, tag: str) -> dict:
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    req = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{tag}", headers=accept)
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read())


def put_manifest(host: str, repo: str, tag: str, manifest: dict) -> None:
    body = json.dumps(manifest).encode()
    req = urllib.request.Request(
        f"http://{host}/v2/{repo}/manifests/{tag}",
        data=body,
        method="PUT",
        headers={"Content-Type": manifest["mediaType"]},
    )
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 201


@pytest.fixture
def pushed(registry_plain, tmp_path) -> tuple[str, Path]:
    root = write_model(tmp_path / "model")
    repo = f"grouped/{uuid.uuid4().hex[:10]}"
    with client_for(tmp_path, "push-store") as client:
        push(client, root, f"{registry_plain.host}/{repo}:v1")
    return repo, root


def test_open_lists_and_reads_grouped_files_by_range_from_the_registry(
    registry_plain, pushed, tmp_path
):
    repo, root = pushed
    with (
        LazyProxy(registry_plain.port, "pass") as proxy,
        client_for(tmp_path) as client,
        open_model(client, f"{proxy.host}/{repo}:v1") as h,
    ):
        listed = {f.path: f for f in h.files}
        assert set(listed) == {"config.json"} | {
            f"tokenizer/part-{i:02d}.json" for i in range(FILES)
        }
        for i in range(FILES):
            f = listed[f"tokenizer/part-{i:02d}.json"]
            data = (root / f.path).read_bytes()
            assert f.grouped and f.size == len(data)
            assert f.digest.hex == hashlib.sha256(data).hexdigest()
        assert listed["tokenizer/part-05.json"].mode == 0o755
        assert not h.pull_only  # the group is no "pull it first" archive any more
        group = group_layer(manifest_json(registry_plain.host, repo, "v1"))
        proxy.reset()
        want = (root / "tokenizer/part-30.json").read_bytes()
        assert h.read("tokenizer/part-30.json") == want
        gets = [e for e in proxy.blob_requests() if group["digest"] in e.path]
        # one request, for exactly that member's bytes
        assert len(gets) == 1 and gets[0].range is not None
        assert gets[0].body_bytes == len(want)
        with h.open("tokenizer/part-07.json") as fh:
            fh.seek(100)
            assert fh.read(50) == (root / "tokenizer/part-07.json").read_bytes()[100:150]
        assert h.read("tokenizer/part-00.json") == b""  # the empty member


def test_open_reads_grouped_files_from_the_embedded_store(tmp_path):
    root = write_model(tmp_path / "model")
    with client_for(tmp_path) as client:
        push(client, root, "grouped/local:v1")
        with open_model(client, "grouped/local:v1") as h:
            grouped = [f for f in h.files if f.grouped]
            assert len(grouped) == FILES
            for f in grouped:
                assert h.read(f.path) == (root / f.path).read_bytes(), f.path


def test_flipped_member_bytes_are_refused_and_never_returned(registry_plain, pushed, tmp_path):
    repo, _ = pushed
    with LazyProxy(registry_plain.port, "flip") as proxy, client_for(tmp_path) as client:
        with open_model(client, f"{proxy.host}/{repo}:v1") as h:
            with pytest.raises(IntegrityError):
                h.read("tokenizer/part-30.json")
            buf = bytearray(b"\xaa" * 64)
            with pytest.raises(IntegrityError):
                h.readinto("tokenizer/part-30.json", 0, buf)
            assert buf == bytearray(b"\xaa" * 64) or not any(buf)  # nothing unverified
        assert proxy.flips >= 2


def test_a_table_pointing_at_another_members_bytes_fails_the_digest_check(
    registry_plain, pushed, tmp_path
):
    repo, root = pushed
    manifest = manifest_json(registry_plain.host, repo, "v1")
    rows = member_rows(manifest)
    by_path = {row[0]: k for k, row in enumerate(rows)}
    a, b = by_path["tokenizer/part-20.json"], by_path["tokenizer/part-21.json"]
    # part-20 now "starts" where part-21's data is, with part-21's size; part-21 is gone
    rows[a] = [rows[a][0], rows[b][1], rows[b][2], rows[a][3], rows[a][4]]
    del rows[b]
    group_layer(manifest)["annotations"][ANN_GROUP_FILES] = json.dumps(rows)
    put_manifest(registry_plain.host, repo, "forged", manifest)
    forged = f"{repo_ref(registry_plain, repo)}:forged"
    with client_for(tmp_path) as client, open_model(client, forged) as h:
        with pytest.raises(IntegrityError, match="part-20"):
            h.read("tokenizer/part-20.json")
        # the honest rows still read
        assert h.read("tokenizer/part-22.json") == (root / "tokenizer/part-22.json").read_bytes()


def repo_ref(registry, repo: str) -> str:
    return f"{registry.host}/{repo}"


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda rows, size: rows[-1].__setitem__(1, size), id="past-the-end"),
        pytest.param(lambda rows, size: rows[3].__setitem__(0, "../escape.json"), id="dot-dot"),
        pytest.param(lambda rows, size: rows[3].__setitem__(4, 0o120777), id="symlink-mode"),
        pytest.param(lambda rows, size: rows.append(list(rows[2])), id="listed-twice"),
        pytest.param(lambda rows, size: rows[0].__setitem__(0, "config.json"), id="collides"),
        pytest.param(lambda rows, size: rows[5].__setitem__(1, rows[4][1]), id="overlap"),
    ],
)
def test_a_hostile_member_table_is_refused_when_opening(registry_plain, pushed, tmp_path, forge):
    repo, _ = pushed
    manifest = manifest_json(registry_plain.host, repo, "v1")
    rows = member_rows(manifest)
    forge(rows, group_layer(manifest)["size"])
    group_layer(manifest)["annotations"][ANN_GROUP_FILES] = json.dumps(rows)
    tag = f"forged-{uuid.uuid4().hex[:6]}"
    put_manifest(registry_plain.host, repo, tag, manifest)
    with client_for(tmp_path) as client, pytest.raises((FormatError, UnsafeContentError)):
        open_model(client, f"{repo_ref(registry_plain, repo)}:{tag}")


def test_model_signature_lists_every_grouped_file_and_verify_dir_checks_them(
    registry_plain, pushed, tmp_path
):
    repo, _ = pushed
    ref = f"{registry_plain.host}/{repo}:v1"
    priv, pub = key_pair(tmp_path)
    ok("sign", ref, "--key", str(priv), env=NO_PASSWORD)
    out = tmp_path / "out"
    sig = out / "model.sig"
    ok("pull", ref, "-o", str(out), "--save-signature", str(sig))
    bundle = json.loads(sig.read_text())
    payload = json.loads(_dsse_payload(bundle))
    names = sorted(r["name"] for r in payload["predicate"]["resources"])
    assert names == sorted(["config.json"] + [f"tokenizer/part-{i:02d}.json" for i in range(FILES)])
    verified = run("verify", str(out), "--key", str(pub), "--signature", str(sig))
    assert verified.exit_code == 0, verified.output
    victim = out / "tokenizer" / "part-12.json"
    victim.chmod(0o644)
    victim.write_bytes(b"changed")
    assert run("verify", str(out), "--key", str(pub), "--signature", str(sig)).exit_code == 7


def _dsse_payload(bundle: dict) -> bytes:
    import base64

    return base64.b64decode(bundle["dsseEnvelope"]["payload"])


def test_mount_serves_grouped_files(registry_plain, pushed, tmp_path):
    from tests.integration.test_lazy_mount import Mounted, _fuse_available, cli

    missing = _fuse_available()
    if missing is not None:
        pytest.fail(f"{missing}; `bash .ci/install-deps` installs fuse3", pytrace=False)
    repo, root = pushed
    mp = tmp_path / "mnt"
    mp.mkdir()
    m = Mounted(f"{registry_plain.host}/{repo}:v1", mp)
    try:
        assert sorted(os.listdir(mp / "tokenizer")) == sorted(
            f"part-{i:02d}.json" for i in range(FILES)
        )
        for rel in ("tokenizer/part-33.json", "tokenizer/part-05.json", "tokenizer/part-00.json"):
            with open(mp / rel, "rb") as f:
                assert f.read() == (root / rel).read_bytes(), rel
        assert os.stat(mp / "tokenizer" / "part-05.json").st_mode & 0o111
        assert cli("umount", str(mp)).returncode == 0
        assert m.wait()[0] == 0
    finally:
        m.kill()
