"""deploy/mirrors/: the node hosts.toml parses with modelreg's own parser and points at
the Service the manifests create; the manifests are valid YAML of the kinds promised,
and the cache's configuration is Distribution's proxy mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from modelreg.content.registry.hosts import parse_hosts_toml

DEPLOY = Path(__file__).resolve().parents[4] / "deploy" / "mirrors"
UPSTREAM = "registry.example.com"


def _docs() -> dict[str, dict[str, Any]]:
    text = (DEPLOY / "pull-through-cache.yaml").read_text()
    return {doc["kind"]: doc for doc in yaml.safe_load_all(text) if doc}


def test_hosts_toml_parses_and_the_cache_may_only_pull() -> None:
    path = DEPLOY / "hosts.toml"
    config = parse_hosts_toml(path.read_text(), path=str(path), host=UPSTREAM)
    assert config.server.host == UPSTREAM and config.server.scheme == "https"
    (cache,) = config.mirrors
    assert cache.capabilities == frozenset({"pull"})  # never "resolve": see README
    assert cache.plain_http and cache.dial_timeout == 1.0


def test_manifests_are_the_kinds_promised_and_agree_with_hosts_toml() -> None:
    docs = _docs()
    assert {"Namespace", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"} <= set(docs)
    path = DEPLOY / "hosts.toml"
    (cache,) = parse_hosts_toml(path.read_text(), path=str(path), host=UPSTREAM).mirrors
    service = docs["Service"]["spec"]
    assert cache.host == f"{service['clusterIP']}:{service['ports'][0]['port']}"
    deployment = docs["Deployment"]["spec"]
    labels = deployment["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    volumes = {v["name"]: v for v in deployment["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    claim = volumes["storage"]["persistentVolumeClaim"]["claimName"]
    assert claim == docs["PersistentVolumeClaim"]["metadata"]["name"]


def test_the_cache_is_distribution_in_proxy_mode() -> None:
    config = yaml.safe_load(_docs()["ConfigMap"]["data"]["config.yml"])
    assert config["proxy"]["remoteurl"] == f"https://{UPSTREAM}"
    assert config["http"]["addr"] == ":5000"
    assert config["storage"]["filesystem"]["rootdirectory"] == "/var/lib/registry"
