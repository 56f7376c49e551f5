"""Issue 2 end to end: the CLI against real Distribution registries."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from modelreg_cli.main import app

from tests.integration.faults import CuttingProxy
from tests.integration.helpers import (
    flip_stored_byte,
    llm_dir,
    ok,
    oras_py,
    refused_pull,
    run,
    runner,
    same_tree,
    skopeo,
)
from tests.schemas import validate_manifest, validate_model_config


@pytest.fixture
def model(tmp_path) -> Path:
    root = llm_dir(tmp_path / "my-model", 3 * 1024 * 1024 + 7, tokenizer_dir="tok")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    return root


def test_push_pull_inspect_tags_plain(registry_plain, model, tmp_path):
    ref = f"{registry_plain.host}/e2e/plain:v1"
    pushed = ok("push", str(model), ref)
    assert pushed["bytesSent"] > 3 * 1024 * 1024
    again = ok("push", str(model), ref)
    assert again["bytesSent"] == 0 and again["digest"] == pushed["digest"]
    info = ok("inspect", ref)
    assert info["digest"] == pushed["digest"]
    validate_manifest(json.dumps(info["manifest"]).encode())
    validate_model_config(json.dumps(info["config"]).encode())
    out = tmp_path / "out"
    pulled = ok("pull", ref, "-o", str(out))
    assert pulled["bytesFetched"] == sum(f["size"] for f in info["files"])
    same_tree(model, out)
    assert os.stat(out / "run.sh").st_mode & 0o777 == 0o755
    # warm cache: nothing travels
    warm = ok("pull", ref, "-o", str(tmp_path / "out2"))
    assert warm["bytesFetched"] == 0
    same_tree(model, tmp_path / "out2")
    assert ok("tags", f"{registry_plain.host}/e2e/plain")["tags"] == ["v1"]
    by_digest = ok("inspect", f"{registry_plain.host}/e2e/plain@{pushed['digest']}")
    assert by_digest["digest"] == pushed["digest"]


def test_basic_auth_over_tls(registry_tls_basic, model, tmp_path, monkeypatch):
    ref = f"{registry_tls_basic.host}/e2e/tls:v1"
    ca = ["--ca-file", str(registry_tls_basic.ca_file)]
    denied = run("push", str(model), ref, *ca)
    assert denied.exit_code == 4, denied.output
    assert "login" in denied.stderr
    untrusted = run("inspect", ref)
    assert untrusted.exit_code == 6 and "--ca-file" in untrusted.stderr
    config = registry_tls_basic.docker_config(tmp_path)
    monkeypatch.setenv("DOCKER_CONFIG", str(config.parent))
    ok("push", str(model), ref, *ca)
    ok("pull", ref, "-o", str(tmp_path / "out"), *ca)
    same_tree(model, tmp_path / "out")


def test_login_logout_write_docker_config(registry_tls_basic, tmp_path, monkeypatch):
    cfg_dir = tmp_path / "dockercfg"
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg_dir))
    host = registry_tls_basic.host
    ca = ["--ca-file", str(registry_tls_basic.ca_file)]
    bad = runner.invoke(
        app, ["login", host, "-u", "modelreg", "--password-stdin", *ca], input="wrong\n"
    )
    assert bad.exit_code == 4 and "wrong" not in bad.output
    assert not (cfg_dir / "config.json").exists()
    good = runner.invoke(
        app,
        ["login", host, "-u", registry_tls_basic.username, "--password-stdin", *ca],
        input=registry_tls_basic.password + "\n",
    )
    assert good.exit_code == 0, good.output
    assert registry_tls_basic.password not in good.output
    cfg = cfg_dir / "config.json"
    assert oct(cfg.stat().st_mode & 0o777) == "0o600"
    assert host in json.loads(cfg.read_text())["auths"]
    assert run("tags", f"{host}/none", *ca).exit_code in (0, 3)  # authenticated now
    assert run("logout", host).exit_code == 0
    assert host not in json.loads(cfg.read_text()).get("auths", {})


def test_token_auth(registry_token, model, tmp_path, monkeypatch):
    ref = f"{registry_token.host}/e2e/token:v1"
    assert run("push", str(model), ref).exit_code == 4
    config = registry_token.docker_config(tmp_path)
    monkeypatch.setenv("DOCKER_CONFIG", str(config.parent))
    ok("push", str(model), ref)
    ok("pull", ref, "-o", str(tmp_path / "out"))
    same_tree(model, tmp_path / "out")


def test_copy_between_repositories_mounts(registry_plain, model):
    src = f"{registry_plain.host}/e2e/cp-src:v1"
    pushed = ok("push", str(model), src)
    copied = ok("cp", src, f"{registry_plain.host}/e2e/cp-dst:v1")
    assert copied["digest"] == pushed["digest"]
    assert copied["bytesSent"] <= 1024  # only the config may travel; layers are mounted
    assert copied["blobsMounted"] >= 3
    assert ok("inspect", f"{registry_plain.host}/e2e/cp-dst:v1")["digest"] == pushed["digest"]


def test_copy_local_store_to_registry_and_layout(registry_plain, model, tmp_path):
    pushed = ok("push", str(model), "local/llm:v1")
    ok("cp", "local/llm:v1", f"{registry_plain.host}/e2e/from-store:v1")
    ok("cp", f"{registry_plain.host}/e2e/from-store:v1", f"oci:{tmp_path / 'layout'}:v1")
    out = tmp_path / "out"
    ok("pull", f"oci:{tmp_path / 'layout'}:v1", "-o", str(out))
    same_tree(model, out)
    assert ok("inspect", f"oci:{tmp_path / 'layout'}:v1")["digest"] == pushed["digest"]


def test_error_paths(registry_plain, model, tmp_path):
    missing = run("pull", f"{registry_plain.host}/e2e/none:v9", "-o", str(tmp_path / "o"))
    assert missing.exit_code == 3 and "not found" in missing.stderr.lower()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    unreachable = run("inspect", f"127.0.0.1:{dead_port}/x:v1")
    assert unreachable.exit_code == 6, unreachable.output
    assert f"127.0.0.1:{dead_port}" in unreachable.stderr
    assert not (tmp_path / "o").exists()


def test_tampered_blob_in_registry_fails_and_writes_nothing(registry_factory, model, tmp_path):
    server = registry_factory()
    ref = f"{server.host}/e2e/tamper:v1"
    pushed = ok("push", str(model), ref)
    info = ok("inspect", ref)
    weight = next(f for f in info["files"] if f["path"] == "model.safetensors")
    flip_stored_byte(server.root_dir, weight["digest"], 100)
    result = refused_pull(ref, tmp_path / "out")
    assert weight["digest"] in result.stderr or "hashes to" in result.stderr
    assert pushed["digest"]


def test_upload_cut_midway_still_completes(registry_factory, tmp_path):
    server = registry_factory()
    root = tmp_path / "big"
    root.mkdir()
    payload = os.urandom(80 * 1024 * 1024)
    (root / "model.safetensors").write_bytes(payload)
    with CuttingProxy(server.port, cut_after=20 * 1024 * 1024) as proxy:
        ref = f"{proxy.host}/e2e/cut:v1"
        pushed = ok("push", str(root), ref)
        assert proxy.cuts == 1
    out = tmp_path / "out"
    ok("pull", f"{server.host}/e2e/cut@{pushed['digest']}", "-o", str(out))
    assert (out / "model.safetensors").read_bytes() == payload


# ------------------------------------------------------------------ interop
def test_oras_pushes_modelreg_pulls(registry_plain, tmp_path):
    src = tmp_path / "oras-src"
    src.mkdir()
    (src / "weights.bin").write_bytes(os.urandom(100_000))
    (src / "notes.txt").write_text("from oras")
    ref = f"{registry_plain.host}/interop/oras-made:v1"
    script = (
        "import os, oras.client\n"
        f"os.chdir({str(src)!r})\n"
        f"c = oras.client.OrasClient(hostname={registry_plain.host!r}, insecure=True)\n"
        f"c.push(target={ref!r}, files=['weights.bin', 'notes.txt'])\n"
    )
    done = oras_py(script)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    ok("pull", ref, "-o", str(out))
    same_tree(src, out)


def test_modelreg_pushes_oras_pulls(registry_plain, model, tmp_path):
    ref = f"{registry_plain.host}/interop/modelreg-made:v1"
    ok("push", str(model), ref)
    out = tmp_path / "oras-out"
    script = (
        "import oras.client\n"
        f"c = oras.client.OrasClient(hostname={registry_plain.host!r}, insecure=True)\n"
        f"print(c.pull(target={ref!r}, outdir={str(out)!r}))\n"
    )
    done = oras_py(script)
    assert done.returncode == 0, done.stderr
    for rel in ("config.json", "tok/tokenizer.json", "model.safetensors", "run.sh"):
        assert (out / rel).read_bytes() == (model / rel).read_bytes()


def test_skopeo_reads_and_copies_what_modelreg_pushes(registry_plain, model, tmp_path):
    ref = f"{registry_plain.host}/interop/skopeo:v1"
    pushed = ok("push", str(model), ref)
    inspect = ("inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
    raw = skopeo(*inspect, timeout=60)
    assert raw == skopeo(*inspect, timeout=60)
    from modelreg.oci import Digest

    assert str(Digest.from_bytes(raw)) == pushed["digest"]
    layout = tmp_path / "skopeo-layout"
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:copied")
    out = tmp_path / "out"
    ok("pull", f"oci:{layout}:copied", "-o", str(out))
    same_tree(model, out)
    dst = f"{registry_plain.host}/interop/skopeo-copy:v1"
    skopeo(
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        f"docker://{ref}",
        f"docker://{dst}",
    )
    out2 = tmp_path / "out2"
    ok("pull", dst, "-o", str(out2), "--no-cache")
    same_tree(model, out2)
