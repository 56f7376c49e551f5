"""One wrong blob from a mirror is read again alone, from the next source (issue 21).

The upstream is a real Distribution registry; the mirror is :class:`LazyProxy` in front
of it, flipping one byte in the middle of one chosen blob (whole or ranged), configured
only through a ``hosts.toml``. A split checkpoint part, a blob that ``cp`` copies, and a
range a lazy read fetches: each is refused, the mirror distrusted, and that blob (or
range) read again from the upstream while everything else still comes from the mirror.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from modelreg import Client, RemoteOptions
from modelreg.lazy import open_model
from modelreg.oci.manifest import Manifest
from tests.integration.lazy_proxy import LazyProxy
from tests.integration.registry_server import RegistryServer

PART = "application/vnd.modelreg.weight.part.v1.raw"


def _model(root: Path) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(21)
    tensors = {f"layer{i}": rng.standard_normal((64, 256)).astype(np.float32) for i in range(6)}
    save_file(tensors, str(root / "model.safetensors"))
    (root / "config.json").write_text('{"model_type": "llama"}')
    return root


def _hosts(tmp_path: Path, upstream: RegistryServer, mirror: LazyProxy) -> RemoteOptions:
    directory = tmp_path / "certs.d" / upstream.host
    directory.mkdir(parents=True)
    (directory / "hosts.toml").write_text(
        f'server = "http://{upstream.host}"\n[host."http://{mirror.host}"]\n'
        '  capabilities = ["pull"]\n'
    )
    return RemoteOptions(hosts_dirs=(str(tmp_path / "certs.d"),), on_warning=lambda _: None)


def _push(upstream: RegistryServer, root: Path, **kwargs: object) -> tuple[str, list[str]]:
    ref = f"{upstream.host}/refetch/{uuid.uuid4().hex[:10]}:v1"
    with Client(RemoteOptions(hosts_dirs=())) as client:
        client.push(root, ref, **kwargs)  # type: ignore[arg-type]
        manifest = client.inspect(ref).manifest
    assert isinstance(manifest, Manifest)
    return ref, [str(d.digest) for d in manifest.layers if d.media_type == PART]


def _asked(mirror: LazyProxy, digest: str) -> int:
    return sum(1 for e in mirror.blob_requests() if digest in e.path)


def test_a_wrong_split_part_is_read_again_alone_from_the_upstream(
    registry_plain: RegistryServer, tmp_path: Path
) -> None:
    root = _model(tmp_path / "model")
    ref, parts = _push(registry_plain, root, split=True, part_size="64KiB")
    assert len(parts) >= 3
    with LazyProxy(registry_plain.port, "flip", flip_whole=True, flip_only=parts[1]) as mirror:
        with Client(_hosts(tmp_path, registry_plain, mirror)) as client:
            client.pull(ref, tmp_path / "out", cache=False)
            served = client.registry(registry_plain.host).stats.bytes_received
        assert mirror.flips == 1
        assert _asked(mirror, parts[1]) == 1  # distrusted: never asked again
        # no other part restarted (one the mirror was distrusted before came from the upstream)
        assert all(_asked(mirror, d) <= 1 for d in parts)
    out = tmp_path / "out" / "model.safetensors"
    assert out.read_bytes() == (root / "model.safetensors").read_bytes()
    assert 0 < served < out.stat().st_size  # the upstream sent that part, not the file


def test_cp_reads_a_wrong_blob_again_from_the_upstream(
    registry_plain: RegistryServer,
    registry_factory: Callable[..., RegistryServer],
    tmp_path: Path,
) -> None:
    root = _model(tmp_path / "model")
    ref, parts = _push(registry_plain, root, split=True, part_size="64KiB")
    destination = registry_factory()
    copied = f"{destination.host}/copied/model:v1"
    with LazyProxy(registry_plain.port, "flip", flip_whole=True, flip_only=parts[0]) as mirror:
        with Client(_hosts(tmp_path, registry_plain, mirror)) as client:
            client.copy(ref, copied)
        assert mirror.flips == 1
        assert all(_asked(mirror, d) <= 1 for d in parts)
    with Client(RemoteOptions(hosts_dirs=())) as client:  # read back, verified, directly
        client.pull(copied, tmp_path / "back", cache=False)
    assert (tmp_path / "back" / "model.safetensors").read_bytes() == (
        root / "model.safetensors"
    ).read_bytes()


def test_a_lazy_range_that_fails_the_chunk_index_is_filled_again_from_the_upstream(
    registry_plain: RegistryServer, tmp_path: Path
) -> None:
    root = _model(tmp_path / "model")
    ref, _ = _push(registry_plain, root)
    want = (root / "model.safetensors").read_bytes()
    with (
        LazyProxy(registry_plain.port, "flip") as mirror,  # every ranged body it serves
        Client(_hosts(tmp_path, registry_plain, mirror)) as client,
        open_model(client, ref, cache=tmp_path / "lazy") as handle,
    ):
        assert handle.read("model.safetensors", 1000, 50_000) == want[1000:51_000]
        assert mirror.flips == 1  # then distrusted: the rest from the upstream
        assert handle.read("model.safetensors") == want
        assert mirror.flips == 1
