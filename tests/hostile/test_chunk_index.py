"""A chunk index stored as a referrer is hostile input (issue 17 item 1).

``modelreg index REF`` stores the index of an artifact that lacks one as a
referrer; the manifest digest does not cover it, and whoever can push to the
repository can push referrers. Each test pushes one kind of bad index referrer
and checks that no wrong byte is served: the referrer is refused at open (whole
blobs, verified against the manifest, are read instead, and the handle says so),
or a chunk that disagrees with it fails the read without being cached.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from modelreg.content.base import bytes_source
from modelreg.content.memory import MemoryTarget
from modelreg.errors import IntegrityError
from modelreg.lazy import chunkindex as ci
from modelreg.lazy import open_model
from modelreg.lazy.handle import CHUNK_STORE_DIR
from modelreg.lazy.publish import chunk_index_referrer, push_chunk_index
from modelreg.model.pack import scan_directory
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import Manifest, empty_config
from tests.unit.lazy.helpers import CHUNK, publish, tensors_for_test, write_model


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELREG_HOME", str(tmp_path / "home"))


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, MemoryTarget, Descriptor]:
    root = write_model(tmp_path / "model")
    target = MemoryTarget()
    desc = publish(target, root, index=False)  # no annotation: only a referrer can index it
    return root, target, desc


def honest_tables(root: Path) -> list[ci.FileChunks]:
    blob = ci.build_chunk_index(scan_directory(root), chunk_size=CHUNK)
    index = ci.parse_chunk_index(blob)
    return [index.files[p] for p in sorted(index.files)]


def push_tables(target: MemoryTarget, subject: Descriptor, tables: list[ci.FileChunks]) -> None:
    blob = ci.encode_chunk_index(tables)
    push_chunk_index(target, subject, blob, ci.chunk_index_descriptor(blob))


def opened(target: MemoryTarget, tmp_path: Path, warnings: list[str]):  # type: ignore[no-untyped-def]
    return open_model(
        target,
        "v1",
        cache=tmp_path / "store",
        on_warning=warnings.append,
        chunk_index_referrers=True,
    )


def test_honest_referrer_is_used_and_said_to_be_unanchored(model, tmp_path):
    root, target, desc = model
    push_tables(target, desc, honest_tables(root))
    warnings: list[str] = []
    with opened(target, tmp_path, warnings) as h:
        assert h.index is not None and all(f.indexed for f in h.files)
        assert any("referrer" in n and "does not cover" in n for n in h.notes)
        assert h.tensor_bytes("a.weight") == tensors_for_test()["a.weight"].tobytes()
    assert warnings == []


def test_wrong_chunk_digest_fails_the_read_and_caches_nothing(model, tmp_path):
    root, target, desc = model
    tables = honest_tables(root)
    weights = next(fc for fc in tables if fc.path == "model.safetensors")
    assert weights.digests is not None
    bad = weights.index_of(500_000)
    table = bytearray(weights.digests)
    table[bad * 32 : bad * 32 + 32] = hashlib.sha256(b"not these bytes").digest()
    weights.digests = bytes(table)  # re-encoded: pages and TOC agree with the lie
    push_tables(target, desc, tables)
    warnings: list[str] = []
    with opened(target, tmp_path, warnings) as h:
        assert h.index is not None
        with pytest.raises(IntegrityError, match="chunk index says"):
            h.read("model.safetensors", 500_000, 100)
        # chunks the index describes truly are served
        assert h.read("config.json") == (root / "config.json").read_bytes()
    chunks = tmp_path / "store" / CHUNK_STORE_DIR  # <algorithm>/<2 hex>/<digest hex>
    stored = {p.name for p in chunks.glob("*/*/*")} if chunks.exists() else set()
    assert table[bad * 32 : bad * 32 + 32].hex() not in stored
    # by default referrer indexes are not used: the same model reads whole blobs,
    # verified against the manifest's digests, and the forged index changes nothing
    with open_model(target, "v1", cache=tmp_path / "store-2") as strict:
        assert strict.index is None
        data = strict.read("model.safetensors", 500_000, 100)
    assert data == (root / "model.safetensors").read_bytes()[500_000:500_100]


def test_index_describing_other_files_is_refused(model, tmp_path):
    root, target, desc = model
    tables = honest_tables(root)
    weights = next(fc for fc in tables if fc.path == "model.safetensors")
    weights.digest = ci.Digest.from_bytes(b"another file")
    push_tables(target, desc, tables)
    warnings: list[str] = []
    with opened(target, tmp_path, warnings) as h:
        assert h.index is None
        assert any("refused" in n and "whole" in n for n in h.notes)
        assert h.tensor_bytes("b.weight") == tensors_for_test()["b.weight"].tobytes()
    assert any("was refused" in w and "model.safetensors" in w for w in warnings)


def test_blob_not_matching_the_referrer_is_refused(model, tmp_path):
    root, target, desc = model
    honest = ci.encode_chunk_index(honest_tables(root))
    named = ci.chunk_index_descriptor(honest)
    forged = bytearray(honest)
    forged[-1] ^= 1  # same size, other bytes, stored under the honest digest
    target._blobs[named.digest] = bytes(forged)  # a lying store
    target.push(empty_config(), bytes_source(mt.EMPTY_JSON))
    referrer = chunk_index_referrer(named, desc)
    target.push_manifest(referrer.descriptor(), referrer.raw)
    warnings: list[str] = []
    with opened(target, tmp_path, warnings) as h:
        assert h.index is None
        assert h.read("tokenizer.json") == (root / "tokenizer.json").read_bytes()
    assert any("was refused" in w and "sha256:" in w for w in warnings), warnings


def test_referrers_that_are_not_indexes_of_this_manifest_are_ignored(model, tmp_path):
    root, target, desc = model
    blob = ci.encode_chunk_index(honest_tables(root))
    named = ci.chunk_index_descriptor(blob)
    target.push(named, bytes_source(blob))
    target.push(empty_config(), bytes_source(mt.EMPTY_JSON))
    layer = named.with_annotations({**named.annotations, mt.ANN_TITLE: "x"})
    other_type = Manifest(
        config=empty_config(),
        layers=(layer,),
        artifact_type="application/vnd.example.other",
        subject=Descriptor(desc.media_type, desc.digest, desc.size),
    )
    two_layers = Manifest(
        config=empty_config(),
        layers=(layer, layer),
        artifact_type=ci.CHUNK_INDEX_ARTIFACT_TYPE,
        subject=Descriptor(desc.media_type, desc.digest, desc.size),
    )
    for m in (other_type, two_layers):
        target.push_manifest(m.descriptor(), m.raw)
    warnings: list[str] = []
    with opened(target, tmp_path, warnings) as h:
        assert h.index is None
        assert any(n.startswith("no chunk index") for n in h.notes)
        assert h.read("config.json") == (root / "config.json").read_bytes()
