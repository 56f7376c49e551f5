"""Small files packed into deterministic tar layers (issue 18): the rule, the tar, the limits."""

from __future__ import annotations

import io
import json
import os
import random
import tarfile
from pathlib import Path

import pytest

from modelreg.errors import FormatError, InvalidInputError, SizeLimitError, UnsafeContentError
from modelreg.model import grouping as grp
from modelreg.model import pack as pack_mod
from modelreg.model.digests import DigestCache
from modelreg.model.metadata import load_packaging_file
from modelreg.model.pack import pack_directory

POLICY = grp.GroupPolicy(threshold=64 * 1024, target=256 * 1024, min_files=4)


def write_tree(root: Path, count: int, *, seed: int = 7, order: int = 1) -> Path:
    rng = random.Random(seed)
    files = [
        (f"{('tok', 'vocab', 'code')[i % 3]}/f{i:04d}.json", rng.randbytes(rng.randint(1, 8000)))
        for i in range(count)
    ]
    for rel, data in files[::order]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "model.bin").write_bytes(rng.randbytes(100 * 1024))  # above the threshold
    return root


def layer_digests(root: Path, policy: grp.GroupPolicy = POLICY) -> list[str]:
    packed = pack_directory(root, grouping=policy, analyzer=None)
    return [str(layer.digest) for layer in packed.manifest.layers]


def group_digests(root: Path, policy: grp.GroupPolicy = POLICY) -> set[str]:
    packed = pack_directory(root, grouping=policy, analyzer=None)
    return {str(g.descriptor.digest) for g in packed.groups}


def test_same_tree_same_digests_whatever_mtimes_umask_and_creation_order(tmp_path):
    a = write_tree(tmp_path / "a" / "m", 200)  # same name: the config carries it
    old = os.umask(0o077)
    try:
        b = write_tree(tmp_path / "elsewhere" / "m", 200, order=-1)
    finally:
        os.umask(old)
    for i, path in enumerate(sorted(b.rglob("*"))):
        os.utime(path, (1_000_000 + i, 2_000_000 + i))
    first = pack_directory(a, grouping=POLICY, analyzer=None)
    assert first.groups and len(first.manifest.layers) < 50
    assert layer_digests(a) == [str(x.digest) for x in first.manifest.layers]  # twice
    assert layer_digests(b) == layer_digests(a)
    again = pack_directory(b, grouping=POLICY, analyzer=None)
    assert first.manifest.digest == again.manifest.digest


def test_the_tar_is_fixed_metadata_in_path_order_and_holds_the_files(tmp_path):
    root = write_tree(tmp_path / "m", 60)
    script = root / "code" / "run.sh"
    script.write_text("#!/bin/sh\n")
    os.chmod(script, 0o700)
    packed = pack_directory(root, grouping=POLICY, analyzer=None)
    target = packed.as_target()
    seen = []
    for group in packed.groups:
        blob = target.fetch(group.descriptor).read()
        assert len(blob) == group.descriptor.size
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            members = tar.getmembers()
            names = [m.name for m in members]
            assert names == sorted(names)
            for m, laid in zip(members, group.members, strict=True):
                assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
                assert m.mode == (0o755 if m.name == "code/run.sh" else 0o644)
                assert m.offset_data == laid.offset  # open() could read it by range
                assert tar.extractfile(m).read() == (root / m.name).read_bytes()  # type: ignore[union-attr]
        seen += names
        assert target.fetch_range(group.descriptor, 700, 900) == blob[700:1600]
    grouped = {f.path for f in packed.files if f.grouped}
    assert set(seen) == grouped and "model.bin" not in grouped
    for f in packed.files:
        assert f.grouped == (f.path in grouped)
        assert (f.layers == ()) == f.grouped


def test_one_role_per_group_named_in_the_media_type(tmp_path):
    root = tmp_path / "m"
    for i in range(8):
        (root / "docs").mkdir(parents=True, exist_ok=True)
        (root / "docs" / f"page{i}.md").write_text(f"page {i}")
        (root / "docs" / f"conf{i}.json").write_text("{}")
    packed = pack_directory(root, grouping=POLICY, analyzer=None)
    by_role = {g.descriptor.media_type: [m.path for m in g.members] for g in packed.groups}
    assert set(by_role) == {
        "application/vnd.cncf.model.doc.v1.tar",
        "application/vnd.cncf.model.weight.config.v1.tar",
    }
    assert all(p.endswith(".md") for p in by_role["application/vnd.cncf.model.doc.v1.tar"])


def test_changing_one_file_changes_only_its_group(tmp_path):
    root = write_tree(tmp_path / "m", 400)
    before = group_digests(root)
    assert len(before) > 6
    victim = root / "vocab" / "f0100.json"
    data = bytearray(victim.read_bytes())
    data[0] ^= 1
    victim.write_bytes(bytes(data))
    after = group_digests(root)
    assert len(before - after) == 1 and len(after - before) == 1


@pytest.mark.parametrize("name", ["tok/f0100a.json", "tok/zzz.json", "tok/a.json"])
def test_adding_one_file_changes_at_most_two_groups(tmp_path, name):
    root = write_tree(tmp_path / "m", 400)
    before = group_digests(root)
    (root / name).write_bytes(b"x" * 5000)
    after = group_digests(root)
    assert 1 <= len(after - before) <= 2
    assert len(before - after) <= 2


def test_groups_average_the_target(tmp_path):
    files = [(f"d/f{i:05d}", 1000, "doc") for i in range(20_000)]
    groups = grp.plan_groups(files, grp.GroupPolicy(threshold=4096, target=100_000))
    assert sum(len(g) for g in groups) == 20_000
    assert 100 < len(groups) < 300  # 20 MB / 100 kB = 200 on average
    assert max(len(g) for g in groups) <= 400  # the 4x target cut


def test_small_buckets_and_big_files_keep_raw_layers(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    for name in ("config.json", "tokenizer.json", "README.md"):
        (root / name).write_text("{}")
    packed = pack_directory(root, analyzer=None)  # the defaults
    assert not packed.groups
    assert all(layer.media_type.endswith(".raw") for layer in packed.manifest.layers)


def test_pickle_files_are_never_grouped(tmp_path):
    import pickle

    root = tmp_path / "m"
    (root / "extra").mkdir(parents=True)
    for i in range(6):
        (root / "extra" / f"n{i}.json").write_text("{}")
    (root / "extra" / "state.dat").write_bytes(pickle.dumps({"a": 1}))
    packed = pack_directory(root, grouping=POLICY, analyzer=None)
    unsafe = [f for f in packed.files if f.unsafe]
    assert [f.path for f in unsafe] == ["extra/state.dat"]
    assert not unsafe[0].grouped and unsafe[0].layers


def test_threshold_zero_or_off_gives_a_layer_per_file(tmp_path):
    root = write_tree(tmp_path / "m", 30)
    assert len(pack_directory(root, grouping=grp.OFF, analyzer=None).manifest.layers) == 31
    assert grp.grouping_policy(False) == grp.OFF
    assert grp.grouping_policy(0) == grp.OFF
    assert grp.grouping_policy("4MiB") == grp.GroupPolicy(threshold=4 * 1024 * 1024)
    assert grp.grouping_policy(None) is None
    with pytest.raises(InvalidInputError):
        grp.grouping_policy("lots")


def test_modelreg_toml_sets_threshold_and_target(tmp_path):
    root = write_tree(tmp_path / "m", 300)
    (root / "modelreg.toml").write_text(
        '[pack]\nsmall_file_threshold = "64KiB"\ngroup_target = "256KiB"\n'
    )
    pkg = load_packaging_file(root)
    assert pkg is not None and pkg.small_file_threshold == "64KiB"
    from_toml = pack_directory(root, analyzer=None)
    # min_files is not configurable: 16 by default, enough for these buckets
    explicit = pack_directory(
        root, grouping=grp.GroupPolicy(threshold=64 * 1024, target=256 * 1024), analyzer=None
    )
    assert from_toml.manifest.digest == explicit.manifest.digest
    (root / "modelreg.toml").write_text("[pack]\nsmall_file_threshold = 0\n")
    assert not pack_directory(root, analyzer=None).groups
    (root / "modelreg.toml").write_text("[pack]\nsmall_file_threshold = true\n")
    with pytest.raises(InvalidInputError, match="small_file_threshold"):
        load_packaging_file(root)


class _Counted:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        raise AssertionError("read a file")


def test_too_many_layers_is_refused_before_any_file_is_read(tmp_path, monkeypatch):
    root = tmp_path / "m"
    root.mkdir()
    for i in range(5001):
        (root / f"f{i:05d}.txt").write_bytes(b"x")
    reads = _Counted()
    monkeypatch.setattr(pack_mod, "_inspect_local", reads)
    monkeypatch.setattr(DigestCache, "digest", reads)
    monkeypatch.setattr(grp, "hash_group", reads)
    with pytest.raises(SizeLimitError) as refused:
        pack_directory(root, grouping=grp.OFF, analyzer=None)
    assert reads.calls == 0
    assert "5001 layers, over the 5000" in refused.value.message
    assert "nothing was hashed" in refused.value.message
    assert "--pack-small" in (refused.value.hint or "")


def test_a_manifest_over_4_mib_is_refused_before_any_file_is_read(tmp_path, monkeypatch):
    root = tmp_path / "m"
    deep = root / ("d" * 200) / ("e" * 200)
    deep.mkdir(parents=True)
    for i in range(3000):
        (deep / f"{'f' * 200}{i:05d}.bin").write_bytes(b"")
    reads = _Counted()
    monkeypatch.setattr(pack_mod, "_inspect_local", reads)
    with pytest.raises(SizeLimitError) as refused:
        pack_directory(root, grouping=grp.OFF, analyzer=None)
    assert reads.calls == 0
    assert "over the 4 MiB" in refused.value.message


def test_a_file_that_shrinks_after_layout_fails_the_upload(tmp_path):
    root = write_tree(tmp_path / "m", 60)
    packed = pack_directory(root, grouping=POLICY, analyzer=None)
    group = packed.groups[0]
    (root / group.members[-1].path).write_bytes(b"")
    with pytest.raises(InvalidInputError, match="shorter than when it was packed"):
        packed.as_target().fetch(group.descriptor).read()


def _tar_of(packed_group: pack_mod.PackedGroup) -> bytes:
    with grp.GroupStream(packed_group.members, packed_group.descriptor.size) as stream:
        return io.BufferedReader(stream).read()


def test_member_table_gives_each_files_place_and_digest_in_the_tar(tmp_path):
    root = write_tree(tmp_path / "m", 60)
    packed = pack_directory(root, grouping=POLICY, analyzer=None)
    assert packed.groups
    digests = {f.path: f.descriptor.digest for f in packed.files if f.grouped}
    seen = set()
    for group in packed.groups:
        rows = grp.parse_member_table(group.descriptor)
        assert rows is not None
        tar = _tar_of(group)
        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            offsets = {m.name: (m.offset_data, m.size, m.mode) for m in tf.getmembers()}
        for row in rows:
            assert offsets[row.path] == (row.offset, row.size, row.mode)
            assert row.digest == digests[row.path]
            data = tar[row.offset : row.offset + row.size]
            assert data == (root / row.path).read_bytes()
            seen.add(row.path)
    assert seen == set(digests)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda rows, size: rows[1].__setitem__(1, rows[0][1]), "does not follow"),
        (lambda rows, size: rows[-1].__setitem__(1, size - 512), "does not follow"),
        (lambda rows, size: rows[0].__setitem__(1, rows[0][1] + 1), "does not follow"),
        (lambda rows, size: rows[2].__setitem__(3, "ab" * 16), "no sha256"),
        (lambda rows, size: rows[2].__setitem__(4, 0o120777), "mode"),
        (lambda rows, size: rows[2].__setitem__(2, True), "not \\[path"),
        (lambda rows, size: rows[2].__setitem__(1, float(rows[2][1])), "not \\[path"),
        (lambda rows, size: rows[2].__setitem__(0, 7), "not \\[path"),
        (lambda rows, size: rows.insert(1, list(rows[0])), "out of order"),
        (lambda rows, size: rows[0].__setitem__(0, "/etc/passwd"), "absolute"),
        (lambda rows, size: rows[0].__setitem__(0, "a/../../x"), "\\.\\."),
    ],
)
def test_a_hostile_member_table_is_refused(tmp_path, change, match):
    packed = pack_directory(write_tree(tmp_path / "m", 60), grouping=POLICY, analyzer=None)
    layer = packed.groups[0].descriptor
    rows = json.loads(layer.annotations[grp.ANN_GROUP_FILES])
    change(rows, layer.size)
    forged = layer.with_annotations({**layer.annotations, grp.ANN_GROUP_FILES: json.dumps(rows)})
    with pytest.raises((FormatError, UnsafeContentError), match=match):
        grp.parse_member_table(forged)
