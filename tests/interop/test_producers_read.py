"""Artifacts hand-built the way other producers write them, read by ``pull``, ``inspect``,
``diff`` and ``open``.

The scenarios of ``testdata/producers`` (KitOps tar/tar+gzip/raw, modctl tar, Docker
Model Runner v0.1/v0.2, ORAS, legacy ModelPack) are pushed blob by blob with
``tests/integration/test_producers.upload``, whose tests already check ``pull`` and
``inspect`` of each; this file adds modctl's *raw* layout (one uncompressed layer a file,
modctl's default since it follows ModelPack 1.0), read by all four commands, and the
check every producer passes today: ``diff`` of an artifact with itself is empty.
Where inspect, diff and open must name the files pull writes (KitOps paths from
the Kitfile, files inside archive layers), the checks stay outside the committed
suite until issue 15's failure 3 is fixed.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from safetensors.numpy import save

import modelreg
from modelreg.client import Client, RemoteOptions
from modelreg.content.base import bytes_source
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from tests.integration.test_producers import EXPECTED, upload
from tests.interop.peers import ok, tree

TAGS = sorted(k for k, v in EXPECTED.items() if "files" in v)
WEIGHTS = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
MODCTL_FILES = {
    "config.json": ("weight.config", b'{"model_type": "llama"}'),
    "model.safetensors": ("weight", save(WEIGHTS)),
    "README.md": ("doc", b"# built like modctl\n"),
    "scripts/serve.py": ("code", b"print('serve')\n"),
}


def _meta(name: str, size: int) -> str:
    return json.dumps(
        {
            "name": name,
            "mode": 420,
            "uid": 0,
            "gid": 0,
            "size": size,
            "mtime": "2025-01-01T00:00:00Z",
            "typeflag": 48,
        },
        separators=(",", ":"),
    )


def _push_modctl_raw(ref: str) -> None:
    """modctl build (ModelPack 1.0): raw layers, filepath + metadata annotations, diffIds."""
    layers = []
    blobs = {}
    for path, (role, data) in MODCTL_FILES.items():
        desc = Descriptor.for_bytes(
            mt.model_layer(role),
            data,
            annotations={
                mt.ANN_FILEPATH: path,
                mt.ANN_FILE_METADATA: _meta(path.rsplit("/", 1)[-1], len(data)),
                mt.ANN_UNTESTED: "false",
            },
        )
        layers.append(desc)
        blobs[desc.digest] = data
    config = json.dumps(
        {
            "descriptor": {"name": "modctl-raw", "createdAt": "2025-01-01T00:00:00Z"},
            "config": {"format": "safetensors"},
            "modelfs": {"type": "layers", "diffIds": [str(d.digest) for d in layers]},
        }
    ).encode()
    config_desc = Descriptor.for_bytes(mt.MODEL_CONFIG, config)
    blobs[config_desc.digest] = config
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": mt.MODEL_ARTIFACT,
            "config": config_desc.to_dict(),
            "layers": [d.to_dict() for d in layers],
        }
    ).encode()
    with Client(RemoteOptions(fsync=False)) as client:
        target = client.target(ref)
        for d in (config_desc, *layers):
            target.push(d, bytes_source(blobs[d.digest]))
        target.push_manifest(
            Descriptor.for_bytes("application/vnd.oci.image.manifest.v1+json", manifest),
            manifest,
            "v1",
        )


def test_modctl_raw_read_by_pull_inspect_diff_open(registry_plain, tmp_path):
    ref = f"{registry_plain.host}/interop/modctl-raw:v1"
    _push_modctl_raw(ref)
    expected = {p: hashlib.sha256(d).hexdigest() for p, (_, d) in MODCTL_FILES.items()}
    out = tmp_path / "out"
    assert ok("pull", ref, "-o", str(out))["producer"] == "modelpack"
    assert tree(out) == expected
    info = ok("inspect", ref)
    assert {f["path"] for f in info["files"]} == set(expected)
    again = f"{registry_plain.host}/interop/modctl-raw-repushed:v1"
    ok("push", str(out), again)
    diffed = ok("diff", ref, again)
    assert {f["path"]: f["status"] for f in diffed["files"]} == dict.fromkeys(expected, "unchanged")
    with modelreg.open(ref) as handle:
        assert {f.path for f in handle.files} == set(expected)
        assert hashlib.sha256(handle.read("README.md")).hexdigest() == expected["README.md"]
        np.testing.assert_array_equal(handle.tensor("w"), WEIGHTS["w"])


@pytest.mark.parametrize("tag", TAGS)
def test_every_producer_diffs_clean_with_itself(registry_plain, tag):
    ref = upload(registry_plain.host, tag)
    diffed = ok("diff", ref, ref)
    assert diffed["summary"]["added"] == diffed["summary"]["removed"] == 0
    assert diffed["summary"]["changed"] == 0
