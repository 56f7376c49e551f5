"""An in-memory stand-in for ``Client`` (resolve/target) over MemoryTargets, for unit tests."""

from __future__ import annotations

import json
import threading
import time

from modelreg.content.base import bytes_source
from modelreg.content.memory import MemoryTarget
from modelreg.errors import NetworkError, NotFoundError
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import canonical_json
from modelreg.oci.reference import Reference


class FakeClient:
    def __init__(self) -> None:
        self.repos: dict[str, MemoryTarget] = {}
        self.resolves = 0
        self.delay = 0.0
        self.down = False
        self._lock = threading.Lock()

    def repo(self, name: str) -> MemoryTarget:
        return self.repos.setdefault(name, MemoryTarget())

    def push_model(
        self,
        name: str,
        tag: str,
        files: dict[str, bytes],
        *,
        fmt: str = "safetensors",
        licenses: tuple[str, ...] = ("Apache-2.0",),
    ) -> Descriptor:
        target = self.repo(name)
        layers = []
        for path, data in files.items():
            desc = Descriptor.for_bytes(
                "application/vnd.cncf.model.weight.v1.raw",
                data,
                annotations={mt.ANN_FILEPATH: path, mt.ANN_TITLE: path},
            )
            target.push(desc, bytes_source(data))
            layers.append(desc.to_dict())
        config = json.dumps(
            {
                "descriptor": {
                    "name": name.rsplit("/", 1)[-1],
                    "version": tag,
                    "licenses": list(licenses),
                },
                "config": {"format": fmt, "paramSize": "1b"},
                "modelfs": {"type": "layers", "diffIds": []},
            }
        ).encode()
        cdesc = Descriptor.for_bytes(mt.MODEL_CONFIG, config)
        target.push(cdesc, bytes_source(config))
        manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "artifactType": mt.MODEL_ARTIFACT,
                "config": cdesc.to_dict(),
                "layers": layers,
            }
        )
        mdesc = Descriptor.for_bytes(mt.OCI_MANIFEST, manifest)
        target.push_manifest(mdesc, manifest, tag=tag)
        return mdesc

    # --- the Client surface gather_facts and the engine use
    def target(self, ref: Reference | str, *, create: bool = True) -> MemoryTarget:
        ref = Reference.parse(ref) if isinstance(ref, str) else ref
        if self.down:
            raise NetworkError(f"cannot connect to {ref.registry}")
        if ref.name not in self.repos:
            raise NotFoundError(f"repository {ref.name} not found")
        return self.repos[ref.name]

    def resolve(self, ref: Reference | str) -> tuple[Reference, MemoryTarget, Descriptor]:
        ref = Reference.parse(ref) if isinstance(ref, str) else ref
        with self._lock:
            self.resolves += 1
        if self.delay:
            time.sleep(self.delay)
        target = self.target(ref)
        return ref, target, target.resolve(ref.reference or "latest")
