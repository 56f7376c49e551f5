"""``inspect`` shows each layer's ModelPack role and why, for modelreg's own pushes and
every producer's artifacts."""

from __future__ import annotations

import pytest

from tests.integration.test_producers import EXPECTED, upload
from tests.interop.peers import ok, run, write_tree

TAGS = sorted(k for k, v in EXPECTED.items() if "files" in v)


def test_gitattributes_is_code_in_inspect(registry_plain, tmp_path):
    model = write_tree(
        tmp_path / "m",
        {".gitattributes": b"* text=auto\n", "config.json": b"{}", "NOTES": b"text\n"},
    )
    ref = f"{registry_plain.host}/interop/roles:v1"
    ok("push", str(model), ref)
    rows = {f["path"]: f["role"] for f in ok("inspect", ref)["files"]}
    assert rows[".gitattributes"] == {
        "role": "code",
        "untested": False,
        "reason": "repository metadata",
    }
    assert rows["NOTES"]["role"] == "doc" and rows["NOTES"]["untested"]
    text = run("inspect", ref)
    assert text.exit_code == 0 and "[code: repository metadata]" in text.stdout


@pytest.mark.parametrize("tag", TAGS)
def test_every_producer_has_its_roles_explained(registry_plain, tag):
    info = ok("inspect", upload(registry_plain.host, tag))
    assert info["files"] and all(f["role"]["reason"] for f in info["files"])
