"""Bundles stored as OCI referrers in cosign v3's layout; legacy cosign tags."""

from __future__ import annotations

import json

import pytest

from modelreg.attest import storage
from modelreg.attest.keys import key_hint
from modelreg.attest.storage import bundle_referrer, legacy_layers, load_bundle
from modelreg.content.base import bytes_source
from modelreg.content.layout import LayoutStore
from modelreg.content.memory import MemoryTarget
from modelreg.copy import copy_graph
from modelreg.errors import FormatError, SizeLimitError
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import Manifest, empty_config
from modelreg.sign import (
    BUNDLE_V03,
    COSIGN_SIGN_PREDICATE,
    MODEL_SIGNING_PREDICATE,
    KeySigner,
    attach_bundle,
    iter_bundles,
    sign,
)


def test_sign_writes_cosign_v3_referrers(stored, key):
    result = sign(
        stored.target,
        stored.desc,
        KeySigner(key),
        name="team/tiny-llm",
        created="2025-01-01T00:00:00Z",
    )
    assert [b.predicate_type for b in result.bundles] == [
        COSIGN_SIGN_PREDICATE,
        MODEL_SIGNING_PREDICATE,
    ]
    found = stored.target.referrers(stored.desc)
    assert {r.digest for r in found} == {b.referrer.digest for b in result.bundles}
    for attached in result.bundles:
        raw = stored.target.fetch(attached.referrer).read()
        doc = json.loads(raw)
        assert doc["mediaType"] == mt.OCI_MANIFEST
        assert doc["artifactType"] == BUNDLE_V03
        assert doc["config"] == {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "size": 2,
        }
        assert len(doc["layers"]) == 1 and doc["layers"][0]["mediaType"] == BUNDLE_V03
        assert doc["subject"] == {
            "mediaType": stored.desc.media_type,
            "digest": str(stored.desc.digest),
            "size": stored.desc.size,
        }
        assert doc["annotations"] == {
            "dev.sigstore.bundle.content": "dsse-envelope",
            "dev.sigstore.bundle.predicateType": attached.predicate_type,
            "org.opencontainers.image.created": "2025-01-01T00:00:00Z",
            # cosign v3's three, plus the bundle's key hint for verifiers that sort by it
            storage.ANN_KEY_HINT: key_hint(key.public_key()),
        }
        layer = Descriptor.from_dict(doc["layers"][0])
        assert stored.target.fetch(layer).read() == attached.bundle
        # the empty config blob is really there
        assert stored.target.fetch(empty_config()).read() == b"{}"


def test_many_bundles_coexist(stored, key, other_key):
    for k in (key, other_key, key):
        sign(stored.target, stored.desc, KeySigner(k), model_signature=False)
    bundles = [b for b in iter_bundles(stored.target, stored.desc) if not isinstance(b, tuple)]
    # key signs twice: ECDSA is randomised, so two distinct bundles (and referrers)
    assert len(bundles) == 3
    assert len({b.referrer.digest for b in bundles}) == 3


def test_created_honours_source_date_epoch(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert storage.created_now() == "2023-11-14T22:13:20Z"


def test_referrer_that_lies_about_its_subject_is_rejected(stored, key):
    other = Descriptor(mt.OCI_MANIFEST, stored.desc.digest.from_bytes(b"elsewhere"), 10)
    manifest, layer = bundle_referrer(other, b"{}", predicate_type=COSIGN_SIGN_PREDICATE)
    stored.target.push(layer, bytes_source(b"{}"))
    stored.target.push(empty_config(), bytes_source(b"{}"))
    desc = manifest.descriptor()
    stored.target.push_manifest(desc, manifest.raw)
    with pytest.raises(FormatError, match="subject"):
        load_bundle(stored.target, stored.desc, desc)


def test_referrer_with_two_layers_or_other_type_is_rejected(stored):
    target = stored.target
    layer = Descriptor.for_bytes(BUNDLE_V03, b"{}")
    target.push(layer, bytes_source(b"{}"))
    target.push(empty_config(), bytes_source(b"{}"))
    subject = Descriptor(stored.desc.media_type, stored.desc.digest, stored.desc.size)
    two = Manifest(
        config=empty_config(), layers=(layer, layer), artifact_type=BUNDLE_V03, subject=subject
    )
    target.push_manifest(two.descriptor(), two.raw)
    notation = Manifest(
        config=empty_config(),
        layers=(layer,),
        artifact_type="application/vnd.cncf.notary.signature",
        subject=subject,
    )
    target.push_manifest(notation.descriptor(), notation.raw)
    items = list(iter_bundles(target, stored.desc))
    # the notation signature is not even considered; the two-layer one is reported
    assert len(items) == 1 and isinstance(items[0], tuple)
    assert "layers" in items[0][1].message


def test_oversized_bundle_refused_before_reading(stored, monkeypatch):
    monkeypatch.setattr(storage, "MAX_BUNDLE_BYTES", 10)
    attach_bundle(
        stored.target,
        stored.desc,
        b'{"mediaType": "x" ,"padding": "....."}',
        predicate_type=COSIGN_SIGN_PREDICATE,
    )
    fetched = []
    real_fetch = stored.target.fetch
    monkeypatch.setattr(stored.target, "fetch", lambda d: fetched.append(d) or real_fetch(d))
    items = list(iter_bundles(stored.target, stored.desc))
    assert isinstance(items[0], tuple) and isinstance(items[0][1], SizeLimitError)
    assert all(d.media_type != BUNDLE_V03 for d in fetched)


def test_too_many_referrers_is_refused(stored, monkeypatch):
    monkeypatch.setattr(storage, "MAX_REFERRERS", 2)
    for i in range(3):
        attach_bundle(stored.target, stored.desc, b'{"n":%d}' % i, predicate_type="p")
    with pytest.raises(SizeLimitError):
        list(iter_bundles(stored.target, stored.desc))


def test_copy_recursive_carries_signatures(stored, key, tmp_path):
    sign(stored.target, stored.desc, KeySigner(key))
    dest = LayoutStore(tmp_path / "copy", fsync=False).target(None)
    result = copy_graph(stored.target, stored.desc, dest, tag="v1", recursive=True)
    assert len(result.referrers) == 2
    assert {r.digest for r in dest.referrers(stored.desc)} == {r.digest for r in result.referrers}
    memory = MemoryTarget()
    copy_graph(dest, stored.desc, memory, recursive=True)
    assert len([b for b in iter_bundles(memory, stored.desc) if not isinstance(b, tuple)]) == 2


def test_legacy_cosign_tags_are_read(stored, key):
    from modelreg.attest.storage import (
        ANN_COSIGN_SIGNATURE,
        COSIGN_DSSE_LAYER,
        COSIGN_SIMPLESIGNING,
        legacy_tag,
    )

    payload = b'{"critical":{}}'
    layer = Descriptor.for_bytes(
        COSIGN_SIMPLESIGNING, payload, annotations={ANN_COSIGN_SIGNATURE: "AAEC"}
    )
    att = Descriptor.for_bytes(COSIGN_DSSE_LAYER, b'{"payloadType":"x"}')
    for d, data in ((layer, payload), (att, b'{"payloadType":"x"}')):
        stored.target.push(d, bytes_source(data))
    stored.target.push(empty_config(), bytes_source(b"{}"))
    for suffix, lay in (("sig", layer), ("att", att)):
        m = Manifest(config=empty_config(), layers=(lay,))
        stored.target.push_manifest(m.descriptor(), m.raw, tag=legacy_tag(stored.desc, suffix))
    found = legacy_layers(stored.target, stored.desc)
    assert [(f.kind, f.signature) for f in found] == [("sig", b"\x00\x01\x02"), ("att", None)]
