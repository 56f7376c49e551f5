"""skopeo (Debian's 1.9, installed by ``.ci/install-deps``) and modelreg, both ways,
through real registries and OCI layouts: a model modelreg pushed copies with skopeo
(digests preserved) and pulls intact; a layout skopeo wrote pushes back and pulls; skopeo
inspects a layout modelreg wrote. Signatures through skopeo are checked outside the
committed suite for now (``test_skopeo_signatures.py``: skopeo 1.9 cannot copy the
tag-schema referrers index with ``--preserve-digests``, and without it the copy does not
verify)."""

from __future__ import annotations

import os

from tests.interop.peers import ok, peer, tool, tree, write_tree

FILES = {
    "config.json": b'{"model_type": "llama"}',
    "model.safetensors": os.urandom(64 * 1024),
    "tokenizer/tokenizer.json": b'{"v": 1}',
    ".gitattributes": b"* text=auto\n",
}


def _skopeo(*args: str) -> None:
    done = peer(tool("skopeo"), *args)
    assert done.returncode == 0, done.stdout + done.stderr


def _copy(src: str, dst: str, *, preserve: bool = True) -> None:
    _skopeo(
        "copy",
        "--all",
        *(("--preserve-digests",) if preserve else ()),
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        src,
        dst,
    )


def test_skopeo_copies_a_signed_modelreg_model(registry_plain, registry_factory, tmp_path):
    other = registry_factory()
    model = write_tree(tmp_path / "model", FILES)
    src = f"{registry_plain.host}/interop/skopeo-src"
    digest = ok("push", str(model), f"{src}:v1")["digest"]
    dst = f"{other.host}/interop/skopeo-dst"
    _copy(f"docker://{src}:v1", f"docker://{dst}:v1")
    assert ok("inspect", f"{dst}:v1")["digest"] == digest
    out = tmp_path / "out"
    ok("pull", f"{dst}@{digest}", "-o", str(out))
    assert tree(out) == tree(model)


def test_modelreg_reads_what_skopeo_wrote_from_an_oci_layout(registry_plain, tmp_path):
    """skopeo writes an OCI layout of a modelreg model and pushes it back; modelreg pulls it."""
    model = write_tree(tmp_path / "model", FILES)
    staging = f"{registry_plain.host}/interop/skopeo-staging"
    digest = ok("push", str(model), f"{staging}:v1")["digest"]
    layout = tmp_path / "layout"
    _copy(f"docker://{staging}:v1", f"oci:{layout}:v1")
    dst = f"{registry_plain.host}/interop/skopeo-from-layout"
    _copy(f"oci:{layout}:v1", f"docker://{dst}:v1")
    assert ok("inspect", f"{dst}:v1")["digest"] == digest
    out = tmp_path / "out"
    ok("pull", f"{dst}:v1", "-o", str(out))
    assert tree(out) == tree(model)
    # and skopeo reads what modelreg copied into a layout of its own
    mine = tmp_path / "mine"
    ok("cp", f"{staging}:v1", f"oci:{mine}:v1")
    done = peer(tool("skopeo"), "inspect", "--raw", f"oci:{mine}:v1")
    assert done.returncode == 0, done.stderr
    assert '"artifactType"' in done.stdout
