"""pack and run against the embedded local store; checks that refuse before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelreg.client import Client, RemoteOptions
from modelreg.errors import InvalidInputError, VerificationError
from modelreg.oci.manifest import Manifest
from modelreg.wasm import (
    ANN_MODEL,
    ReadRecord,
    all_of,
    pack,
    read_bundle,
    run,
    signature_check,
)
from tests.unit.wasm.example import Example
from tests.unit.wasm.guests import CAT


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELREG_HOME", str(tmp_path / "home"))
    with Client(RemoteOptions(fsync=False)) as c:
        yield c


@pytest.fixture
def packed(client, example: Example):
    pushed = client.push(example.model_dir, "models/mlp:v1")
    result = pack(client, example.wasm, model="models/mlp:v1", ref="apps/mlp:v1")
    return pushed, result


def test_pack_pins_the_model_digest_and_moves_no_weights(client, packed, example):
    pushed, result = packed
    assert result.model == f"models/mlp@{pushed.digest}"
    assert result.reference == f"apps/mlp:v1@{result.digest}"
    assert result.imports == ("abi_version", "tensor_find", "tensor_info", "tensor_read")
    _, target, desc = client.resolve("apps/mlp:v1")
    bundle = read_bundle(target, desc)
    # what was sent: the module and the config, nothing of the model
    sent = result.transfer.bytes_sent
    assert sent == example.wasm.stat().st_size + bundle.manifest.config.size
    assert result.transfer.blobs_sent == 2
    assert bundle.manifest.annotations[ANN_MODEL] == result.model


def test_pack_refuses_a_bad_module_before_pushing(client, packed, tmp_path):
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\x00asm\x01\x00\x00\x00\x05")
    with pytest.raises(Exception, match="not a valid WebAssembly module"):
        pack(client, bad, model="models/mlp:v1", ref="apps/bad:v1")
    with pytest.raises(InvalidInputError, match="cannot push to a digest"):
        pack(client, CAT, model="models/mlp:v1", ref=f"apps/x@sha256:{'0' * 64}")
    with pytest.raises(InvalidInputError, match="--subject needs the bundle in the model"):
        pack(client, CAT, model="models/mlp:v1", ref="apps/x:v1", subject=True)
    assert not any(row["name"].startswith(("apps/bad", "apps/x")) for row in client.list_store())


def test_subject_when_the_bundle_sits_next_to_its_model(client, packed, example):
    result = pack(client, example.wasm, model="models/mlp:v1", ref="models/mlp:wasm", subject=True)
    _, target, desc = client.resolve("models/mlp:wasm")
    bundle = read_bundle(target, desc)
    assert bundle.manifest.subject is not None
    assert str(bundle.manifest.subject.digest) == result.model.split("@")[1]
    _, _, model_desc = client.resolve("models/mlp:v1")
    assert desc.digest in {d.digest for d in target.referrers(model_desc)}


def test_run_matches_the_reference(client, packed, example):
    records: list[ReadRecord] = []
    ran = run(client, "apps/mlp:v1", stdin=example.inputs, on_read=records.append)
    assert ran.result.ok and ran.result.stdout == example.expected()
    assert ran.bundle == "apps/mlp@" + packed[1].digest
    assert ran.model == packed[1].model
    assert {r.name for r in records} == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}


class Recorder:
    """An injected check: records what it is asked, refuses one role."""

    def __init__(self, refuse: str | None = None) -> None:
        self.refuse = refuse
        self.seen: list[tuple[str, str]] = []

    def __call__(self, role, reference, target, desc) -> None:
        self.seen.append((role, str(desc.digest)))
        if role == self.refuse:
            raise VerificationError(f"{role} {reference} is not trusted")


def test_injected_check_sees_module_then_model(client, packed, example):
    check = Recorder()
    run(client, "apps/mlp:v1", stdin=example.inputs, check=check)
    pushed, result = packed
    assert check.seen == [("module", result.digest), ("model", pushed.digest)]


@pytest.mark.parametrize("role", ["module", "model"])
def test_refusal_stops_before_anything_runs(client, packed, example, role):
    check = Recorder(refuse=role)
    records: list[ReadRecord] = []
    with pytest.raises(VerificationError, match=f"{role} .* is not trusted") as info:
        run(client, "apps/mlp:v1", stdin=example.inputs, check=check, on_read=records.append)
    assert info.value.exit_code == 7
    assert records == []  # the module never ran: no tensor was served
    assert [r for r, _ in check.seen][-1] == role


def test_signature_check_refuses_unsigned_then_accepts_signed(client, packed, example):
    from modelreg.sign import KeySigner, generate_private_key, public_key_pem, sign
    from modelreg.verify import KeyAuthority, VerificationPolicy

    key = generate_private_key()
    policy = VerificationPolicy(
        authorities=(KeyAuthority(public_key_pem(key.public_key()), name="release"),)
    )
    check = signature_check(policy)
    with pytest.raises(VerificationError, match=r"the module apps/mlp@.* is not verified"):
        run(client, "apps/mlp:v1", stdin=example.inputs, check=check)
    _, target, desc = client.resolve("apps/mlp:v1")
    sign(target, desc, KeySigner(key), name="apps/mlp")
    with pytest.raises(VerificationError, match=r"the model models/mlp@.* is not verified"):
        run(client, "apps/mlp:v1", stdin=example.inputs, check=check)
    _, target, desc = client.resolve("models/mlp:v1")
    sign(target, desc, KeySigner(key), name="models/mlp")
    ran = run(client, "apps/mlp:v1", stdin=example.inputs, check=all_of(check, Recorder()))
    assert ran.result.stdout == example.expected()


def test_model_override_must_keep_the_pinned_digest(client, packed, example):
    pushed, _ = packed
    client.copy("models/mlp:v1", "mirror/mlp:v1")
    ran = run(client, "apps/mlp:v1", stdin=example.inputs, model="mirror/mlp")
    assert ran.model == f"mirror/mlp@{pushed.digest}" and ran.result.ok
    other = "sha256:" + "1" * 64
    with pytest.raises(InvalidInputError, match="but the bundle pins"):
        run(client, "apps/mlp:v1", model=f"mirror/mlp@{other}")


def test_running_something_that_is_not_a_bundle(client, packed):
    from modelreg.errors import FormatError

    with pytest.raises(FormatError, match="not a WebAssembly bundle"):
        run(client, "models/mlp:v1")


def test_bundle_manifest_is_an_oci_manifest(client, packed):
    _, target, desc = client.resolve("apps/mlp:v1")
    assert isinstance(read_bundle(target, desc).manifest, Manifest)
    assert Path(client.store.root).is_dir()
