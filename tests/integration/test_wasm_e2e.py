"""Issue 7 end to end: the worked example (examples/wasm-mlp) through a real registry.

Push the model (with a chunk index), ``wasm pack`` the module, sign both, ``wasm run``
with verification and compare with the NumPy reference; only the tensors the module
reads travel; a tampered weight chunk stops the run before the module sees it; the
memory and time limits stop a module with a clear error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from modelreg_cli import wasm_cmds
from modelreg_cli.main import app
from typer.testing import CliRunner

from modelreg.client import Client, RemoteOptions
from modelreg.errors import IntegrityError, VerificationError
from modelreg.lazy import chunk_index_annotations, push_chunk_index
from modelreg.sign import KeySigner, generate_private_key, public_key_pem, sign
from modelreg.wasm import ReadRecord, read_bundle, run
from tests.unit.wasm.example import Example, build_example, load_script
from tests.unit.wasm.guests import SPIN

wasm_cmds.register(app)
runner = CliRunner()
CHUNK = 64 * 1024
KiB = 1024


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Example:
    return build_example(Path(tmp_path_factory.mktemp("wasm-mlp")))


@pytest.fixture
def client():
    with Client(RemoteOptions(fsync=False)) as c:
        yield c


def cli(*args: str, **kw):
    return runner.invoke(app, list(args), **kw)


def push_model(client: Client, example: Example, ref: str, *, index: bool = True) -> str:
    """Push the example model; with ``index``, with a 64 KiB chunk index, else with none
    (files verified whole). Returns its digest.

    ``chunk_index=False`` either way: push writes its own index by default (chunks too
    coarse for this model, whose data fits in one), and that annotation overrides ours.
    """
    if not index:
        return client.push(example.model_dir, ref, chunk_index=False).digest
    files = sorted((p.name, p) for p in example.model_dir.iterdir())
    annotations, blob, index_desc = chunk_index_annotations(
        files, chunk_size=CHUNK, cache_dir=False
    )
    pushed = client.push(example.model_dir, ref, annotations=annotations, chunk_index=False)
    _, target, desc = client.resolve(ref)
    push_chunk_index(target, desc, blob, index_desc)
    return pushed.digest


def pack_bundle(module: Path, model: str, ref: str) -> dict:
    result = cli("wasm", "pack", str(module), "--model", model, "-t", ref, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def weights_digest(example: Example) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(example.weights.read_bytes()).hexdigest()


def blob_path(server, digest: str) -> Path:
    hex_ = digest.split(":", 1)[1]
    return server.root_dir / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


def served_bytes(server, digest: str) -> tuple[int, int]:
    """(requests, bytes written) the registry logged for GETs of blob ``digest``."""
    requests = written = 0
    for line in server.log_text().splitlines():
        if "response completed" not in line or f"/blobs/{digest}" not in line:
            continue
        if "http.request.method=GET" not in line:
            continue
        m = re.search(r"http\.response\.written=(\d+)", line)
        requests += 1
        written += int(m.group(1)) if m else 0
    return requests, written


def tensor_offset(example: Example, name: str) -> int:
    """Absolute offset of a tensor's data in the weights file."""
    import struct

    data = example.weights.read_bytes()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8 : 8 + n])
    return 8 + n + header[name]["data_offsets"][0]


def write_key(tmp_path: Path):
    key = generate_private_key()
    pub = tmp_path / "release.pub"
    pub.write_bytes(public_key_pem(key.public_key()))
    return key, pub


# ------------------------------------------------------------------------------------ tests
def test_signed_bundle_runs_lazily_and_matches_numpy(registry_factory, example, client, tmp_path):
    server = registry_factory()
    model_ref = f"{server.host}/models/mlp:v1"
    bundle_ref = f"{server.host}/apps/mlp-wasm:v1"
    model_digest = push_model(client, example, model_ref)
    packed = pack_bundle(example.wasm, model_ref, bundle_ref)
    assert packed["model"] == f"{server.host}/models/mlp@{model_digest}"

    # The bundle, as the registry serves it: the CNCF Wasm layout, the pin, no weights.
    _, target, desc = client.resolve(bundle_ref)
    bundle = read_bundle(target, desc)
    info = client.inspect(bundle_ref)
    assert info.config is not None and info.config["architecture"] == "wasm"
    assert info.config["os"] == "wasip1" and info.config["layerDigests"] == [
        str(bundle.manifest.layers[0].digest)
    ]
    assert [f["mediaType"] for f in info.files] == ["application/wasm"]
    assert info.total_size == example.wasm.stat().st_size
    # Copying (pulling) the bundle moves the module and config only, never the weights.
    copied = client.copy(bundle_ref, f"oci:{tmp_path / 'layout'}:v1")
    assert copied.bytes_sent == example.wasm.stat().st_size + bundle.manifest.config.size
    assert weights_digest(example) not in copied.blobs
    assert served_bytes(server, weights_digest(example)) == (0, 0)

    # Sign the bundle and the model; run with verification.
    key, pub = write_key(tmp_path)
    for ref, name in ((bundle_ref, "apps/mlp-wasm"), (model_ref, "models/mlp")):
        _, t, d = client.resolve(ref)
        sign(t, d, KeySigner(key), name=name)
    out = tmp_path / "out.bin"
    result = cli(
        "wasm", "run", bundle_ref, "--verify-key", str(pub),
        "-i", str(example.inputs), "-o", str(out), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)

    # Same answers as the NumPy reference.
    reference = load_script("reference")
    logits, classes = reference.decode(out.read_bytes())
    want_logits, want_classes = reference.decode(example.expected())
    assert (classes == want_classes).all() and abs(logits - want_logits).max() <= 1e-6
    labels = example.labels.read_bytes()
    assert sum(int(c) == lab for c, lab in zip(classes, labels, strict=True)) >= 56

    # Only what the module read travelled: the header, and the 64 KiB chunks holding fc1.*
    # (the first) and fc2.* (the last, short one) -- never the 1 MiB aux.embedding between.
    size = example.weights.stat().st_size
    assert summary["tensorsRead"] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    stats = summary["modelStats"]
    head = tensor_offset(example, "fc1.weight")
    data_size = size - head
    fc2_chunk = (tensor_offset(example, "fc2.weight") - head) // CHUNK
    expected = head + CHUNK + min(CHUNK, data_size - fc2_chunk * CHUNK)
    assert stats["wholeBlobs"] == 0 and stats["chunksFetched"] == 3
    requests, written = served_bytes(server, weights_digest(example))
    assert (requests, written) == (3, expected) and stats["remoteBytes"] == expected
    assert written < size / 10  # 71,360 of 1,054,400 bytes
    print(f"\nweights file {size} bytes; fetched {written} bytes in {requests} requests")


def _published(server, client, example) -> tuple[str, str]:
    """The example model and its module bundle pushed to ``server``: their references."""
    model_ref = f"{server.host}/models/mlp:v1"
    bundle_ref = f"{server.host}/apps/mlp-wasm:v1"
    push_model(client, example, model_ref)
    pack_bundle(example.wasm, model_ref, bundle_ref)
    return model_ref, bundle_ref


def test_unsigned_model_is_refused_before_any_weight_moves(
    registry_factory, example, client, tmp_path
):
    server = registry_factory()
    _, bundle_ref = _published(server, client, example)
    key, pub = write_key(tmp_path)
    _, t, d = client.resolve(bundle_ref)
    sign(t, d, KeySigner(key), name="apps/mlp-wasm")  # the bundle only

    result = cli("wasm", "run", bundle_ref, "--verify-key", str(pub), "-i", str(example.inputs))
    assert result.exit_code == 7
    assert re.search(r"the model \S+/models/mlp@sha256:\w+ is not verified", result.stderr)
    assert result.stdout == ""
    assert served_bytes(server, weights_digest(example)) == (0, 0)

    # An injected check (the hook the policy engine or an admission step plugs into)
    # refuses the same way, and no tensor is ever served.
    records: list[ReadRecord] = []

    def refuse_model(role, reference, target, desc):
        if role == "model":
            raise VerificationError(f"{reference} is not on the allow list")

    with pytest.raises(VerificationError, match="not on the allow list"):
        run(client, bundle_ref, stdin=example.inputs, check=refuse_model, on_read=records.append)
    assert records == []


def test_policy_gates_the_run(registry_factory, example, client, tmp_path):
    server = registry_factory()
    model_ref, bundle_ref = _published(server, client, example)
    key, pub = write_key(tmp_path)
    policy = tmp_path / "signed.yaml"
    policy.write_text(
        f"""apiVersion: modelreg.dev/v1alpha1
kind: ModelPolicy
metadata:
  name: signed-by-release-key
spec:
  match:
    references: ["{server.host}/**"]
  require:
    signatures:
      authorities:
        - name: release
          key:
            path: {pub}
"""
    )
    refused = cli("wasm", "run", bundle_ref, "--policy", str(policy), "-i", str(example.inputs))
    assert refused.exit_code == 7 and "policy refuses the module" in refused.stderr
    for ref, name in ((bundle_ref, "apps/mlp-wasm"), (model_ref, "models/mlp")):
        _, t, d = client.resolve(ref)
        sign(t, d, KeySigner(key), name=name)
    allowed = cli("wasm", "run", bundle_ref, "--policy", str(policy), "-i", str(example.inputs))
    assert allowed.exit_code == 0, allowed.stderr
    assert allowed.stdout_bytes == example.expected()


def test_tampered_chunk_stops_the_run_before_the_module_sees_it(
    registry_factory, example, client, tmp_path
):
    server = registry_factory()
    _, bundle_ref = _published(server, client, example)
    # Flip one byte of fc2.weight in the registry's storage.
    blob = blob_path(server, weights_digest(example))
    data = bytearray(blob.read_bytes())
    data[tensor_offset(example, "fc2.weight") + 5] ^= 0xFF
    blob.write_bytes(bytes(data))

    records: list[ReadRecord] = []
    with pytest.raises(IntegrityError, match="chunk"):
        run(client, bundle_ref, stdin=example.inputs, on_read=records.append)
    assert {r.name for r in records} == {"fc1.weight", "fc1.bias"}  # fc2.weight never copied

    out = tmp_path / "out.bin"
    result = cli("wasm", "run", bundle_ref, "-i", str(example.inputs), "-o", str(out))
    assert result.exit_code == 5, result.stderr
    assert not out.exists() and result.stdout == ""


def test_without_a_chunk_index_the_file_is_verified_whole(
    registry_factory, example, client, tmp_path
):
    server = registry_factory()
    model_ref = f"{server.host}/models/plain:v1"
    bundle_ref = f"{server.host}/apps/plain-wasm:v1"
    push_model(client, example, model_ref, index=False)
    pack_bundle(example.wasm, model_ref, bundle_ref)
    ran = run(client, bundle_ref, stdin=example.inputs)
    assert ran.result.stdout == example.expected()
    size = example.weights.stat().st_size
    assert ran.model_stats["wholeBlobs"] == 1 and ran.model_stats["remoteBytes"] == size
    assert served_bytes(server, weights_digest(example))[1] == size

    # Tampered: the whole-file digest fails before the first tensor is served.
    blob = blob_path(server, weights_digest(example))
    data = bytearray(blob.read_bytes())
    data[tensor_offset(example, "aux.embedding") + 100] ^= 0x01  # even a byte never read
    blob.write_bytes(bytes(data))
    records: list[ReadRecord] = []
    with (
        Client(RemoteOptions(fsync=False, store=str(tmp_path / "fresh-store"))) as fresh,
        pytest.raises(IntegrityError),
    ):
        run(fresh, bundle_ref, stdin=example.inputs, on_read=records.append)
    assert records == []


def test_memory_and_time_limits_through_the_registry(registry_factory, example, client, tmp_path):
    server = registry_factory()
    model_ref = f"{server.host}/models/mlp:v1"
    push_model(client, example, model_ref)
    pack_bundle(example.wasm, model_ref, f"{server.host}/apps/mlp-wasm:v1")
    big = tmp_path / "big.f32"
    big.write_bytes(b"\x00" * (3 * 1024 * 1024))
    result = cli(
        "wasm", "run", f"{server.host}/apps/mlp-wasm:v1", "-i", str(big), "--max-memory", "1MiB"
    )
    assert result.exit_code == 10
    assert "mlp: out of memory" in result.stderr
    assert "after its memory reached the 1MiB limit" in result.stderr

    spin = tmp_path / "spin.wasm"
    spin.write_bytes(SPIN)
    pack_bundle(spin, model_ref, f"{server.host}/apps/spin:v1")
    result = cli("wasm", "run", f"{server.host}/apps/spin:v1", "--timeout", "0.5")
    assert result.exit_code == 10
    assert "ran past its time limit of 0.5 s and was stopped" in result.stderr
