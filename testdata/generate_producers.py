#!/usr/bin/env python3
"""Generate artifacts as other producers write them, and a Hugging Face cache, deterministically.

    python testdata/generate_producers.py [--out testdata]

Writes ``producers/``: an OCI image layout (``oci-layout``, ``index.json``,
``blobs/sha256/``) whose tags are scenarios, plus ``expected.json`` (for each
scenario: the files a pull must write, path → sha256, or the error it must
raise), and ``hf-cache/``: a hub cache with one snapshot whose files link into
``blobs/``.

The manifests, configs and layers reproduce what each tool writes (facts from
their sources, summarised in FORMATS.md §2 and in modelreg.model.producers):

* ``kitops-modelkit``: KitOps 1.x ModelKit (artifactType and config
  ``application/vnd.kitops.modelkit.*``, config = the Kitfile as JSON with
  ``digest``/``diffId`` per entry, ``ml.kitops.modelkit.cli-version``); a
  ``model.v1.tar+gzip`` layer, a ``code.v1.tar`` layer, a ``docs.v1.raw`` layer
  with ``org.cncf.model.filepath`` and file metadata. Tar members are paths
  relative to the Kitfile's directory, uid 1000, gid 0, no user names.
* ``kitops-legacy``: an older ModelKit: no artifactType, every layer a tar
  without annotations.
* ``oras-files``: ``oras push`` of a file and a directory: artifactType
  ``application/vnd.unknown.artifact.v1``, empty config, a file layer with
  mediaType ``application/vnd.oci.image.layer.v1.tar`` (ORAS's default for
  files, raw content) and a directory layer ``...tar+gzip`` with
  ``io.deis.oras.content.digest`` (tar digest) and
  ``io.deis.oras.content.unpack: "true"``, members under the directory's name.
* ``docker-gguf-v01``: Docker Model Runner v0.1: config
  ``application/vnd.docker.ai.model.config.v0.1+json`` ({config, descriptor,
  rootfs}), layers ``vnd.docker.ai.gguf.v3`` and ``vnd.docker.ai.license`` with
  no annotations (names come from media types).
* ``docker-safetensors-v02``: v0.2: one layer per file with
  ``org.cncf.model.filepath``, ``vnd.docker.ai.safetensors`` shards,
  ``vnd.docker.ai.model.file`` for configs, a ``vnd.docker.ai.vllm.config.tar``.
* ``modelpack-cnai-legacy``: ModelPack before mid-2025:
  ``application/vnd.cnai.model.*`` with ``org.cnai.model.filepath`` and tar
  layers holding one file each (modctl's default then).
* ``modelpack-modctl-tar``: current names with ``...weight.v1.tar`` layers.
* ``hostile-*``: archives a pull must refuse (escape with ``..``, absolute
  member, symlink or hard link leading outside, device file, a member written
  through a symlink, an ORAS directory whose members lie outside its name, an
  ORAS tar digest that does not match, a gzip bomb, a zstd layer without a
  decoder...).

Timestamps are fixed (tar mtime 0, gzip mtime 0, no file name in gzip
headers): running the script twice gives the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY = b"{}"
CREATED = "2025-01-01T00:00:00Z"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def gz(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as f:
        f.write(data)
    return buf.getvalue()


def tar(
    entries: list[tuple[str, bytes | None]],
    *,
    uid: int = 0,
    mode: int = 0o644,
    dirs: list[str] | None = None,
    extra: list[tarfile.TarInfo] | None = None,
) -> bytes:
    """A reproducible tar: directories, then files in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in dirs or []:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.uid, info.gid, info.mtime = uid, 0, 0
            t.addfile(info)
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data or b"")
            info.mode = mode
            info.uid, info.gid, info.mtime = uid, 0, 0
            t.addfile(info, io.BytesIO(data or b""))
        for info in extra or []:
            t.addfile(info)
    return buf.getvalue()


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o644
    info.mtime = 0
    return info


def through_symlink() -> bytes:
    """A symlink "d" -> "sub", then a member "d/escape.txt" written through it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        sub = tarfile.TarInfo("sub")
        sub.type, sub.mode, sub.mtime = tarfile.DIRTYPE, 0o755, 0
        t.addfile(sub)
        t.addfile(special("d", tarfile.SYMTYPE, "sub"))
        info = tarfile.TarInfo("d/escape.txt")
        info.size, info.mode, info.mtime = 1, 0o644, 0
        t.addfile(info, io.BytesIO(b"x"))
    return buf.getvalue()


class Layout:
    """A minimal OCI image layout writer (one tag per scenario)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.index: list[dict[str, Any]] = []
        self.written: list[Path] = []

    def blob(self, data: bytes) -> str:
        digest = sha(data)
        path = self.blobs / digest
        if not path.exists():
            path.write_bytes(data)
            self.written.append(path)
        return f"sha256:{digest}"

    def desc(self, media_type: str, data: bytes, annotations: dict[str, str] | None = None):
        out: dict[str, Any] = {
            "mediaType": media_type,
            "digest": self.blob(data),
            "size": len(data),
        }
        if annotations:
            out["annotations"] = annotations
        return out

    def manifest(self, tag: str, doc: dict[str, Any]) -> None:
        data = canonical(doc)
        entry = {
            "mediaType": MANIFEST,
            "digest": self.blob(data),
            "size": len(data),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }
        if "artifactType" in doc:
            entry["artifactType"] = doc["artifactType"]
        self.index.append(entry)

    def finish(self) -> list[Path]:
        (self.root / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}
        index["manifests"] = sorted(
            self.index, key=lambda e: e["annotations"]["org.opencontainers.image.ref.name"]
        )
        (self.root / "index.json").write_bytes(canonical(index))
        return [self.root / "oci-layout", self.root / "index.json", *self.written]


def file_meta(name: str, size: int, mode: int = 0o644) -> str:
    return canonical(
        {
            "name": name,
            "mode": mode,
            "uid": 0,
            "gid": 0,
            "size": size,
            "mtime": CREATED,
            "typeflag": 48,
        }
    ).decode()


def read(rel: str) -> bytes:
    return (MODELS / rel).read_bytes()


# ------------------------------------------------------------------------ scenarios
def kitops(lay: Layout, expected: dict[str, Any]) -> None:
    gguf = read("tiny-gguf/model.gguf")
    readme = b"# tiny ModelKit\n\nPacked like `kit pack` does.\n"
    code = b"print('serve the model')\n"
    model_tar = tar([("models/model.gguf", gguf)], uid=1000, dirs=["models"])
    model_layer = gz(model_tar)
    code_tar = tar([("src/serve.py", code)], uid=1000, mode=0o755, dirs=["src"])
    kit_version = "1.6.0"
    layers = [
        lay.desc(
            "application/vnd.kitops.modelkit.model.v1.tar+gzip",
            model_layer,
            {"org.cncf.model.filepath": "models"},
        ),
        lay.desc(
            "application/vnd.kitops.modelkit.code.v1.tar",
            code_tar,
            {"org.cncf.model.filepath": "src"},
        ),
        lay.desc(
            "application/vnd.kitops.modelkit.docs.v1.raw",
            readme,
            {
                "org.cncf.model.filepath": "README.md",
                "org.cncf.model.file.metadata+json": file_meta("README.md", len(readme)),
            },
        ),
    ]
    kitfile = {
        "manifestVersion": "1.0.0",
        "package": {
            "name": "tiny-gguf-kit",
            "version": "1.0.0",
            "description": "A tiny GGUF model as a ModelKit",
            "license": "Apache-2.0",
            "authors": ["modelreg tests"],
        },
        "model": {
            "name": "tiny-gguf",
            "path": "models",
            "framework": "llama.cpp",
            "format": "gguf",
            "license": "Apache-2.0",
            "digest": layers[0]["digest"],
            "diffId": f"sha256:{sha(model_tar)}",
        },
        "code": [
            {
                "path": "src",
                "description": "server",
                "digest": layers[1]["digest"],
                "diffId": layers[1]["digest"],
            }
        ],
        "docs": [
            {"path": "README.md", "digest": layers[2]["digest"], "diffId": layers[2]["digest"]}
        ],
    }
    config = canonical(kitfile)
    lay.manifest(
        "kitops-modelkit",
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "artifactType": "application/vnd.kitops.modelkit.manifest.v1+json",
            "config": lay.desc("application/vnd.kitops.modelkit.config.v1+json", config),
            "layers": layers,
            "annotations": {"ml.kitops.modelkit.cli-version": kit_version},
        },
    )
    expected["kitops-modelkit"] = {
        "producer": "kitops",
        "files": {
            "models/model.gguf": sha(gguf),
            "src/serve.py": sha(code),
            "README.md": sha(readme),
        },
        "executable": ["src/serve.py"],
        "name": "tiny-gguf-kit",
    }
    # An older kit: plain tar layers, no artifactType, no layer annotations.
    legacy_model = tar([("model.gguf", gguf)], uid=1000)
    legacy_docs = tar([("README.md", readme)], uid=1000)
    legacy_layers = [
        lay.desc("application/vnd.kitops.modelkit.model.v1.tar", legacy_model),
        lay.desc("application/vnd.kitops.modelkit.docs.v1.tar", legacy_docs),
    ]
    legacy_kitfile = {
        "manifestVersion": "1.0.0",
        "package": {"name": "legacy-kit", "authors": ["modelreg tests"]},
        "model": {"name": "tiny", "path": "model.gguf", "digest": legacy_layers[0]["digest"]},
        "docs": [{"path": "README.md", "digest": legacy_layers[1]["digest"]}],
    }
    lay.manifest(
        "kitops-legacy",
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": lay.desc(
                "application/vnd.kitops.modelkit.config.v1+json", canonical(legacy_kitfile)
            ),
            "layers": legacy_layers,
            "annotations": {"ml.kitops.modelkit.cli-version": "0.3.2"},
        },
    )
    expected["kitops-legacy"] = {
        "producer": "kitops",
        "files": {"model.gguf": sha(gguf), "README.md": sha(readme)},
    }


def oras(lay: Layout, expected: dict[str, Any]) -> None:
    weights = read("tiny-llm/model-00001-of-00002.safetensors")
    tok = read("tiny-llm/tokenizer.json")
    tok_cfg = read("tiny-llm/tokenizer_config.json")
    dir_tar = tar(
        [("tokenizer/tokenizer.json", tok), ("tokenizer/tokenizer_config.json", tok_cfg)],
        dirs=["tokenizer"],
    )
    layers = [
        lay.desc(
            "application/vnd.oci.image.layer.v1.tar",
            weights,
            {"org.opencontainers.image.title": "model.safetensors"},
        ),
        lay.desc(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            gz(dir_tar),
            {
                "io.deis.oras.content.digest": f"sha256:{sha(dir_tar)}",
                "io.deis.oras.content.unpack": "true",
                "org.opencontainers.image.title": "tokenizer",
            },
        ),
        # a layer without a title: `oras pull` skips it, so do we
        lay.desc("application/vnd.oci.image.layer.v1.tar", b"unnamed"),
    ]
    lay.manifest(
        "oras-files",
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "artifactType": "application/vnd.unknown.artifact.v1",
            "config": lay.desc("application/vnd.oci.empty.v1+json", EMPTY),
            "layers": layers,
            "annotations": {"org.opencontainers.image.created": CREATED},
        },
    )
    expected["oras-files"] = {
        "producer": "oras",
        "files": {
            "model.safetensors": sha(weights),
            "tokenizer/tokenizer.json": sha(tok),
            "tokenizer/tokenizer_config.json": sha(tok_cfg),
        },
        "skipped": 1,
    }


def docker(lay: Layout, expected: dict[str, Any]) -> None:
    gguf = read("tiny-gguf/model.gguf")
    lic = read("tiny-llm/LICENSE")
    layers = [
        lay.desc("application/vnd.docker.ai.gguf.v3", gguf),
        lay.desc("application/vnd.docker.ai.license", lic),
    ]
    config = {
        "config": {
            "format": "gguf",
            "quantization": "Q8_0",
            "parameters": "78.02 K",
            "architecture": "llama",
            "size": str(len(gguf)),
            "gguf": {"general.architecture": "llama", "general.name": "tiny-gguf"},
        },
        "descriptor": {"created": CREATED},
        "rootfs": {"type": "rootfs", "diff_ids": [layers[0]["digest"], layers[1]["digest"]]},
    }
    lay.manifest(
        "docker-gguf-v01",
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": lay.desc(
                "application/vnd.docker.ai.model.config.v0.1+json", canonical(config)
            ),
            "layers": layers,
        },
    )
    expected["docker-gguf-v01"] = {
        "producer": "docker",
        "files": {"model.gguf": sha(gguf), "LICENSE": sha(lic)},
    }
    shards = [read(f"tiny-llm/model-0000{i}-of-00002.safetensors") for i in (1, 2)]
    cfg = read("tiny-llm/config.json")
    gen = read("tiny-llm/generation_config.json")
    vllm_tar = tar([("tokenizer.json", read("tiny-llm/tokenizer.json"))])
    layers = [
        lay.desc(
            "application/vnd.docker.ai.model.file", cfg, {"org.cncf.model.filepath": "config.json"}
        ),
        lay.desc(
            "application/vnd.docker.ai.model.file",
            gen,
            {"org.cncf.model.filepath": "generation_config.json"},
        ),
        *[
            lay.desc(
                "application/vnd.docker.ai.safetensors",
                data,
                {"org.cncf.model.filepath": f"model-0000{i + 1}-of-00002.safetensors"},
            )
            for i, data in enumerate(shards)
        ],
        lay.desc("application/vnd.docker.ai.vllm.config.tar", vllm_tar),
    ]
    config = {
        "config": {
            "format": "safetensors",
            "parameters": "115.01 K",
            "architecture": "llama",
            "size": str(sum(len(s) for s in shards)),
        },
        "descriptor": {"created": CREATED},
        "rootfs": {"type": "rootfs", "diff_ids": [layer["digest"] for layer in layers]},
    }
    lay.manifest(
        "docker-safetensors-v02",
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": lay.desc(
                "application/vnd.docker.ai.model.config.v0.2+json", canonical(config)
            ),
            "layers": layers,
        },
    )
    expected["docker-safetensors-v02"] = {
        "producer": "docker",
        "files": {
            "config.json": sha(cfg),
            "generation_config.json": sha(gen),
            "model-00001-of-00002.safetensors": sha(shards[0]),
            "model-00002-of-00002.safetensors": sha(shards[1]),
            "tokenizer.json": sha(read("tiny-llm/tokenizer.json")),
        },
    }


def modelpack_tar(lay: Layout, expected: dict[str, Any], legacy: bool) -> None:
    ns = "cnai" if legacy else "cncf"
    ann = "org.cnai.model" if legacy else "org.cncf.model"
    files = {
        "config.json": ("weight.config", read("tiny-llm/config.json")),
        "model-00001-of-00002.safetensors": (
            "weight",
            read("tiny-llm/model-00001-of-00002.safetensors"),
        ),
        "README.md": ("doc", read("tiny-llm/README.md")),
    }
    layers = []
    for path, (role, data) in files.items():
        layers.append(
            lay.desc(
                f"application/vnd.{ns}.model.{role}.v1.tar",
                tar([(path, data)]),
                {
                    f"{ann}.filepath": path,
                    f"{ann}.file.metadata+json": file_meta(path, len(data)),
                    f"{ann}.file.mediatype.untested": "false",
                },
            )
        )
    config = {
        "descriptor": {"createdAt": CREATED, "name": "tiny-llm", "family": "llama"},
        "config": {
            "architecture": "transformer",
            "format": "safetensors",
            "paramSize": "115k",
            "precision": "bfloat16",
        },
        "modelfs": {
            "type": "layers",
            "diffIds": [f"sha256:{sha(tar([(p, d)]))}" for p, (_, d) in files.items()],
        },
    }
    tag = "modelpack-cnai-legacy" if legacy else "modelpack-modctl-tar"
    lay.manifest(
        tag,
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "artifactType": f"application/vnd.{ns}.model.manifest.v1+json",
            "config": lay.desc(f"application/vnd.{ns}.model.config.v1+json", canonical(config)),
            "layers": layers,
        },
    )
    expected[tag] = {
        "producer": "modelpack-legacy" if legacy else "modelpack",
        "files": {p: sha(d) for p, (_, d) in files.items()},
    }


def hostile(lay: Layout, expected: dict[str, Any]) -> None:
    cases: dict[str, tuple[bytes, str, dict[str, str] | None]] = {}

    def kit_tar(name: str, data: bytes, error: str, media: str = "tar") -> None:
        cases[name] = (data, f"application/vnd.kitops.modelkit.model.v1.{media}", None)
        expected[name] = {"error": error}

    kit_tar("hostile-tar-dotdot", tar([("../evil.txt", b"x")]), "UnsafeContentError")
    kit_tar("hostile-tar-absolute", tar([("/tmp/modelreg-evil.txt", b"x")]), "UnsafeContentError")
    kit_tar(
        "hostile-tar-symlink-out",
        tar([], extra=[special("link", tarfile.SYMTYPE, "../../../etc/passwd")]),
        "UnsafeContentError",
    )
    kit_tar(
        "hostile-tar-symlink-absolute",
        tar([], extra=[special("link", tarfile.SYMTYPE, "/etc/passwd")]),
        "UnsafeContentError",
    )
    kit_tar(
        "hostile-tar-hardlink-out",
        tar([], extra=[special("hard", tarfile.LNKTYPE, "../../etc/passwd")]),
        "UnsafeContentError",
    )
    kit_tar(
        "hostile-tar-device",
        tar([], extra=[special("dev", tarfile.CHRTYPE)]),
        "UnsafeContentError",
    )
    kit_tar("hostile-tar-through-symlink", through_symlink(), "UnsafeContentError")
    kit_tar("hostile-tar-duplicate", tar([("a.txt", b"1"), ("a.txt", b"2")]), "UnsafeContentError")
    bomb = gz(tar([("zeros.bin", b"\0" * (96 * 1024 * 1024))]))
    kit_tar("hostile-gzip-bomb", bomb, "SizeLimitError", "tar+gzip")
    kit_tar("hostile-zstd-layer", b"\x28\xb5\x2f\xfd" + b"\0" * 64, "FormatError", "tar+zstd")
    kit_tar("hostile-not-a-tar", gz(b"this is not a tar archive" * 40), "FormatError", "tar+gzip")
    outside = tar([("other/file.txt", b"x")], dirs=["other"])
    cases["hostile-oras-outside-prefix"] = (
        gz(outside),
        "application/vnd.oci.image.layer.v1.tar+gzip",
        {"io.deis.oras.content.unpack": "true", "org.opencontainers.image.title": "mydir"},
    )
    expected["hostile-oras-outside-prefix"] = {"error": "UnsafeContentError"}
    ok_tar = tar([("mydir/file.txt", b"x")], dirs=["mydir"])
    cases["hostile-oras-tar-digest"] = (
        gz(ok_tar),
        "application/vnd.oci.image.layer.v1.tar+gzip",
        {
            "io.deis.oras.content.unpack": "true",
            "io.deis.oras.content.digest": f"sha256:{sha(b'something else')}",
            "org.opencontainers.image.title": "mydir",
        },
    )
    expected["hostile-oras-tar-digest"] = {"error": "IntegrityError"}
    for name, (data, media, layer_annotations) in sorted(cases.items()):
        kit = media.startswith("application/vnd.kitops")
        config_type = (
            "application/vnd.kitops.modelkit.config.v1+json"
            if kit
            else ("application/vnd.oci.empty.v1+json")
        )
        config = (
            canonical({"manifestVersion": "1.0.0", "package": {"name": name}}) if kit else (EMPTY)
        )
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": lay.desc(config_type, config),
            "layers": [lay.desc(media, data, layer_annotations)],
        }
        if not kit:
            doc["artifactType"] = "application/vnd.unknown.artifact.v1"
        lay.manifest(name, doc)


def hf_cache(out: Path) -> list[Path]:
    """hub/models--tiny-org--tiny-llm: blobs named by content, snapshot files linking there."""
    root = out / "hf-cache" / "hub" / "models--tiny-org--tiny-llm"
    if root.exists():
        shutil.rmtree(root)
    revision = "0123456789abcdef0123456789abcdef01234567"
    snap = root / "snapshots" / revision
    (root / "blobs").mkdir(parents=True)
    (root / "refs").mkdir()
    snap.mkdir(parents=True)
    (root / "refs" / "main").write_text(revision)
    written = [root / "refs" / "main"]
    names = [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "README.md",
    ]
    for name in names:
        data = read(f"tiny-llm/{name}")
        if name.endswith(".safetensors"):
            blob = sha(data)  # LFS files: sha256
        else:
            blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        (root / "blobs" / blob).write_bytes(data)
        link = snap / name
        link.symlink_to(Path("..") / ".." / "blobs" / blob)
        written += [root / "blobs" / blob, link]
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output directory")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    target = out / "producers"
    if target.exists():
        shutil.rmtree(target)
    lay = Layout(target)
    expected: dict[str, Any] = {}
    kitops(lay, expected)
    oras(lay, expected)
    docker(lay, expected)
    modelpack_tar(lay, expected, legacy=True)
    modelpack_tar(lay, expected, legacy=False)
    hostile(lay, expected)
    files = lay.finish()
    (target / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
    files.append(target / "expected.json")
    files += hf_cache(out)
    total = sum(p.lstat().st_size for p in files)
    print(f"wrote {len(files)} files, {total} bytes, under {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    raise SystemExit(main())
