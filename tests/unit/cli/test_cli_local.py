"""The CLI end to end on the embedded local store (no registry, no sockets)."""

import json
import os

import pytest
from modelreg_cli.main import app
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture
def model(tmp_path):
    root = tmp_path / "my-model"
    root.mkdir()
    (root / "config.json").write_text('{"model_type": "llama"}')
    (root / "model.safetensors").write_bytes(os.urandom(4096))
    (root / "README.md").write_text("hello")
    return root


def run(*args):
    return runner.invoke(app, list(args))


def test_push_inspect_pull_round_trip(model, tmp_path):
    # without the chunk index (written by default) the blobs are the model's own
    pushed = run("push", str(model), "llm:v1", "--json", "--no-chunk-index")
    assert pushed.exit_code == 0, pushed.output
    doc = json.loads(pushed.stdout)
    again = json.loads(run("push", str(model), "llm:v1", "--json", "--no-chunk-index").stdout)
    assert again["bytesSent"] == 0 and again["digest"] == doc["digest"]
    info = run("inspect", "llm:v1", "--json")
    assert info.exit_code == 0
    idoc = json.loads(info.stdout)
    config_size = idoc["manifest"]["config"]["size"]
    assert doc["bytesSent"] == 4096 + 23 + 5 + config_size and doc["blobsSent"] == 4
    assert idoc["digest"] == doc["digest"]
    assert {f["path"] for f in idoc["files"]} == {"config.json", "model.safetensors", "README.md"}
    assert idoc["config"]["descriptor"]["name"] == "my-model"
    out = tmp_path / "out"
    pulled = run("pull", "llm:v1", "-o", str(out), "--json")
    assert pulled.exit_code == 0, pulled.output
    for name in ("config.json", "model.safetensors", "README.md"):
        assert (out / name).read_bytes() == (model / name).read_bytes()
    assert json.loads(run("tags", "llm", "--json").stdout)["tags"] == ["v1"]
    listed = json.loads(run("list", "--json").stdout)
    assert [{k: row[k] for k in ("name", "digest", "signed")} for row in listed] == [
        {"name": "llm:v1", "digest": doc["digest"], "signed": False}
    ]


def test_text_output_and_include(model, tmp_path):
    assert run("push", str(model), "team/llm:v2").exit_code == 0
    text = run("inspect", "team/llm:v2")
    assert "model.safetensors" in text.stdout and "digest" in text.stdout
    result = run("pull", "team/llm:v2", "-o", str(tmp_path / "o"), "--include", "*.json")
    assert result.exit_code == 0
    assert os.listdir(tmp_path / "o") == ["config.json"]


def test_copy_to_oci_layout_and_back(model, tmp_path):
    run("push", str(model), "llm:v1")
    layout = tmp_path / "layout"
    assert run("cp", "llm:v1", f"oci:{layout}:exported").exit_code == 0
    assert (layout / "oci-layout").is_file()
    assert run("tags", f"oci:{layout}", "--json").stdout.count("exported") == 1
    out = tmp_path / "from-layout"
    assert run("pull", f"oci:{layout}:exported", "-o", str(out)).exit_code == 0
    assert (out / "README.md").read_text() == "hello"


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("pull", "missing:v1", "-o", "OUT"), 3, "not found"),
        (("pull", "Bad:Ref", "-o", "OUT"), 2, "invalid reference"),
        (("push", "NOPE", "x:v1"), 2, "does not exist"),
        (("push", "MODEL", "x@sha256:" + "a" * 64), 2, "cannot push to a digest"),
        (("inspect", "oci:/nonexistent/layout:v1"), 3, "not an OCI image layout"),
    ],
)
def test_errors_have_messages_and_exit_codes(args, code, fragment, model, tmp_path):
    args = [a.replace("OUT", str(tmp_path / "o")).replace("MODEL", str(model)) for a in args]
    result = run(*args)
    assert result.exit_code == code, result.output
    assert fragment in result.stderr
    assert "Traceback" not in result.output
    as_json = run(*args, "--json")
    err = json.loads(as_json.stderr)
    assert err["error"]["exitCode"] == code and fragment in err["error"]["message"]


def test_symlink_outside_is_refused_with_exit_8(model, tmp_path):
    (tmp_path / "secret").write_text("s")
    (model / "leak").symlink_to(tmp_path / "secret")
    result = run("push", str(model), "x:v1")
    assert result.exit_code == 8
    assert "outside the model directory" in result.stderr


def test_pull_into_a_file_fails_cleanly(model, tmp_path):
    run("push", str(model), "x:v1")
    target = tmp_path / "file"
    target.write_text("keep")
    result = run("pull", "x:v1", "-o", str(target))
    assert result.exit_code == 2 and "not a directory" in result.stderr
    assert target.read_text() == "keep"


def test_help_everywhere():
    for cmd in ("push", "pull", "inspect", "cp", "tags", "login", "logout", "list"):
        result = run(cmd, "-h")
        assert (result.exit_code == 0 and "--json" in result.stdout) or cmd == "logout"
    assert run("--version").stdout.startswith("modelreg ")
