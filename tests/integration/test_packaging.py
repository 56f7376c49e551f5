"""Issue 3 end to end against a real Distribution registry: metadata from the model,
tensor-aligned parts (--split), remote tensor listings, diff, Hugging Face snapshots."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
from pathlib import Path

from tests.integration.helpers import (
    checkpoint,
    flip_stored_byte,
    ok,
    oras_py,
    refused_pull,
    run,
    same_tree,
    skopeo,
)
from tests.listeners import AcceptingInThread, close_quietly
from tests.schemas import validate_manifest, validate_model_config

TESTDATA = Path(__file__).resolve().parents[2] / "testdata"
PART_MEDIA_TYPE = "application/vnd.modelreg.weight.part.v1.raw"


def manifest_of(ref: str) -> dict:
    info = ok("inspect", ref)
    validate_manifest(json.dumps(info["manifest"]).encode())
    validate_model_config(json.dumps(info["config"]).encode())
    return info


def test_split_v2_sends_only_changed_parts(registry_factory, tmp_path):
    server = registry_factory()
    v1 = checkpoint(tmp_path / "v1")
    v2 = checkpoint(tmp_path / "v2", changed=frozenset({5, 20, 41}))
    repo = f"{server.host}/split/llm"
    # no chunk index: this test counts the bytes of changed parts, and the index is more
    split = ["--split", "--part-size", "64KiB", "--no-chunk-index"]
    first = ok("push", str(v1), f"{repo}:v1", *split)
    assert first["splitFiles"] == 1 and first["layers"] > 40
    info1 = manifest_of(f"{repo}:v1")
    parts1 = {layer["digest"] for layer in info1["manifest"]["layers"]}
    second = ok("push", str(v2), f"{repo}:v2", *split)
    info2 = manifest_of(f"{repo}:v2")
    new = [layer for layer in info2["manifest"]["layers"] if layer["digest"] not in parts1]
    assert {layer["mediaType"] for layer in new} == {PART_MEDIA_TYPE}
    assert len(new) == 3  # each changed tensor sits alone in its 64 KiB part
    config_size = info2["manifest"]["config"]["size"]
    assert second["bytesSent"] == sum(layer["size"] for layer in new) + config_size
    weights = (v2 / "model.safetensors").stat().st_size
    assert second["bytesSent"] < 0.08 * weights
    assert second["bytesSkipped"] > 0.9 * weights
    # another repository of the same registry: unchanged parts are mounted, not sent
    third = ok("push", str(v2), f"{server.host}/split/copy:v2", *split)
    assert third["bytesSent"] == 0 and third["blobsMounted"] >= 40
    # the text output shows the same three counts
    text = run("push", str(v2), f"{repo}:v2", *split)
    assert text.exit_code == 0 and "sent 0 B" in text.stdout and "skipped" in text.stdout
    assert "mounted" in text.stdout

    # pull from the registry: byte-identical, every part and the whole file verified
    out = tmp_path / "out-v2"
    pulled = ok("pull", f"{repo}:v2", "-o", str(out), "--no-cache")
    same_tree(v2, out)
    entry = next(f for f in pulled["files"] if f["path"] == "model.safetensors")
    whole = next(
        layer for layer in info2["manifest"]["layers"] if layer["mediaType"] == PART_MEDIA_TYPE
    )
    assert entry["digest"] == whole["annotations"]["dev.modelreg.file.digest"]
    # with v1 in the cache, only the changed parts travel
    ok("pull", f"{repo}:v1", "-o", str(tmp_path / "out-v1"))
    same_tree(v1, tmp_path / "out-v1")
    warm = ok("pull", f"{repo}:v2", "-o", str(tmp_path / "out-v2b"))
    assert warm["bytesFetched"] == sum(layer["size"] for layer in new) + sum(
        layer["size"]
        for layer in info2["manifest"]["layers"]
        if layer["mediaType"] != PART_MEDIA_TYPE and layer["digest"] not in parts1
    )
    same_tree(v2, tmp_path / "out-v2b")

    # diff: which tensors changed, how many bytes the versions share
    d = ok("diff", f"{repo}:v1", f"{repo}:v2")
    weights_diff = next(f for f in d["files"] if f["path"] == "model.safetensors")
    changed = [t["name"] for t in weights_diff["tensors"] if t["status"] == "changed"]
    assert changed == sorted(
        f"model.layers.{i // 4}.self_attn.p{i % 4}.weight" for i in (5, 20, 41)
    )
    assert d["bytes"]["onlyB"] == sum(layer["size"] for layer in new)
    text = run("diff", f"{repo}:v1", f"{repo}:v2")
    assert text.exit_code == 0 and "~ model.safetensors" in text.stdout


def test_tampered_part_in_registry_fails_nothing_written(registry_factory, tmp_path):
    server = registry_factory()
    ref = f"{server.host}/split/tamper:v1"
    model = checkpoint(tmp_path / "m")
    ok("push", str(model), ref, "--split", "--part-size", "64KiB")
    info = manifest_of(ref)
    layers = info["manifest"]["layers"]
    part = [layer for layer in layers if layer["mediaType"] == PART_MEDIA_TYPE][7]
    flip_stored_byte(server.root_dir, part["digest"], 1000)
    result = refused_pull(ref, tmp_path / "out")
    assert "part 8 of" in result.stderr and "model.safetensors" in result.stderr


def test_remote_tensor_listing_reads_headers_only(registry_plain, tmp_path):
    ref = f"{registry_plain.host}/tensors/tiny-llm:v1"
    ok("push", str(TESTDATA / "models" / "tiny-llm"), ref)
    info = ok("inspect", ref, "--tensors")
    listing = info["tensors"]
    assert len(listing["tensors"]) == 21 and listing["problems"] == []
    row = next(t for t in listing["tensors"] if t["name"] == "lm_head.weight")
    assert row == {
        "file": "model-00002-of-00002.safetensors",
        "name": "lm_head.weight",
        "dtype": "BF16",
        "precision": "bfloat16",
        "shape": [320, 64],
        "bytes": 40960,
        "offset": row["offset"],
    }
    assert listing["bytesFetched"] <= 2 * 64 * 1024 + 4096
    cfg = info["config"]["config"]
    assert cfg == {
        "format": "safetensors",
        "paramSize": "115k",
        "precision": "bfloat16,float16,float32",
        "architecture": "llama",
    }
    text = run("inspect", ref, "--tensors")
    assert text.exit_code == 0 and "lm_head.weight" in text.stdout and "[320, 64]" in text.stdout


def test_remote_listing_of_a_big_split_file_costs_little(registry_plain, tmp_path):
    model = checkpoint(tmp_path / "m")
    ref = f"{registry_plain.host}/tensors/split:v1"
    ok("push", str(model), ref, "--split", "--part-size", "64KiB")
    listing = ok("inspect", ref, "--tensors")["tensors"]
    assert len(listing["tensors"]) == 48
    assert listing["bytesFetched"] <= 64 * 1024 + 8192


class RangeStrippingProxy(AcceptingInThread):
    """Forwards to the registry but removes ``Range`` from requests (a registry that
    ignores Range and answers 200 with the whole blob)."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self.stripped = 0

    def connected(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        threading.Thread(target=self._requests, args=(conn, upstream), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, conn), daemon=True).start()

    def _requests(self, src: socket.socket, dst: socket.socket) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = src.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                kept = [line for line in lines if not line.lower().startswith(b"range:")]
                self.stripped += len(lines) - len(kept)
                length = 0
                for line in kept:
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                while len(buf) < length:
                    data = src.recv(65536)
                    if not data:
                        return
                    buf += data
                body, buf = buf[:length], buf[length:]
                dst.sendall(b"\r\n".join(kept) + b"\r\n\r\n" + body)
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            close_quietly(src, dst)


def test_tensor_listing_when_the_registry_ignores_range(registry_plain):
    ref = f"{registry_plain.host}/tensors/norange:v1"
    ok("push", str(TESTDATA / "models" / "tiny-llm"), ref)
    with RangeStrippingProxy(registry_plain.port) as proxy:
        remote = f"127.0.0.1:{proxy.port}/tensors/norange:v1"
        info = ok("inspect", remote, "--tensors", "--plain-http")
        assert proxy.stripped > 0
    assert len(info["tensors"]["tensors"]) == 21


def test_metadata_file_and_flags(registry_plain, tmp_path):
    root = tmp_path / "described"
    shutil.copytree(TESTDATA / "models" / "tiny-gguf", root)
    (root / "modelreg.toml").write_text(
        '[descriptor]\nname = "acme/tiny-gguf"\nversion = "1.0"\nlicenses = ["Apache-2.0"]\n'
        'authors = ["ACME"]\n[config]\ncapabilities = {inputTypes = ["text"]}\n'
    )
    ref = f"{registry_plain.host}/meta/gguf:v1"
    ok("push", str(root), ref, "--model-version", "1.1", "--revision", "deadbeef")
    cfg = manifest_of(ref)["config"]
    assert cfg["descriptor"] == {
        "authors": ["ACME"],
        "name": "acme/tiny-gguf",
        "version": "1.1",
        "revision": "deadbeef",
        "licenses": ["Apache-2.0"],
    }
    assert cfg["config"]["quantization"] == "Q8_0" and cfg["config"]["architecture"] == "llama"
    assert cfg["config"]["capabilities"] == {"inputTypes": ["text"]}


def test_pickles_flagged_in_annotation_and_inspect(registry_plain):
    ref = f"{registry_plain.host}/meta/pickles:v1"
    ok("push", str(TESTDATA / "models" / "pickle-model"), ref)
    info = ok("inspect", ref)
    flags = {f["path"]: f["unsafe"] for f in info["files"]}
    assert flags == {"config.json": False, "model.pkl": True, "pytorch_model.bin": True}
    layers = {
        layer["annotations"]["org.cncf.model.filepath"]: layer["annotations"]
        for layer in info["manifest"]["layers"]
    }
    assert layers["model.pkl"]["dev.modelreg.file.unsafe"] == "pickle"
    text = run("inspect", ref)
    assert "UNSAFE" in text.stdout
    listed = ok("inspect", ref, "--tensors")
    assert all(f["unsafeReason"] for f in listed["files"] if f["unsafe"])


def test_import_hugging_face_snapshot(registry_plain, tmp_path):
    shutil.copytree(TESTDATA / "hf-cache", tmp_path / "hf", symlinks=True)
    snaps = tmp_path / "hf" / "hub" / "models--tiny-org--tiny-llm" / "snapshots"
    snap = next(snaps.iterdir())
    ref = f"{registry_plain.host}/hf/tiny-llm:v1"
    pushed = ok("import", "hf", str(snap), ref)
    cfg = manifest_of(ref)["config"]
    assert cfg["descriptor"]["name"] == "tiny-org/tiny-llm"
    assert cfg["descriptor"]["revision"] == snap.name
    out = tmp_path / "out"
    ok("pull", ref, "-o", str(out))
    for name in os.listdir(snap):
        assert (out / name).read_bytes() == (snap / name).read_bytes()
        assert not (out / name).is_symlink()
    # `push` recognises the snapshot too, and gives the same artifact
    assert ok("push", str(snap), ref)["digest"] == pushed["digest"]
    bad = run("import", "hf", str(TESTDATA / "models" / "tiny-llm"), ref)
    assert bad.exit_code == 2 and "Hugging Face" in bad.stderr


def test_what_other_tools_see_of_a_split_artifact(registry_plain, tmp_path):
    model = checkpoint(tmp_path / "m")
    ref = f"{registry_plain.host}/interop/split:v1"
    ok("push", str(model), ref, "--split", "--part-size", "256KiB")
    # oras-py writes the named files; it names each part (no title) by its digest, so no
    # part is ever mistaken for model.safetensors
    out = tmp_path / "oras-out"
    done = oras_py(
        "import oras.client\n"
        f"c = oras.client.OrasClient(hostname={registry_plain.host!r}, insecure=True)\n"
        f"c.pull(target={ref!r}, outdir={str(out)!r})\n"
    )
    assert done.returncode == 0, done.stderr
    written = sorted(p.name for p in out.rglob("*") if p.is_file())
    named = [name for name in written if not name.startswith("sha256:")]
    assert named == ["config.json", "tokenizer.json"]
    info = ok("inspect", ref)
    parts = [layer for layer in info["manifest"]["layers"] if layer["mediaType"] == PART_MEDIA_TYPE]
    assert sorted(name for name in written if name.startswith("sha256:")) == sorted(
        {layer["digest"] for layer in parts}
    )
    # skopeo copies every blob; the copy pulls byte-identical
    layout = tmp_path / "skopeo-layout"
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:v1")
    ok("pull", f"oci:{layout}:v1", "-o", str(tmp_path / "from-skopeo"))
    same_tree(model, tmp_path / "from-skopeo")
