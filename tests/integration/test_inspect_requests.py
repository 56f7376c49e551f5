"""inspect and diff by tag read each manifest with one GET (no HEAD to resolve it first):
on a model of thousands of grouped files the round trips are what inspect costs beside
the listing (issue 18: inspect within 2x a manifest GET + config GET)."""

from __future__ import annotations

from pathlib import Path

from modelreg.client import Client, RemoteOptions
from tests.integration.lazy_proxy import LazyProxy
from tests.integration.test_many_files import many_files


def _client(tmp_path: Path) -> Client:
    return Client(RemoteOptions(plain_http=True, store=str(tmp_path / "store"), fsync=False))


def test_inspect_by_tag_is_one_manifest_get_and_one_config_get(registry_plain, tmp_path):
    src = many_files(tmp_path / "src", 200)
    with _client(tmp_path) as client:
        client.push(src, f"{registry_plain.host}/req/inspect:v1")
    with LazyProxy(registry_plain.port) as proxy, _client(tmp_path) as client:
        result = client.inspect(f"{proxy.host}/req/inspect:v1")
        calls = [(entry.method, entry.path.split("/v2/req/inspect/")[-1]) for entry in proxy.log]
    config = result.manifest.config.digest
    assert calls == [("GET", "manifests/v1"), ("GET", f"blobs/{config}")]
    assert len([f for f in result.files if f["kind"] == "grouped"]) == 200


def test_inspect_by_digest_still_checks_the_digest(registry_plain, tmp_path):
    src = many_files(tmp_path / "src", 5)
    with _client(tmp_path) as client:
        pushed = client.push(src, f"{registry_plain.host}/req/digest:v1")
        by_digest = client.inspect(f"{registry_plain.host}/req/digest@{pushed.digest}")
    assert str(by_digest.descriptor.digest) == pushed.digest


def test_diff_by_tags_reads_each_manifest_once(registry_plain, tmp_path):
    src = many_files(tmp_path / "src", 20)
    with _client(tmp_path) as client:
        client.push(src, f"{registry_plain.host}/req/diff:v1")
        (src / "part1" / "sub1" / "f00001.json").write_bytes(b"changed")
        client.push(src, f"{registry_plain.host}/req/diff:v2")
    with LazyProxy(registry_plain.port) as proxy, _client(tmp_path) as client:
        diff = client.diff(f"{proxy.host}/req/diff:v1", f"{proxy.host}/req/diff:v2", tensors=False)
        calls = [(entry.method, entry.path.split("/v2/req/diff/")[-1]) for entry in proxy.log]
    assert calls == [("GET", "manifests/v1"), ("GET", "manifests/v2")]
    changed = [f.path for f in diff.files if f.status != "unchanged"]
    assert changed == ["part1/sub1/f00001.json"]
