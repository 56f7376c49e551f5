"""The shipped artifact policies against models really packed and pushed by modelreg:
the packer's config (format, licenses) and its pickle flags feed the policy rules."""

from __future__ import annotations

import json
import os
import pickle
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelreg.client import Client, RemoteOptions
from modelreg.model.pack import ModelMetadata
from modelreg.policy import PolicySet, evaluate, gather_facts, parse_policies
from tests.integration.helpers import module_home

ROOT = Path(__file__).parents[2]


def safetensors_bytes() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + bytes(16)


def shipped(name: str, host: str, repo: str) -> PolicySet:
    text = (ROOT / "policies" / name).read_text()
    text = text.replace('"registry.example.com/**"', f'"{host}/{repo}/**"')
    text = text.replace('"registry.example.com/models/**"', f'"{host}/{repo}/**"')
    return PolicySet(tuple(parse_policies(text, name, ROOT / "policies")))


@pytest.fixture(scope="module")
def pushed(
    registry_plain: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    with module_home(tmp_path_factory, "artifacts") as tmp:
        host, repo = registry_plain.host, f"pa{os.getpid()}"
        models = {
            "safe": (
                {"model.safetensors": safetensors_bytes(), "config.json": b"{}"},
                ("Apache-2.0",),
            ),
            "gpl": ({"model.safetensors": safetensors_bytes()}, ("GPL-3.0-only",)),
            "torch": ({"pytorch_model.bin": pickle.dumps({"w": [1, 2, 3]})}, ("MIT",)),
            # a pickle under a data format's name: the packer flags it by content
            "disguised": ({"model.safetensors": pickle.dumps([1, 2, 3], protocol=4)}, ("MIT",)),
            # a pickle under a name the packer classifies as a document: flagged by content too
            "doc-pickle": ({"weights.dat": pickle.dumps([1, 2, 3], protocol=4)}, ("MIT",)),
        }
        client = Client(RemoteOptions(store=str(tmp / "store"), fsync=False))
        refs = {}
        for name, (files, licenses) in models.items():
            src = tmp / name
            src.mkdir()
            for f, data in files.items():
                (src / f).write_bytes(data)
            ref = f"{host}/{repo}/{name}:v1"
            client.push(
                src, ref, metadata=ModelMetadata(name=name, version="1.0", licenses=licenses)
            )
            refs[name] = ref
        yield {"client": client, "refs": refs, "host": host, "repo": repo}
        client.close()


def decide(pushed: dict[str, Any], policy: str, model: str) -> Any:
    ps = shipped(policy, pushed["host"], pushed["repo"])
    facts = gather_facts(pushed["client"], pushed["refs"][model], ps)
    assert not facts.errors, facts.errors
    return evaluate(ps, facts)


@pytest.mark.parametrize(
    ("model", "allowed", "why"),
    [
        ("safe", True, ""),
        ("torch", False, "pytorch_model.bin"),
        ("disguised", False, "model.safetensors"),
        ("doc-pickle", False, "weights.dat"),
    ],
)
def test_no_pickle_on_packed_models(
    pushed: dict[str, Any], model: str, allowed: bool, why: str
) -> None:
    d = decide(pushed, "no-pickle.yaml", model)
    assert d.matched
    assert d.allowed is allowed, d.problems
    if why:
        assert any(why in p for p in d.problems)


@pytest.mark.parametrize(("model", "allowed"), [("safe", True), ("gpl", False)])
def test_license_allowlist_on_packed_models(
    pushed: dict[str, Any], model: str, allowed: bool
) -> None:
    d = decide(pushed, "license-allowlist.yaml", model)
    assert d.allowed is allowed, d.problems
