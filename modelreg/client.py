"""The public API: push, pull, inspect, copy, tags, login and logout.

A :class:`Client` holds connection options and reuses one registry connection
per host; the module-level functions in :mod:`modelreg` create a short-lived
client for one call. Nothing here prints: progress goes to the callback.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelreg import settings
from modelreg.content.base import ReadOnlyTarget, Target, fetch_bytes
from modelreg.content.layout import LayoutStore, LayoutTarget
from modelreg.content.locations import BlobLocations
from modelreg.copy import CopyResult, MountHint, copy_graph, fetch_node
from modelreg.errors import FormatError, InvalidInputError, InvalidReferenceError, NotFoundError
from modelreg.events import ProgressCallback
from modelreg.model.digests import DigestCache
from modelreg.model.pack import DEFAULT_IGNORE, ModelMetadata, PackedModel, pack_directory
from modelreg.model.unpack import UnpackResult, layer_path, unpack
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.manifest import Index, Manifest
from modelreg.oci.reference import Reference

__all__ = ["Client", "InspectResult", "PullResult", "PushResult", "RemoteOptions"]

MAX_CONFIG_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class RemoteOptions:
    """How to reach registries. Defaults: TLS verified against the system CAs, docker
    credentials, plain HTTP only for loopback hosts."""

    plain_http: bool = False
    insecure: bool = False
    ca_file: str | None = None
    docker_config: str | None = None
    concurrency: int = 4
    upload_chunk_size: int | None = None
    on_warning: Callable[[str], None] | None = None
    store: str | None = None
    """Local store / cache directory; default ``$MODELREG_HOME/store``."""
    fsync: bool = True


@dataclass(frozen=True)
class PushResult:
    reference: str
    digest: str
    transfer: CopyResult

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, **self.transfer.to_dict()}


@dataclass(frozen=True)
class PullResult:
    reference: str
    digest: str
    output: str
    files: list[dict[str, Any]]
    bytes_fetched: int
    bytes_from_cache: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "output": self.output,
            "files": self.files,
            "bytesFetched": self.bytes_fetched,
            "bytesFromCache": self.bytes_from_cache,
        }


@dataclass(frozen=True)
class InspectResult:
    reference: str
    descriptor: Descriptor
    manifest: Manifest | Index
    config: dict[str, Any] | None
    files: list[dict[str, Any]] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return str(self.descriptor.digest)

    @property
    def total_size(self) -> int:
        if isinstance(self.manifest, Manifest):
            return sum(layer.size for layer in self.manifest.layers)
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "mediaType": self.descriptor.media_type,
            "artifactType": (
                self.manifest.effective_artifact_type
                if isinstance(self.manifest, Manifest)
                else self.manifest.artifact_type
            ),
            "size": self.descriptor.size,
            "totalSize": self.total_size,
            "manifest": json.loads(self.manifest.raw),
            "config": self.config,
            "files": self.files,
        }


class Client:
    """Entry point of the library; thread-safe; close it (or use ``with``)."""

    def __init__(self, options: RemoteOptions | None = None) -> None:
        self.options = options or RemoteOptions()
        self._registries: dict[str, Any] = {}
        self._store: LayoutStore | None = None
        self._lock = threading.Lock()
        self._digests: DigestCache | None = None
        self._locations: BlobLocations | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            for client in self._registries.values():
                client.close()
            self._registries.clear()
            if self._digests is not None:
                self._digests.close()
                self._digests = None
            if self._locations is not None:
                self._locations.close()
                self._locations = None

    # ---------------------------------------------------------------- targets
    @property
    def store(self) -> LayoutStore:
        """The embedded default store, which is also the blob cache."""
        with self._lock:
            if self._store is None:
                root = Path(self.options.store) if self.options.store else settings.store_dir()
                self._store = LayoutStore(root, fsync=self.options.fsync)
            return self._store

    def _digest_cache(self) -> DigestCache:
        with self._lock:
            if self._digests is None:
                self._digests = DigestCache(settings.state_dir() / "digests.sqlite")
            return self._digests

    def locations(self) -> BlobLocations:
        with self._lock:
            if self._locations is None:
                self._locations = BlobLocations(settings.state_dir() / "locations.sqlite")
            return self._locations

    def _mount_hint(self, ref: Reference) -> MountHint | None:
        """Repositories of ``ref``'s registry where a blob was seen, to mount from."""
        if ref.kind != "registry" or ref.registry is None:
            return None
        registry, repository, locations = ref.registry, ref.repository, self.locations()

        def hint(desc: Descriptor) -> list[str]:
            return locations.candidates(registry, str(desc.digest), exclude=repository)

        return hint

    def _remember(self, ref: Reference, digests: Sequence[str]) -> None:
        if ref.kind == "registry" and ref.registry is not None:
            self.locations().record(ref.registry, ref.repository, digests)

    def _transfer(
        self,
        source: ReadOnlyTarget,
        root: Descriptor,
        dst_ref: Reference,
        *,
        tag: str | None,
        recursive: bool = False,
        progress: ProgressCallback | None = None,
    ) -> CopyResult:
        result = copy_graph(
            source,
            root,
            self.target(dst_ref),
            tag=tag,
            recursive=recursive,
            concurrency=self.options.concurrency,
            progress=progress,
            mount_hint=self._mount_hint(dst_ref),
        )
        self._remember(dst_ref, result.blobs)
        return result

    def registry(self, host: str) -> Any:
        from modelreg.content.registry import CredentialStore

        with self._lock:
            client = self._registries.get(host)
            if client is None:
                client = self._new_registry(host, CredentialStore(self.options.docker_config))
                self._registries[host] = client
            return client

    def _new_registry(self, host: str, credentials: Any) -> Any:
        from modelreg.content.registry import RegistryClient

        opts = self.options
        return RegistryClient(
            host,
            credentials=credentials,
            plain_http=opts.plain_http,
            insecure=opts.insecure,
            ca_file=opts.ca_file,
            on_warning=opts.on_warning,
            upload_chunk_size=opts.upload_chunk_size,
        )

    def target(self, ref: Reference | str, *, create: bool = True) -> Target:
        """The target a reference names: a registry repository, the store, or a layout."""
        ref = Reference.parse(ref) if isinstance(ref, str) else ref
        if ref.kind == "registry":
            assert ref.registry is not None
            target: Target = self.registry(ref.registry).repository(ref.repository)
            return target
        if ref.kind == "store":
            return self.store.target(ref.repository)
        assert ref.path is not None
        layout = LayoutStore(ref.path, create=create, fsync=self.options.fsync)
        return layout.target(None)

    def resolve(self, ref: Reference | str) -> tuple[Reference, Target, Descriptor]:
        """Resolve a tag once; everything after works on the digest."""
        ref = Reference.parse(ref) if isinstance(ref, str) else ref
        target = self.target(ref, create=False)
        reference = ref.reference or "latest"
        desc = target.resolve(reference)
        if ref.digest is not None and desc.digest != ref.digest:
            raise NotFoundError(f"{ref} resolved to {desc.digest}, not the digest asked for")
        return ref, target, desc

    # -------------------------------------------------------------------- push
    def pack(
        self,
        path: str | Path,
        *,
        metadata: ModelMetadata | None = None,
        ignore: Sequence[str] = DEFAULT_IGNORE,
        allow_outside_links: bool = False,
        annotations: dict[str, str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> PackedModel:
        return pack_directory(
            path,
            metadata=metadata,
            digest_cache=self._digest_cache(),
            ignore=ignore,
            allow_outside_links=allow_outside_links,
            annotations=annotations,
            progress=progress,
        )

    def push(
        self,
        path: str | Path,
        ref: Reference | str,
        *,
        metadata: ModelMetadata | None = None,
        ignore: Sequence[str] = DEFAULT_IGNORE,
        allow_outside_links: bool = False,
        annotations: dict[str, str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> PushResult:
        """Pack a model directory and push it to ``ref`` (tag defaults to ``latest``)."""
        ref = Reference.parse(ref) if isinstance(ref, str) else ref
        if ref.digest is not None:
            raise InvalidReferenceError(
                f"cannot push to a digest reference {str(ref)!r}",
                hint="push to a tag; the digest is computed from the content",
            )
        tag = ref.tag or "latest"
        packed = self.pack(
            path,
            metadata=metadata,
            ignore=ignore,
            allow_outside_links=allow_outside_links,
            annotations=annotations,
            progress=progress,
        )
        result = self._transfer(
            packed.as_target(), packed.descriptor, ref, tag=tag, progress=progress
        )
        return PushResult(
            reference=str(ref.with_tag(tag).with_digest(packed.manifest.digest)),
            digest=str(packed.manifest.digest),
            transfer=result,
        )

    # -------------------------------------------------------------------- pull
    def pull(
        self,
        ref: Reference | str,
        output: str | Path,
        *,
        include: Sequence[str] = (),
        cache: bool = True,
        link: bool = False,
        progress: ProgressCallback | None = None,
    ) -> PullResult:
        """Pull the files of a model into ``output``; every byte verified; all or nothing."""
        ref, source, desc = self.resolve(ref)
        manifest = self._manifest(source, desc)
        store = self.store if (cache or ref.kind == "store") else None
        result: UnpackResult = unpack(
            source,
            manifest,
            output,
            cache=store,
            include=include,
            link=link,
            concurrency=self.options.concurrency,
            progress=progress,
            fsync=self.options.fsync,
        )
        self._remember(ref, [str(f.descriptor.digest) for f in result.files])
        return PullResult(
            reference=str(ref.with_digest(desc.digest)),
            digest=str(desc.digest),
            output=str(output),
            files=[
                {"path": f.path, "size": f.descriptor.size, "digest": str(f.descriptor.digest)}
                for f in result.files
            ],
            bytes_fetched=result.bytes_fetched,
            bytes_from_cache=result.bytes_from_cache,
        )

    def _manifest(self, target: ReadOnlyTarget, desc: Descriptor) -> Manifest:
        node = fetch_node(target, desc)
        if isinstance(node, Index):
            raise FormatError(
                f"{desc.digest} is an image index, not a model manifest",
                hint="pull one of its manifests by digest (see `modelreg inspect`)",
            )
        return node

    # ----------------------------------------------------------------- inspect
    def inspect(self, ref: Reference | str) -> InspectResult:
        ref, target, desc = self.resolve(ref)
        node = fetch_node(target, desc)
        config: dict[str, Any] | None = None
        files: list[dict[str, Any]] = []
        if isinstance(node, Manifest):
            if node.config.media_type.endswith("json") and node.config.size <= MAX_CONFIG_BYTES:
                raw = fetch_bytes(target, node.config, limit=MAX_CONFIG_BYTES, what="config")
                try:
                    loaded = json.loads(raw)
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise FormatError(f"config {node.config.digest} is not valid JSON") from exc
                config = loaded if isinstance(loaded, dict) else None
            for layer in node.layers:
                files.append(
                    {
                        "path": layer_path(layer),
                        "mediaType": layer.media_type,
                        "size": layer.size,
                        "digest": str(layer.digest),
                        "untested": layer.annotations.get(mt.ANN_UNTESTED) == "true",
                    }
                )
        return InspectResult(
            reference=str(ref.with_digest(desc.digest)),
            descriptor=desc,
            manifest=node,
            config=config,
            files=files,
        )

    # ------------------------------------------------------------------- copy
    def copy(
        self,
        src: Reference | str,
        dst: Reference | str,
        *,
        recursive: bool = False,
        progress: ProgressCallback | None = None,
    ) -> CopyResult:
        src_ref, source, desc = self.resolve(src)
        dst_ref = Reference.parse(dst) if isinstance(dst, str) else dst
        if dst_ref.digest is not None and dst_ref.digest != desc.digest:
            raise InvalidReferenceError(
                f"destination {str(dst_ref)!r} names a digest other than the source's {desc.digest}"
            )
        tag = dst_ref.tag or (src_ref.tag if dst_ref.digest is None else None)
        self._remember(src_ref, [str(desc.digest)])
        return self._transfer(
            source, desc, dst_ref, tag=tag, recursive=recursive, progress=progress
        )

    # ---------------------------------------------------------------- listing
    def tags(self, ref: Reference | str) -> list[str]:
        ref = Reference.parse(ref) if isinstance(ref, str) else ref
        return list(self.target(ref, create=False).tags())

    def referrers(self, ref: Reference | str, artifact_type: str | None = None) -> list[Descriptor]:
        _, target, desc = self.resolve(ref)
        return target.referrers(desc, artifact_type)

    def list_store(self) -> list[dict[str, str]]:
        """Every tagged manifest in the embedded store."""
        rows = []
        for entry in self.store.entries():
            name = entry.annotations.get(mt.ANN_REF_NAME)
            if name:
                rows.append({"name": name, "digest": str(entry.digest)})
        return sorted(rows, key=lambda r: r["name"])

    # ------------------------------------------------------------ credentials
    def login(self, host: str, username: str, password: str) -> str:
        """Check the credentials against the registry, then store them; returns the file."""
        from modelreg.content.registry import credentials as creds

        _check_host(host)
        static = creds.StaticCredentials(username=username, password=password)
        probe = self._new_registry(host, static)
        try:
            probe.ping()
        finally:
            probe.close()
        return str(creds.login(host, username, password, config_path=self.options.docker_config))

    def logout(self, host: str) -> bool:
        from modelreg.content.registry import credentials as creds

        _check_host(host)
        return bool(creds.logout(host, config_path=self.options.docker_config))

    def delete_tag(self, ref: Reference | str) -> bool:
        ref = Reference.parse(ref) if isinstance(ref, str) else ref
        target = self.target(ref, create=False)
        if isinstance(target, LayoutTarget) and ref.tag:
            return target.untag(ref.tag)
        raise InvalidInputError("deleting tags is supported for the local store only")


def _check_host(host: str) -> str:
    try:
        Reference.parse(f"{host}/x")
    except InvalidReferenceError as exc:
        raise InvalidInputError(
            f"invalid registry host {host!r}", hint="give a host such as registry.example.com:5000"
        ) from exc
    return host
