"""Hostile archive links (SECURITY.md case 7): where a link leads is judged like the kernel.

A link target is never judged alone by lexical normalisation: ``p/q/r -> ../..`` is
harmless, but ``pw -> p/q/r/../../../etc/passwd`` then climbs out of the output. Each test
is one attack class; each pulls (through the crafted registry, or ``unpack`` over an
in-memory source) and checks the pull is refused with :class:`UnsafeContentError` and
the output directory is left exactly as it was.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelreg import Client, RemoteOptions
from modelreg.content import MemoryTarget, bytes_source
from modelreg.errors import UnsafeContentError
from modelreg.model.unpack import unpack
from modelreg.oci import Descriptor, Manifest
from modelreg.oci import mediatypes as mt
from tests.hostile.crafted import CraftedRegistry

WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_TAR = "application/vnd.cncf.model.weight.v1.tar"
TITLE = "org.opencontainers.image.title"

Member = tuple[str, str, str]
"""(kind, name, link target or file body): kind is file, dir, sym or hard."""


def _tar(members: list[Member]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, extra in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1
            if kind == "file":
                info.size = len(extra)
                tar.addfile(info, io.BytesIO(extra.encode()))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            else:
                info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                info.linkname = extra
            tar.addfile(info)
    return buf.getvalue()


def _pull(server: CraftedRegistry, out: Path) -> None:
    with Client(RemoteOptions()) as client:
        client.pull(f"{server.host}/m:v1", out, cache=False)


def _prepared(tmp_path: Path) -> tuple[Path, list[str]]:
    """An output directory already holding a file: the pull must leave it as it was."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    return out, _listing(out)


def _listing(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))


def _refused(server: CraftedRegistry, tmp_path: Path) -> UnsafeContentError:
    out, before = _prepared(tmp_path)
    with pytest.raises(UnsafeContentError) as caught:
        _pull(server, out)
    assert _listing(out) == before
    assert (out / "keep.txt").read_text() == "mine"
    return caught.value


def _archive_refused(
    server: CraftedRegistry, tmp_path: Path, members: list[Member]
) -> UnsafeContentError:
    """A model of one archive layer of ``members``, whose pull must be refused."""
    server.model("m", "v1", [(WEIGHT_TAR, _tar(members), {TITLE: "w"})])
    return _refused(server, tmp_path)


def test_symlink_chain_escapes_output(registry: CraftedRegistry, tmp_path: Path) -> None:
    """The issue's repro: a link through a link climbs out to /etc/passwd."""
    error = _archive_refused(
        registry,
        tmp_path,
        [
            ("file", "p/q/f", "data"),
            ("sym", "p/q/r", "../.."),
            ("sym", "pw", "p/q/r/../../../etc/passwd"),
        ],
    )
    assert "'pw'" in error.message and "'p/q/r'" in error.message
    assert error.hint


def test_link_through_link_to_sibling_of_output(registry: CraftedRegistry, tmp_path: Path) -> None:
    """``e -> p/q/r/../x/secret`` reaches a file beside the output directory."""
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "secret").write_text("s3cret")
    error = _archive_refused(
        registry,
        tmp_path,
        [("file", "p/q/f", "data"), ("sym", "p/q/r", "../.."), ("sym", "e", "p/q/r/../x/secret")],
    )
    assert "'e'" in error.message


def test_link_chain_in_any_member_order(registry: CraftedRegistry, tmp_path: Path) -> None:
    """The link that escapes comes before the link it goes through."""
    _archive_refused(
        registry,
        tmp_path,
        [
            ("sym", "pw", "a/b/up/../../../etc/passwd"),
            ("dir", "a/b", ""),
            ("sym", "a/b/up", "../.."),
        ],
    )


def test_hardlink_through_symlink(registry: CraftedRegistry, tmp_path: Path) -> None:
    """A hard link's source is named through a symbolic link: refused, whatever it names."""
    error = _archive_refused(
        registry, tmp_path, [("file", "x", "data"), ("sym", "d/a", ".."), ("hard", "h", "d/a/x")]
    )
    assert "through the symbolic link 'd/a'" in error.message


def test_cross_layer_link_chain(registry: CraftedRegistry, tmp_path: Path) -> None:
    """Each archive is harmless alone; together the second climbs out through the first."""
    first = _tar([("file", "p/q/f", "data"), ("sym", "p/q/r", "../..")])
    second = _tar([("sym", "pw", "p/q/r/../../../etc/passwd")])
    registry.model(
        "m", "v1", [(WEIGHT_TAR, first, {TITLE: "one"}), (WEIGHT_TAR, second, {TITLE: "two"})]
    )
    error = _refused(registry, tmp_path)
    assert "'pw'" in error.message


def test_file_layer_written_through_archive_link(registry: CraftedRegistry, tmp_path: Path) -> None:
    """A raw layer's path goes through a link an archive layer writes."""
    archive = _tar([("sym", "d", "sub")])
    registry.model(
        "m",
        "v1",
        [(WEIGHT_TAR, archive, {TITLE: "w"}), (WEIGHT, b"weights", {TITLE: "d/x.bin"})],
    )
    _refused(registry, tmp_path)


def test_link_loop_is_refused(registry: CraftedRegistry, tmp_path: Path) -> None:
    """Links that never end are refused like the kernel's ELOOP, not followed forever."""
    error = _archive_refused(
        registry, tmp_path, [("sym", "a", "b"), ("sym", "b", "a"), ("sym", "c", "a/x")]
    )
    assert "more than 40 links" in error.message


def test_link_through_a_link_already_in_the_output(
    registry: CraftedRegistry, tmp_path: Path
) -> None:
    """The user's own ``p -> .`` moves the pulled ``p/r -> ..`` to the output root,
    from where ``..`` leaves it."""
    out, _ = _prepared(tmp_path)
    os.symlink(".", out / "p")
    before = _listing(out)
    layer = _tar([("dir", "p", ""), ("sym", "p/r", "..")])
    registry.model("m", "v1", [(WEIGHT_TAR, layer, {TITLE: "w"})])
    with pytest.raises(UnsafeContentError):
        _pull(registry, out)
    assert _listing(out) == before


def test_harmless_links_are_kept(registry: CraftedRegistry, tmp_path: Path) -> None:
    """The defence refuses escapes only: links that stay inside, across layers, still pull."""
    first = _tar([("file", "p/q/f", "data"), ("sym", "p/q/r", "../..")])
    second = _tar([("sym", "f", "p/q/r/p/q/f"), ("sym", "up", "p/q/r/p/..")])
    registry.model(
        "m", "v1", [(WEIGHT_TAR, first, {TITLE: "one"}), (WEIGHT_TAR, second, {TITLE: "two"})]
    )
    out = tmp_path / "out"
    _pull(registry, out)
    assert (out / "f").read_text() == "data"
    assert os.path.realpath(out / "up") == os.path.realpath(out)


# property: random archives of files, directories, links and hard links, in any order

# few names, many '..': chains of links through links are frequent, not rare
_NAMES = st.sampled_from(["a", "b", "c"])
_PATHS = st.lists(_NAMES, min_size=1, max_size=3).map("/".join)
_STEPS = st.lists(st.sampled_from(["..", "..", "..", "a", "b", "."]), min_size=0, max_size=4)


def _target(draw: st.DrawFn, paths: list[str]) -> str:
    """A relative target: often through another member (a link, maybe), then ``..``s."""
    through = draw(st.sampled_from(["", *paths]))
    steps = [*through.split("/"), *draw(_STEPS)] if through else draw(_STEPS)
    return "/".join(steps) or "."


@st.composite
def _layers(draw: st.DrawFn) -> list[list[Member]]:
    """One or two archive layers whose members do not collide (collisions are refused
    for another reason, tested elsewhere): a path below another is a directory, a hard
    link names a file earlier in its own archive; members come in any order."""
    paths = draw(st.lists(_PATHS, min_size=1, max_size=10, unique=True))
    paths = draw(st.permutations(paths))
    count = draw(st.integers(min_value=1, max_value=2))
    layers: list[list[Member]] = [[] for _ in range(count)]
    files: list[list[str]] = [[] for _ in range(count)]
    for path in paths:
        n = draw(st.integers(min_value=0, max_value=count - 1))
        if any(other.startswith(path + "/") for other in paths):
            layers[n].append(("dir", path, ""))
            continue
        kind = draw(st.sampled_from(["file", "dir", "sym", "sym", "sym", "hard"]))
        if kind == "hard" and files[n]:
            layers[n].append(("hard", path, draw(st.sampled_from(files[n]))))
        elif kind == "sym":
            layers[n].append(("sym", path, _target(draw, paths)))
        elif kind == "dir":
            layers[n].append(("dir", path, ""))
        else:
            layers[n].append(("file", path, "x"))
            files[n].append(path)
    return [members for members in layers if members]


_LAYERS = _layers()


def _source(layers: list[list[Member]]) -> tuple[MemoryTarget, Manifest]:
    src = MemoryTarget()
    descriptors = []
    for n, members in enumerate(layers):
        data = _tar(members)
        desc = Descriptor.for_bytes(
            mt.model_layer("weight", "tar"), data, {mt.ANN_TITLE: f"layer{n}"}
        )
        src.push(desc, bytes_source(data))
        descriptors.append(desc)
    config = b'{"descriptor":{"name":"hostile"},"config":{},"modelfs":{"type":"layers"}}'
    config_desc = Descriptor.for_bytes(mt.MODEL_CONFIG, config)
    src.push(config_desc, bytes_source(config))
    return src, Manifest(config=config_desc, layers=tuple(descriptors))


@settings(
    derandomize=True,
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(layers=_LAYERS)
def test_no_path_of_the_output_resolves_outside_it(
    tmp_path: Path, layers: list[list[Member]]
) -> None:
    base = Path(os.path.realpath(tmp_path)) / f"run{len(list(tmp_path.iterdir()))}"
    out = base / "out"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    src, manifest = _source(layers)
    try:
        unpack(src, manifest, out, fsync=False)
    except UnsafeContentError:
        assert _listing(out) == ["keep.txt"]
        return
    for dirpath, dirnames, filenames in os.walk(out):
        for name in dirnames + filenames:
            real = os.path.realpath(os.path.join(dirpath, name))
            assert real == str(out) or real.startswith(str(out) + os.sep), (
                os.path.join(dirpath, name),
                real,
            )


def test_small_file_group_layer_gets_every_archive_rule(
    registry: CraftedRegistry, tmp_path: Path
) -> None:
    """A layer shaped like push's small-file groups (a code-role tar named by its top
    directory, no title) whose link escapes is refused like any other archive."""
    layer = _tar(
        [
            ("file", "code/a.py", "print(1)"),
            ("sym", "code/up", "../.."),
            ("sym", "code/z.py", "up/etc/passwd"),
        ]
    )
    group = "application/vnd.cncf.model.code.v1.tar"
    registry.model("m", "v1", [(group, layer, {mt.ANN_FILEPATH: "code"})])
    error = _refused(registry, tmp_path)
    assert "code/" in error.message and error.hint
