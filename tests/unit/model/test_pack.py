import json
import os
import shutil
import threading

import jsonschema
import pytest

from modelreg.errors import InvalidInputError, UnsafeContentError
from modelreg.model.digests import DigestCache
from modelreg.model.pack import ModelMetadata, pack_directory
from modelreg.oci import mediatypes as mt
from tests.schemas import validate_manifest, validate_model_config


def make_model(root):
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (root / "tokenizer.json").write_text("{}")
    (root / "model.safetensors").write_bytes(os.urandom(1000))
    (root / "README.md").write_text("# model")
    (root / "sub" / "run.py").write_text("print(1)")
    (root / "sub" / "run.py").chmod(0o755)
    return root


def test_pack_is_deterministic_across_copies_and_machines(tmp_path):
    a = make_model(tmp_path / "one" / "m")
    b = tmp_path / "two" / "m"
    shutil.copytree(a, b)
    os.utime(b / "config.json", (1, 1))  # mtimes and owners must not matter
    pa, pb = pack_directory(a), pack_directory(b)
    assert pa.manifest.raw == pb.manifest.raw
    assert pa.manifest.digest == pb.manifest.digest


def test_pack_layers_roles_and_annotations(tmp_path):
    packed = pack_directory(
        make_model(tmp_path / "m"), metadata=ModelMetadata(licenses=("Apache-2.0",))
    )
    by_path = {layer.annotations[mt.ANN_FILEPATH]: layer for layer in packed.manifest.layers}
    assert by_path["config.json"].media_type == "application/vnd.cncf.model.weight.config.v1.raw"
    assert by_path["model.safetensors"].media_type == "application/vnd.cncf.model.weight.v1.raw"
    assert by_path["README.md"].media_type == "application/vnd.cncf.model.doc.v1.raw"
    assert by_path["sub/run.py"].media_type == "application/vnd.cncf.model.code.v1.raw"
    assert by_path["sub/run.py"].annotations[mt.ANN_TITLE] == "sub/run.py"
    meta = json.loads(by_path["sub/run.py"].annotations[mt.ANN_FILE_METADATA])
    assert meta == {
        "name": "run.py",
        "mode": 0o755,
        "uid": 0,
        "gid": 0,
        "size": 8,
        "mtime": "1970-01-01T00:00:00Z",
        "typeflag": 48,
    }
    # weights last, small config first
    assert packed.manifest.layers[-1].annotations[mt.ANN_FILEPATH] == "model.safetensors"
    config = json.loads(packed.config)
    assert config["modelfs"]["diffIds"] == [str(layer.digest) for layer in packed.manifest.layers]
    assert config["descriptor"] == {"name": "m", "licenses": ["Apache-2.0"]}
    assert packed.manifest.artifact_type == mt.MODEL_ARTIFACT
    validate_manifest(packed.manifest.raw)
    validate_model_config(packed.config)


def test_invalid_config_would_fail_schema(tmp_path):
    with pytest.raises(jsonschema.ValidationError):
        validate_model_config(
            b'{"descriptor":{},"config":{},"modelfs":{"type":"layers","diffIds":[]}}'
        )


def test_symlink_outside_refused_inside_followed(tmp_path):
    root = make_model(tmp_path / "m")
    (tmp_path / "secret").write_text("s")
    (root / "inside.json").symlink_to(root / "config.json")
    packed = pack_directory(root)
    assert "inside.json" in [f.path for f in packed.files]
    (root / "leak").symlink_to(tmp_path / "secret")
    with pytest.raises(UnsafeContentError, match="pointing outside"):
        pack_directory(root)
    assert "leak" in [f.path for f in pack_directory(root, allow_outside_links=True).files]


def test_empty_missing_and_file_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="no files"):
        pack_directory(tmp_path / "empty")
    with pytest.raises(InvalidInputError, match="does not exist"):
        pack_directory(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(InvalidInputError, match="not a directory"):
        pack_directory(tmp_path / "f")


def test_fifo_refused(tmp_path):
    root = make_model(tmp_path / "m")
    os.mkfifo(root / "pipe")
    with pytest.raises(UnsafeContentError, match="not a regular file"):
        pack_directory(root)


def test_git_directory_ignored(tmp_path):
    root = make_model(tmp_path / "m")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref")
    assert all(not f.path.startswith(".git") for f in pack_directory(root).files)


def test_digest_cache_reuses_and_invalidates(tmp_path, monkeypatch):
    root = make_model(tmp_path / "m")
    calls = []
    import modelreg.model.digests as digests

    real = digests.hash_file
    monkeypatch.setattr(digests, "hash_file", lambda p, a="sha256": calls.append(p) or real(p, a))
    with DigestCache(tmp_path / "d.sqlite") as cache:
        pack_directory(root, digest_cache=cache)
        first = len(calls)
        pack_directory(root, digest_cache=cache)
        assert len(calls) == first  # nothing re-hashed
        (root / "README.md").write_text("# changed")
        packed = pack_directory(root, digest_cache=cache)
        assert len(calls) == first + 1
    readme = next(f for f in packed.files if f.path == "README.md")
    assert readme.descriptor.size == len("# changed")


def test_on_hash_tells_each_uncached_file_before_its_digest(tmp_path):
    root = make_model(tmp_path / "m")
    events = []
    lock = threading.Lock()

    def on_hash(rel, path, size):
        with lock:
            events.append(("hash", rel, path, size, threading.get_ident()))

    def on_blob(desc, path, offset):
        with lock:
            events.append(("blob", desc, path, offset, threading.get_ident()))

    plain = pack_directory(root)
    with DigestCache(tmp_path / "d.sqlite") as cache:
        hooked = pack_directory(root, digest_cache=cache, on_hash=on_hash, on_blob=on_blob)
        assert hooked.manifest.raw == plain.manifest.raw and hooked.config == plain.config
        told = {e[1]: e for e in events if e[0] == "hash"}
        assert sorted(told) == sorted(f.path for f in plain.files)
        for f in plain.files:
            _, _, path, size, thread = told[f.path]
            assert path == f.source and size == f.size
            blob = next(e for e in events if e[0] == "blob" and e[2] == f.source)
            assert blob[1].digest == f.descriptor.digest and blob[4] == thread
            assert events.index(told[f.path]) < events.index(blob)  # told before its digest
        # the cache recorded every digest: a second pack hashes nothing and tells nothing
        events.clear()
        again = pack_directory(root, digest_cache=cache, on_hash=on_hash, on_blob=on_blob)
        assert again.manifest.raw == plain.manifest.raw
        assert [e[0] for e in events] == ["blob"] * len(plain.files)
        (root / "README.md").write_text("# changed")
        events.clear()
        pack_directory(root, digest_cache=cache, on_hash=on_hash)
        assert [(e[0], e[1]) for e in events] == [("hash", "README.md")]


def _big_beside_small(root, small=150):
    """A 2 MiB file (above the grouping threshold) beside ``small`` files of 1-3 KiB."""
    for i in range(small):
        (root / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 3}" / f"f{i:04d}.json").write_bytes(os.urandom(1024 + i * 13))
    (root / "big.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    return root


def test_the_largest_file_is_told_before_any_other_file_is_inspected(tmp_path, monkeypatch):
    """A push starts sending the largest file (on_hash) before the thousands of small
    files beside it are even inspected; it is told once, and the artifact is the same."""
    import modelreg.model.pack as pack

    root = _big_beside_small(tmp_path / "m")
    plain = pack_directory(root)
    inspected: list[str] = []
    real_inspect = pack._inspect_local

    def counting_inspect(rel, real):
        inspected.append(rel)
        return real_inspect(rel, real)

    monkeypatch.setattr(pack, "_inspect_local", counting_inspect)
    told: list[tuple[str, int]] = []

    def on_hash(rel, path, size):
        told.append((rel, len(inspected)))

    groups = []
    with DigestCache(tmp_path / "d.sqlite") as cache:
        packed = pack_directory(
            root,
            digest_cache=cache,
            on_hash=on_hash,
            on_group=lambda group, _files: groups.append(group),
        )
        assert told == [("big.bin", 0)]  # first, before any inspection, and only once
        assert packed.manifest.raw == plain.manifest.raw and packed.config == plain.config
        # every group handed out as soon as it was packed, each exactly once
        assert len(packed.groups) >= 2
        assert sorted(str(g.descriptor.digest) for g in groups) == sorted(
            str(g.descriptor.digest) for g in packed.groups
        )
        # cached now: nothing to tell, early or late
        told.clear()
        pack_directory(root, digest_cache=cache, on_hash=on_hash)
        assert told == []
    # split files are told in their turn only (a split plan needs the inspected header)
    told.clear()
    inspected.clear()
    pack_directory(root, on_hash=on_hash, split=True)
    assert [rel for rel, _ in told] == ["big.bin"]
    assert told[0][1] == len(inspected) > 0  # after every file was inspected


def test_a_file_unreadable_while_hashed_is_an_input_error(tmp_path, monkeypatch):
    root = make_model(tmp_path / "m")
    import modelreg.model.digests as digests

    def fail(path, algorithm="sha256"):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(digests, "hash_file", fail)
    with pytest.raises(InvalidInputError, match=r"cannot read .*Permission denied"):
        pack_directory(root)
