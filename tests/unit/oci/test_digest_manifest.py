import json

import pytest

from modelreg.errors import FormatError, InvalidDigestError, SizeLimitError
from modelreg.oci import Descriptor, Digest, Index, Manifest
from modelreg.oci import mediatypes as mt
from modelreg.oci.manifest import MAX_MANIFEST_BYTES, empty_config, parse_manifest_or_index


def test_digest_parse_and_compute():
    d = Digest.from_bytes(b"{}")
    assert str(d) == mt.EMPTY_DIGEST
    assert Digest.parse(str(d)) == d
    assert Digest.from_bytes(b"x", "sha512").algorithm == "sha512"
    assert len(Digest.from_bytes(b"x", "sha512").hex) == 128


@pytest.mark.parametrize(
    "bad",
    ["sha256:" + "A" * 64, "sha256:abc", "md5:" + "a" * 32, "nocolon", "sha256:" + "g" * 64, ""],
)
def test_digest_rejects(bad):
    with pytest.raises(InvalidDigestError) as info:
        Digest.parse(bad)
    assert info.value.hint


def _layer(data: bytes = b"hello") -> Descriptor:
    return Descriptor.for_bytes(mt.model_layer("weight"), data, {mt.ANN_TITLE: "w.bin"})


def test_manifest_round_trip_keeps_raw_bytes():
    subject = Descriptor.for_bytes(mt.OCI_MANIFEST, b'{"x":1}')
    m = Manifest(
        config=empty_config(),
        layers=(_layer(),),
        artifact_type=mt.MODEL_ARTIFACT,
        subject=subject,
        annotations={"a": "b"},
    )
    parsed = Manifest.parse(m.raw)
    assert parsed == m
    assert parsed.digest == Digest.from_bytes(m.raw)
    # a different serialisation of the same JSON is a different manifest (digest of bytes)
    spaced = json.dumps(json.loads(m.raw), indent=2).encode()
    assert Manifest.parse(spaced).digest != m.digest
    assert parsed.subject == subject
    assert parsed.descriptor().artifact_type == mt.MODEL_ARTIFACT


def test_effective_artifact_type_falls_back_to_config():
    m = Manifest(config=Descriptor.for_bytes("application/x.cfg+json", b"{}"), layers=())
    assert m.effective_artifact_type == "application/x.cfg+json"


def test_index_and_dispatch():
    m = Manifest(config=empty_config(), layers=(_layer(),))
    idx = Index(manifests=(m.descriptor(),), artifact_type="application/x")
    assert isinstance(parse_manifest_or_index(idx.raw), Index)
    assert isinstance(parse_manifest_or_index(m.raw), Manifest)
    assert isinstance(parse_manifest_or_index(idx.raw, mt.OCI_INDEX), Index)


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"schemaVersion":1}', "schemaVersion"),
        (b'{"schemaVersion":2,"layers":[]}', "no config"),
        (
            b'{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:x","size":1}}',
            "digest",
        ),
        (
            b'{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:'
            + b"a" * 64
            + b'","size":-1}}',
            "size",
        ),
        (
            b'{"schemaVersion":2,"config":{"mediaType":"nonsense","digest":"sha256:'
            + b"a" * 64
            + b'","size":1}}',
            "media",
        ),
    ],
)
def test_bad_manifests(doc, fragment):
    with pytest.raises(FormatError) as info:
        Manifest.parse(doc)
    assert fragment.lower() in str(info.value).lower()


def test_oversized_manifest_refused():
    with pytest.raises(SizeLimitError):
        Manifest.parse(b" " * (MAX_MANIFEST_BYTES + 1))
