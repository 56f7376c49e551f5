"""NOT COMMITTED until issue 15's failure 2 is fixed: modelreg reads a directory the way
oras-py 0.2.x writes it (one ``image.layer.v1.tar+gzip`` layer with only a title
annotation, extracted by oras-py on pull), safely; and oras-py reads modelreg's nested
directories (that direction passes today and is also in ``test_oras_py.py``)."""

from __future__ import annotations

from tests.interop.peers import ok, oras_client, tree, write_tree

FILES = {
    "1_Pooling/config.json": b'{"word_embedding_dimension": 384}',
    "1_Pooling/deeper/notes.txt": b"nested\n",
    "config.json": b'{"model_type": "bert"}',
}


def test_modelreg_pulls_an_oras_py_directory(registry_plain, tmp_path, monkeypatch):
    src = write_tree(tmp_path / "src", FILES)
    ref = f"{registry_plain.host}/interop/oras-py-dir:v1"
    monkeypatch.chdir(src)
    oras_client(registry_plain.host).push(target=ref, files=["1_Pooling", "config.json"])
    # oras-py itself extracts its directory layer
    theirs = tmp_path / "theirs"
    oras_client(registry_plain.host).pull(target=ref, outdir=str(theirs))
    assert tree(theirs) == tree(src)
    out = tmp_path / "out"
    ok("pull", ref, "-o", str(out))
    assert (out / "1_Pooling").is_dir(), "the directory layer was written as a gzip file"
    assert tree(out) == tree(src)
    info = ok("inspect", ref)
    assert all(f["path"] is not None for f in info["files"])


def test_oras_py_pulls_modelreg_nested_directories(registry_plain, tmp_path):
    src = write_tree(tmp_path / "src", FILES)
    ref = f"{registry_plain.host}/interop/oras-py-reads-dirs:v1"
    ok("push", str(src), ref)
    out = tmp_path / "out"
    oras_client(registry_plain.host).pull(target=ref, outdir=str(out))
    assert tree(out) == tree(src)
