"""skopeo (Debian's 1.9, installed by ``.ci/install-deps``) and modelreg, both ways,
through real registries and OCI layouts, signatures included.

A model modelreg pushed copies with skopeo (digests preserved) and pulls intact; a
layout skopeo wrote pushes back and pulls; skopeo inspects a layout modelreg wrote.

Signatures: Distribution 2.8 has no referrers API, so ``modelreg sign`` stores them
through the tag schema, an index tagged ``sha256-<manifest hex>`` listing the bundle
manifests. skopeo knows nothing of referrers, but copies that tag like any index
(``--all``), and ``skopeo sync`` copies it with every other tag. skopeo 1.9 decodes
and re-encodes the index with image-spec 1.1.0-rc2, whose descriptor has no
``artifactType``: with ``--preserve-digests`` it refuses ("Manifest list must be
converted ... but we cannot modify it"), without it the copied index has lost every
entry's ``artifactType`` (the bundle manifests themselves arrive byte for byte).
modelreg reads such entries' types from the referrer manifests
(:mod:`modelreg.content.fallback_entries`), so the copy verifies; these tests failed
(0 signatures, exit 7) before that.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration.registry_server import RegistryFactory, RegistryServer
from tests.interop.peers import NO_PASSWORD, key_pair, ok, peer, run, tool, tree, write_tree

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


def _copy_signed(src: str, dst: str, digest: str) -> None:
    """What a user does with skopeo: the tag, then the signatures' fallback tag (which
    skopeo 1.9 can copy only by re-encoding it: no ``--preserve-digests``)."""
    _copy(f"{src}:v1", f"{dst}:v1")
    sig_tag = digest.replace(":", "-")
    _copy(f"{src}:{sig_tag}", f"{dst}:{sig_tag}", preserve=False)


def _signed_model(tmp_path: Path, ref: str) -> tuple[Path, Path, str]:
    """A model written, pushed to ``ref`` and signed with a new key: (model directory,
    public key file, digest)."""
    model = write_tree(tmp_path / "model", FILES)
    priv, pub = key_pair(tmp_path)
    digest: str = ok("push", str(model), ref)["digest"]
    ok("sign", ref, "--key", str(priv), env=NO_PASSWORD)
    return model, pub, digest


def _verified(ref: str, pub: Path, digest: str) -> None:
    verified = ok("verify", ref, "--key", str(pub))
    assert verified["ok"] and verified["digest"] == digest, verified
    assert [s["kind"] for s in verified["signatures"]] == ["key"], verified


def _arrived_intact(
    dst: str, pull_ref: str, pub: Path, digest: str, model: Path, out: Path
) -> None:
    """``dst:v1`` is the signed model: its digest, a signature that verifies, and
    ``pull_ref`` pulls its files into ``out`` byte for byte."""
    assert ok("inspect", f"{dst}:v1")["digest"] == digest
    _verified(f"{dst}:v1", pub, digest)
    ok("pull", pull_ref, "-o", str(out))
    assert tree(out) == tree(model)


@pytest.fixture
def other(registry_factory: RegistryFactory) -> RegistryServer:
    """A second registry, the one skopeo copies to."""
    return registry_factory()


def test_skopeo_copies_a_signed_modelreg_model(
    registry_plain: RegistryServer, other: RegistryServer, tmp_path: Path
) -> None:
    src = f"{registry_plain.host}/interop/skopeo-src"
    model, pub, digest = _signed_model(tmp_path, f"{src}:v1")
    dst = f"{other.host}/interop/skopeo-dst"
    _copy_signed(f"docker://{src}", f"docker://{dst}", digest)
    _arrived_intact(dst, f"{dst}@{digest}", pub, digest, model, tmp_path / "out")
    # without the fallback tag the signatures stay behind: the copy does not verify
    bare = f"{other.host}/interop/skopeo-bare"
    _copy(f"docker://{src}:v1", f"docker://{bare}:v1")
    assert run("verify", f"{bare}:v1", "--key", str(pub)).exit_code == 7


def test_skopeo_sync_carries_signatures(
    registry_plain: RegistryServer, other: RegistryServer, tmp_path: Path
) -> None:
    """``skopeo sync`` of the repository copies every tag, the fallback tag included."""
    src = f"{registry_plain.host}/interop/skopeo-sync/model"
    _, pub, digest = _signed_model(tmp_path, f"{src}:v1")
    _skopeo(
        "sync",
        "--all",
        "--src",
        "docker",
        "--dest",
        "docker",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        src,
        f"{other.host}/mirror",
    )
    _verified(f"{other.host}/mirror/model:v1", pub, digest)


def test_what_skopeo_copied_copies_on_with_its_signatures(
    registry_plain: RegistryServer, registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    """From skopeo's copy onwards: ``modelreg cp --recursive`` writes a complete fallback
    index again, and a second skopeo hop from there verifies too."""
    mirror, third = registry_factory(), registry_factory()
    src = f"{registry_plain.host}/interop/skopeo-hop"
    _, pub, digest = _signed_model(tmp_path, f"{src}:v1")
    copied = f"{mirror.host}/interop/skopeo-hop"
    _copy_signed(f"docker://{src}", f"docker://{copied}", digest)
    back = f"{registry_plain.host}/interop/skopeo-back"
    ok("cp", f"{copied}:v1", f"{back}:v1", "--recursive")
    _verified(f"{back}:v1", pub, digest)
    kinds = {r["artifactType"] for r in ok("referrers", f"{back}:v1")["referrers"]}
    assert "application/vnd.dev.sigstore.bundle.v0.3+json" in kinds, kinds
    sig_tag = digest.replace(":", "-")
    done = peer(
        tool("skopeo"), "inspect", "--raw", "--tls-verify=false", f"docker://{back}:{sig_tag}"
    )
    assert done.returncode == 0, done.stderr
    entries = json.loads(done.stdout)["manifests"]
    assert entries and all(e.get("artifactType") for e in entries), entries  # complete again
    again = f"{third.host}/interop/skopeo-again"
    _copy_signed(f"docker://{copied}", f"docker://{again}", digest)
    _verified(f"{again}:v1", pub, digest)


def test_modelreg_reads_what_skopeo_wrote_from_an_oci_layout(
    registry_plain: RegistryServer, tmp_path: Path
) -> None:
    """skopeo writes an OCI layout of a signed modelreg model (both tags), where modelreg
    verifies it, and pushes it back; modelreg pulls and verifies it."""
    staging = f"{registry_plain.host}/interop/skopeo-staging"
    model, pub, digest = _signed_model(tmp_path, f"{staging}:v1")
    layout = tmp_path / "layout"
    _copy_signed(f"docker://{staging}", f"oci:{layout}", digest)
    _verified(f"oci:{layout}:v1", pub, digest)  # the fallback tag is in index.json
    dst = f"{registry_plain.host}/interop/skopeo-from-layout"
    _copy_signed(f"oci:{layout}", f"docker://{dst}", digest)
    _arrived_intact(dst, f"{dst}:v1", pub, digest, model, tmp_path / "out")
    # and skopeo reads what modelreg copied into a layout of its own
    mine = tmp_path / "mine"
    ok("cp", f"{staging}:v1", f"oci:{mine}:v1")
    done = peer(tool("skopeo"), "inspect", "--raw", f"oci:{mine}:v1")
    assert done.returncode == 0, done.stderr
    assert '"artifactType"' in done.stdout
