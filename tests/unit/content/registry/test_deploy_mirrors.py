"""deploy/mirrors/: the node hosts.toml parses with modelreg's own parser and points at
the Service the manifests create; the manifests are valid YAML of the kinds promised,
and the cache's configuration is Distribution's proxy mode."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelreg.content.registry.hosts import parse_hosts_toml

DEPLOY = Path(__file__).resolve().parents[4] / "deploy" / "mirrors"
UPSTREAM = "registry.example.com"


def _docs(manifest: str = "pull-through-cache.yaml") -> dict[str, dict[str, Any]]:
    text = (DEPLOY / manifest).read_text()
    return {doc["kind"]: doc for doc in yaml.safe_load_all(text) if doc}


def test_hosts_toml_parses_and_the_cache_may_only_pull() -> None:
    path = DEPLOY / "hosts.toml"
    config = parse_hosts_toml(path.read_text(), path=str(path), host=UPSTREAM)
    assert config.server.host == UPSTREAM and config.server.scheme == "https"
    (cache,) = config.mirrors
    assert cache.capabilities == frozenset({"pull"})  # never "resolve": see README
    assert cache.plain_http and cache.dial_timeout == 1.0


# either cache takes the place hosts.toml names: the one Service, Deployment and volumes
@pytest.mark.parametrize("manifest", ["pull-through-cache.yaml", "nginx-cache.yaml"])
def test_manifests_are_the_kinds_promised_and_agree_with_hosts_toml(manifest: str) -> None:
    docs = _docs(manifest)
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


# ------------------------------------------------------------------ nginx-cache.yaml


def test_nginx_cache_listens_where_the_service_points_and_fetches_the_upstream() -> None:
    docs = _docs("nginx-cache.yaml")
    service = docs["Service"]["spec"]
    (init,) = docs["Deployment"]["spec"]["template"]["spec"]["initContainers"]
    settings = {e["name"]: e.get("value") for e in init["env"]}
    assert settings["LISTEN"] == str(service["ports"][0]["port"])
    assert settings["UPSTREAM_HOST"] == UPSTREAM


def test_nginx_template_placeholders_are_exactly_what_render_sh_fills() -> None:
    data = _docs("nginx-cache.yaml")["ConfigMap"]["data"]
    listed = re.search(r"envsubst '([^']*)'", data["render.sh"])
    assert listed is not None
    names = set(re.findall(r"\$\{([A-Z_]+)\}", listed.group(1)))
    assert set(re.findall(r"\$\{([A-Z_]+)\}", data["nginx.conf.template"])) == names
    (init,) = _docs("nginx-cache.yaml")["Deployment"]["spec"]["template"]["spec"]["initContainers"]
    assert names <= {e["name"] for e in init["env"]}


def test_nginx_coalesces_only_content_addressed_reads() -> None:
    template = _docs("nginx-cache.yaml")["ConfigMap"]["data"]["nginx.conf.template"]
    # "location MATCH {" lines and their bodies, up to the brace closing at their indent
    found = re.finditer(r"^( *)location ([^\n]+) \{\n(.*?)\n\1\}", template, re.S | re.M)
    locations = {m[2]: m[3] for m in found}
    cached = {k: v for k, v in locations.items() if "proxy_cache registry;" in v}
    assert len(cached) == 2
    assert all("sha256:[0-9a-f]{64})$" in k for k in cached)  # blobs, manifests by digest
    for body in cached.values():
        assert "proxy_cache_lock on;" in body and "proxy_cache_lock_timeout" in body
    assert "proxy_cache off;" in locations["/v2/"]  # tags, referrers: never cached
    assert "return 200" in locations["= /v2/"]  # the API check never reaches the upstream
