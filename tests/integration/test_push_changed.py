"""A model file that changes after it was hashed fails the push as bad input (exit 2).

Whatever path the file took (sent once its digest was known, to a registry or to the
embedded store), the error names the file and says to push again, and nothing is
tagged. Bytes that differ from their digest while the file looks unchanged (same
inode, size and mtime) stay an integrity error (exit 5): nothing explains them.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from modelreg import client as client_module
from modelreg.client import Client, RemoteOptions
from modelreg.errors import IntegrityError, InvalidInputError, NotFoundError
from modelreg.events import Event
from modelreg.model import digests

WEIGHTS = "model.safetensors"


def make_model(root: Path) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(7)
    save_file({"w": rng.standard_normal((256, 256)).astype("f4")}, str(root / WEIGHTS))
    (root / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    return root


class RewriteOnStart:
    """Progress callback: when the weights' upload starts, rewrite them (same size)."""

    def __init__(self, path: Path, keep_identity: bool) -> None:
        self.path = path
        self.keep_identity = keep_identity
        self.rewrites = 0

    def __call__(self, event: Event) -> None:
        if event.kind != "start" or not event.name.startswith(WEIGHTS) or self.rewrites:
            return
        st = self.path.stat()
        with open(self.path, "r+b") as f:
            f.seek(st.st_size - 4096)
            f.write(os.urandom(4096))
        if self.keep_identity:  # a writer that puts the old mtime back
            os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns))
        else:  # a later mtime even on a filesystem with coarse timestamps
            os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        self.rewrites += 1


def _push(client: Client, model: Path, ref: str, keep_identity: bool) -> BaseException:
    rewrite = RewriteOnStart(model / WEIGHTS, keep_identity)
    with pytest.raises((InvalidInputError, IntegrityError)) as caught:
        client.push(model, ref, progress=rewrite)
    assert rewrite.rewrites == 1
    with pytest.raises(NotFoundError):
        client.target(ref).resolve("v1")
    return caught.value


def test_registry_push_of_a_file_changed_after_hashing_is_bad_input(registry_factory, tmp_path):
    server = registry_factory()
    model = make_model(tmp_path / "m")
    with Client(RemoteOptions()) as client:
        error = _push(client, model, f"{server.host}/changed/reg:v1", keep_identity=False)
    assert isinstance(error, InvalidInputError), repr(error)
    assert error.exit_code == 2
    assert f"{WEIGHTS!r} changed after it was hashed" in error.message
    assert "push again" in (error.hint or "")
    assert isinstance(error.__cause__, IntegrityError)


def test_store_push_of_a_file_changed_after_hashing_is_bad_input(tmp_path):
    model = make_model(tmp_path / "m")
    with Client(RemoteOptions()) as client:
        error = _push(client, model, "changed/store:v1", keep_identity=False)
    assert isinstance(error, InvalidInputError), repr(error)
    assert f"{WEIGHTS!r} changed after it was hashed" in error.message


def test_bytes_changed_behind_an_unchanged_identity_stay_an_integrity_error(tmp_path):
    model = make_model(tmp_path / "m")
    with Client(RemoteOptions()) as client:
        error = _push(client, model, "changed/hidden:v1", keep_identity=True)
    assert type(error) is IntegrityError, repr(error)
    assert error.exit_code == 5


def test_a_failed_upload_noticed_while_other_files_are_hashed_is_bad_input_too(
    tmp_path, monkeypatch
):
    """The weights' upload fails (changed file) while config.json is still being hashed:
    the next file's report raises that failure from inside the packing step."""
    model = make_model(tmp_path / "m")
    failed = threading.Event()
    real_one, real_hash = client_module._EarlyUploads._one, digests.hash_file

    def one(self, *args, **kwargs):
        try:
            return real_one(self, *args, **kwargs)
        except BaseException:
            failed.set()
            raise

    def hash_file(path, algorithm="sha256"):
        if Path(path).name == "config.json":
            assert failed.wait(30), "the weights' upload never failed"
        return real_hash(path, algorithm)

    monkeypatch.setattr(client_module._EarlyUploads, "_one", one)
    monkeypatch.setattr(digests, "hash_file", hash_file)
    with Client(RemoteOptions()) as client:
        error = _push(client, model, "changed/early:v1", keep_identity=False)
    assert failed.is_set()
    assert isinstance(error, InvalidInputError), repr(error)
    assert f"{WEIGHTS!r} changed after it was hashed" in error.message
