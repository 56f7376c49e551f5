"""Pull cache modes against a real Distribution registry: what the cache keeps of
what it lacked (``copy``, ``reference``, ``auto``) and reuse of remembered output
files, verified byte by byte."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from modelreg_cli.main import app
from typer.testing import CliRunner

from modelreg import settings
from modelreg.client import Client, PullResult, RemoteOptions
from modelreg.content.copies import Copies
from modelreg.content.layout import LayoutStore
from modelreg.errors import InvalidInputError
from modelreg.model.unpack._blockio import reflinks
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from tests.integration.helpers import checkpoint

runner = CliRunner()
MIB = 1024 * 1024
PART_MEDIA_TYPE = "application/vnd.modelreg.weight.part.v1.raw"


@pytest.fixture
def model(tmp_path) -> Path:
    """Two weight files above the 4 MiB block (written by the overlapping writer) and
    small files; the two small JSON files have the same bytes (one blob, two files)."""
    root = tmp_path / "model"
    (root / "tok").mkdir(parents=True)
    (root / "weights-a.bin").write_bytes(os.urandom(9 * MIB + 5))
    (root / "weights-b.bin").write_bytes(os.urandom(5 * MIB + 3))
    (root / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (root / "tok" / "tokenizer.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    return root


def client(fsync: bool = False) -> Client:
    return Client(RemoteOptions(plain_http=True, fsync=fsync))


def push(host: str, root: Path, tag: str = "v1", repo: str | None = None, **kwargs) -> str:
    repo = repo or f"{host}/cache-modes/{uuid.uuid4().hex[:10]}"
    with client() as c:
        c.push(root, f"{repo}:{tag}", **kwargs)
    return repo


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def layer_digests(c: Client, ref: str) -> list[Digest]:
    return [layer.digest for layer in c.inspect(ref).manifest.layers]


def store() -> LayoutStore:
    return LayoutStore(settings.store_dir())


def wchar() -> int:
    """Bytes this process has passed to write-like system calls (every thread)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


def pull(c: Client, ref: str, out: Path, **kwargs) -> tuple[PullResult, int]:
    """Pull; also the bytes received from the registry, counted by the connection."""
    host = ref.split("/")[0]
    before = c.registry(host).stats.bytes_received
    result = c.pull(ref, out, **kwargs)
    return result, c.registry(host).stats.bytes_received - before


def remembered(digest: Digest, size: int) -> list[str]:
    with Copies(settings.state_dir() / "copies.sqlite") as copies:
        return [c.path for c in copies.candidates(str(digest), size)]


def test_reference_mode_writes_each_byte_once_and_the_store_gains_no_blob(
    registry_plain, model, tmp_path
):
    repo = push(registry_plain.host, model)
    total = sum(len(b) for b in files_of(model).values()) - len(
        (model / "config.json").read_bytes()
    )  # the two equal JSON files are one blob
    out = tmp_path / "out"
    with client(fsync=True) as c:
        layers = layer_digests(c, f"{repo}:v1")
        before = wchar()
        result, received = pull(c, f"{repo}:v1", out, cache_mode="reference")
        written = wchar() - before
    assert files_of(out) == files_of(model)
    assert os.stat(out / "run.sh").st_mode & 0o777 == 0o755
    assert result.bytes_fetched == total and result.bytes_from_cache == 0
    assert received >= total
    # one write of every byte, no second copy (the small duplicate JSON file may be copied
    # by sendfile, which is not counted)
    file_bytes = sum(len(b) for b in files_of(model).values())
    assert file_bytes - 4096 <= written < file_bytes + MIB
    assert not any(store().has_blob(d) for d in layers)
    weights = next(f for f in result.files if f["path"] == "weights-a.bin")
    assert remembered(Digest.parse(weights["digest"]), weights["size"]) == [
        str((out / "weights-a.bin").resolve())
    ]
    assert not [p for p in os.listdir(out) if p.startswith(".modelreg")]


def test_second_pull_reuses_the_first_output_and_fetches_nothing(registry_plain, model, tmp_path):
    repo = push(registry_plain.host, model)
    with client() as c:
        first, _ = pull(c, f"{repo}:v1", tmp_path / "out1", cache_mode="reference")
        second, received = pull(c, f"{repo}:v1", tmp_path / "out2", cache_mode="reference")
        layers = layer_digests(c, f"{repo}:v1")
    assert second.bytes_fetched == 0 and received < 64 * 1024  # the manifest, no blob
    assert second.bytes_from_cache == first.bytes_fetched
    assert files_of(tmp_path / "out2") == files_of(model)
    assert os.stat(tmp_path / "out2" / "run.sh").st_mode & 0o777 == 0o755
    assert not any(store().has_blob(d) for d in layers)
    # both outputs are remembered now: removing the first still leaves a copy
    weights = next(f for f in second.files if f["path"] == "weights-a.bin")
    assert set(remembered(Digest.parse(weights["digest"]), weights["size"])) == {
        str((tmp_path / "out1" / "weights-a.bin").resolve()),
        str((tmp_path / "out2" / "weights-a.bin").resolve()),
    }


def _edit_same_size(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a visibly new mtime


def _edit_keeping_mtime(path: Path) -> None:
    st = path.stat()
    with open(path, "r+b") as f:  # the last byte: the mismatch shows only at the end of the copy
        f.seek(st.st_size - 1)
        last = f.read(1)
        f.seek(st.st_size - 1)
        f.write(bytes([last[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
    )


@pytest.mark.parametrize("change", ["edited", "deleted", "edited-same-mtime"])
def test_a_changed_first_output_is_fetched_again(registry_plain, model, tmp_path, change):
    repo = push(registry_plain.host, model)
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    weights = model / "weights-a.bin"
    size = weights.stat().st_size
    with client() as c:
        pull(c, f"{repo}:v1", out1, cache_mode="reference")
        digest = Digest.from_bytes(weights.read_bytes())
        assert remembered(digest, size) == [str((out1 / "weights-a.bin").resolve())]
        if change == "edited":
            _edit_same_size(out1 / "weights-a.bin")
        elif change == "deleted":
            (out1 / "weights-a.bin").unlink()
        else:
            _edit_keeping_mtime(out1 / "weights-a.bin")
        second, received = pull(c, f"{repo}:v1", out2, cache_mode="reference")
    # only that blob travels again; the others come from the first output
    assert second.bytes_fetched == size
    assert received >= size
    assert second.bytes_from_cache == sum(f["size"] for f in second.files) - size - len(
        (model / "config.json").read_bytes()
    )
    assert files_of(out2) == files_of(model)
    assert not [p for p in os.listdir(out2) if p.startswith(".modelreg")]
    # the stale entry is forgotten; the new output is remembered instead
    assert remembered(digest, size) == [str((out2 / "weights-a.bin").resolve())]


def _split_versions(host: str, tmp_path: Path, changed: frozenset[int]) -> tuple[Path, Path, str]:
    """v1 and a v2 differing in the ``changed`` tensors, both pushed split into 64 KiB
    parts to one new repository: (v1 tree, v2 tree, repository)."""
    v1 = checkpoint(tmp_path / "v1")
    v2 = checkpoint(tmp_path / "v2", changed=changed)
    repo = push(host, v1, "v1", split=True, part_size="64KiB")
    push(host, v2, "v2", repo=repo, split=True, part_size="64KiB")
    return v1, v2, repo


def _layers(c: Client, ref: str) -> dict[Digest, Descriptor]:
    return {layer.digest: layer for layer in c.inspect(ref).manifest.layers}


@pytest.mark.parametrize("mode", ["reference", "copy"])
def test_split_v2_after_v1_fetches_only_the_changed_parts(registry_plain, tmp_path, mode):
    v1, v2, repo = _split_versions(registry_plain.host, tmp_path, frozenset({3, 20, 41}))
    with client() as c:
        layers1 = _layers(c, f"{repo}:v1")
        layers2 = _layers(c, f"{repo}:v2")
        pull(c, f"{repo}:v1", tmp_path / "out-v1", cache_mode="reference")
        assert not any(store().has_blob(d) for d in layers1)
        second, received = pull(c, f"{repo}:v2", tmp_path / "out-v2", cache_mode=mode)
    parts2 = [d for d, layer in layers2.items() if layer.media_type == PART_MEDIA_TYPE]
    assert len(parts2) > 10
    new = [d for d in layers2 if d not in layers1]
    assert new and all(layers2[d].media_type == PART_MEDIA_TYPE for d in new)
    changed = sum(layers2[d].size for d in new)
    assert second.bytes_fetched == changed
    assert changed <= received < changed + 64 * 1024
    assert second.bytes_from_cache == sum(layer.size for layer in layers2.values()) - changed
    assert files_of(tmp_path / "out-v1") == files_of(v1)
    assert files_of(tmp_path / "out-v2") == files_of(v2)
    s = store()
    if mode == "copy":  # every part of v2 is in the store now: reused or fetched
        assert all(s.has_blob(d) for d in parts2)
    else:
        assert not any(s.has_blob(d) for d in layers2)
        # v2's parts are remembered as ranges of the reassembled v2 file
        d = parts2[len(parts2) // 2]
        assert str((tmp_path / "out-v2" / "model.safetensors").resolve()) in remembered(
            d, layers2[d].size
        )


def test_copy_mode_keeps_blobs_in_the_store(registry_plain, model, tmp_path):
    repo = push(registry_plain.host, model)
    with client() as c:
        layers = layer_digests(c, f"{repo}:v1")
        first, _ = pull(c, f"{repo}:v1", tmp_path / "out1", cache_mode="copy")
        assert all(store().has_blob(d) for d in layers)
        assert first.bytes_fetched > 14 * MIB
        # the store alone serves the next pull: the first output may go
        for p in (tmp_path / "out1").iterdir():
            if p.is_file():
                p.unlink()
        second, received = pull(c, f"{repo}:v1", tmp_path / "out2", cache_mode="copy")
    assert second.bytes_fetched == 0 and received < 64 * 1024
    assert files_of(tmp_path / "out2") == files_of(model)
    # copy mode remembers no output file
    assert all(remembered(Digest.parse(f["digest"]), f["size"]) == [] for f in second.files)


def test_auto_mode_reflinks_where_it_can_else_remembers(registry_plain, model, tmp_path):
    """On this machine's filesystem: a reflink into the store when the filesystem clones
    files (then nothing is remembered), else the same as ``reference``. The other branch
    is unit-tested with a clone that succeeds (tests/unit/model/test_copies.py)."""
    repo = push(registry_plain.host, model)
    out = tmp_path / "out"
    out.mkdir()
    can_clone = reflinks(out, store())
    with client() as c:
        layers = layer_digests(c, f"{repo}:v1")
        first, _ = pull(c, f"{repo}:v1", out)  # auto is the default
        second, received = pull(c, f"{repo}:v1", tmp_path / "out2")
    assert files_of(out) == files_of(model) == files_of(tmp_path / "out2")
    assert second.bytes_fetched == 0 and received < 64 * 1024
    weights = next(f for f in first.files if f["path"] == "weights-a.bin")
    if can_clone:
        assert all(store().has_blob(d) for d in layers)
        assert remembered(Digest.parse(weights["digest"]), weights["size"]) == []
    else:
        assert not any(store().has_blob(d) for d in layers)
        assert str((out / "weights-a.bin").resolve()) in remembered(
            Digest.parse(weights["digest"]), weights["size"]
        )


def test_no_cache_neither_reads_nor_records_copies(registry_plain, model, tmp_path):
    repo = push(registry_plain.host, model)
    with client() as c:
        pull(c, f"{repo}:v1", tmp_path / "out1", cache_mode="reference")
        again, _ = pull(c, f"{repo}:v1", tmp_path / "out2", cache=False)
    assert again.bytes_fetched == sum(f["size"] for f in again.files) - len(
        (model / "config.json").read_bytes()
    )
    weights = next(f for f in again.files if f["path"] == "weights-a.bin")
    assert remembered(Digest.parse(weights["digest"]), weights["size"]) == [
        str((tmp_path / "out1" / "weights-a.bin").resolve())
    ]


def test_link_needs_a_cache_copy(registry_plain, model, tmp_path):
    repo = push(registry_plain.host, model)
    with client() as c:
        with pytest.raises(InvalidInputError, match="reference"):
            c.pull(f"{repo}:v1", tmp_path / "bad", link=True, cache_mode="reference")
        assert not (tmp_path / "bad").exists()
        c.pull(f"{repo}:v1", tmp_path / "out1", link=True)  # auto + link: a real copy
        layers = layer_digests(c, f"{repo}:v1")
        assert all(store().has_blob(d) for d in layers)
        c.pull(f"{repo}:v1", tmp_path / "out2", link=True)
    blob = store().blob_path(Digest.from_bytes((model / "weights-a.bin").read_bytes()))
    assert os.stat(tmp_path / "out2" / "weights-a.bin").st_ino == os.stat(blob).st_ino


# ------------------------------------------------------------------------ CLI


def cli(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env)


def test_cli_flag_and_environment_variable(registry_plain, model, tmp_path):
    repo = push(registry_plain.host, model)
    ref = f"{repo}:v1"
    with client() as c:
        layers = layer_digests(c, ref)
    result = cli("pull", ref, "-o", str(tmp_path / "a"), "--cache-mode", "reference", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["bytesFetched"] > 14 * MIB and doc["bytesFromCache"] == 0
    assert not any(store().has_blob(d) for d in layers)
    # the variable is the default: copy puts the blobs in the store; reused bytes are "from cache"
    result = cli(
        "pull", ref, "-o", str(tmp_path / "b"), "--json", env={"MODELREG_CACHE_MODE": "copy"}
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["bytesFetched"] == 0 and doc["bytesFromCache"] > 14 * MIB
    assert all(store().has_blob(d) for d in layers)
    assert files_of(tmp_path / "b") == files_of(model)
    # the flag wins over the variable: 'reference' keeps nothing new in the store although
    # the variable says 'copy' (a variable that does not parse fails on its own, before any
    # work: test_cli_bad_cache_mode_is_a_clear_error)
    for d in layers:
        store().blob_path(d).unlink(missing_ok=True)
    result = cli(
        "pull",
        ref,
        "-o",
        str(tmp_path / "c"),
        "--cache-mode",
        "reference",
        "--json",
        env={"MODELREG_CACHE_MODE": "copy"},
    )
    assert result.exit_code == 0, result.output
    assert not any(store().has_blob(d) for d in layers)


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--cache-mode", "mirror"], {}, "--cache-mode 'mirror'"),
        ([], {"MODELREG_CACHE_MODE": "sometimes"}, "MODELREG_CACHE_MODE 'sometimes'"),
        (["--cache-mode", "reference", "--link"], {}, "--link"),
    ],
)
def test_cli_bad_cache_mode_is_a_clear_error(registry_plain, model, tmp_path, args, env, named):
    repo = push(registry_plain.host, model)
    out = tmp_path / "out"
    result = cli("pull", f"{repo}:v1", "-o", str(out), *args, env=env)
    assert result.exit_code == 2, result.output
    assert named in result.stderr
    assert "auto" in result.stderr and "copy" in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_a_part_edited_in_place_is_fetched_again(registry_plain, tmp_path):
    _, v2, repo = _split_versions(registry_plain.host, tmp_path, frozenset({7}))
    with client() as c:
        layers1 = _layers(c, f"{repo}:v1")
        layers2 = _layers(c, f"{repo}:v2")
        pull(c, f"{repo}:v1", tmp_path / "out-v1", cache_mode="reference")
        # a part both versions share, changed in the v1 output without a trace in its mtime
        shared = [
            layer
            for d, layer in layers2.items()
            if d in layers1 and layer.media_type == PART_MEDIA_TYPE
        ]
        victim = shared[len(shared) // 2]
        offset = int(victim.annotations["dev.modelreg.part.offset"])
        path = tmp_path / "out-v1" / "model.safetensors"
        st = path.stat()
        with open(path, "r+b") as f:
            f.seek(offset + victim.size // 2)
            f.write(b"\0\0\0\0")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        second, _ = pull(c, f"{repo}:v2", tmp_path / "out-v2", cache_mode="reference")
    changed = sum(layer.size for d, layer in layers2.items() if d not in layers1)
    assert second.bytes_fetched == changed + victim.size
    assert files_of(tmp_path / "out-v2") == files_of(v2)
    assert remembered(victim.digest, victim.size) == [
        str((tmp_path / "out-v2" / "model.safetensors").resolve())
    ]


def test_pulling_again_into_the_same_directory(registry_plain, model, tmp_path):
    repo = push(registry_plain.host, model)
    out = tmp_path / "out"
    with client() as c:
        pull(c, f"{repo}:v1", out, cache_mode="reference")
        again, _ = pull(c, f"{repo}:v1", out, cache_mode="reference")  # reads what it replaces
        assert again.bytes_fetched == 0
        assert files_of(out) == files_of(model)
        digest = Digest.from_bytes((model / "weights-a.bin").read_bytes())
        size = (model / "weights-a.bin").stat().st_size
        assert remembered(digest, size) == [str((out / "weights-a.bin").resolve())]
        third, _ = pull(c, f"{repo}:v1", tmp_path / "out2", cache_mode="reference")
    assert third.bytes_fetched == 0
    assert files_of(tmp_path / "out2") == files_of(model)
