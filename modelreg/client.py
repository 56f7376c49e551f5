"""The public API: push, pull, inspect, copy, tags, login and logout.

A :class:`Client` holds connection options and reuses one registry connection
per host; the module-level functions in :mod:`modelreg` create a short-lived
client for one call. Nothing here prints: progress goes to the callback.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelreg import lifecycle
from modelreg.content.base import (
    ManifestFetcher,
    PendingPusher,
    ReadOnlyTarget,
    Target,
    bytes_source,
    fetch_bytes,
)
from modelreg.content.copies import Copies, FileIdentity
from modelreg.content.layout import LayoutStore, LayoutTarget
from modelreg.content.locations import BlobLocations
from modelreg.copy import CopyResult, MountHint, copy_graph, fetch_node, walk_graph
from modelreg.errors import (
    CorruptCacheError,
    FormatError,
    IntegrityError,
    InvalidInputError,
    InvalidReferenceError,
    MirrorIntegrityError,
    ModelRegError,
    NotFoundError,
    local_storage,
)
from modelreg.events import Event, ProgressCallback, emit
from modelreg.model import annotations as ann
from modelreg.model.diff import DiffResult, diff_manifests
from modelreg.model.digests import DigestCache
from modelreg.model.formats import UNSAFE_EXTENSIONS
from modelreg.model.grouping import GroupPolicy, grouping_policy
from modelreg.model.hf import require_snapshot
from modelreg.model.layerfiles import (
    GroupedFile,
    LayerFile,
    group_members,
    layer_files,
    read_config,
)
from modelreg.model.pack import (
    DEFAULT_IGNORE,
    ModelMetadata,
    PackedFile,
    PackedGroup,
    PackedModel,
    group_source,
    pack_directory,
    slice_source,
)
from modelreg.model.producers import detect_producer
from modelreg.model.tensors import TensorListing, list_tensors
from modelreg.model.unpack import CacheMode, UnpackResult, layer_path, parse_cache_mode, unpack
from modelreg.oci import mediatypes as mt
from modelreg.oci.descriptor import Descriptor
from modelreg.oci.digest import Digest
from modelreg.oci.manifest import Index, Manifest, empty_config, parse_manifest_or_index
from modelreg.oci.reference import Reference
from modelreg.settings import Settings
from modelreg.transfer import Transfer

if TYPE_CHECKING:
    from modelreg.content.registry.client import RegistryClient
    from modelreg.content.registry.credentials import CredentialProvider
    from modelreg.content.registry.hosts import HostConfig, HostOverride, HostsResolver
    from modelreg.lazy.publish import IndexAnnotator
    from modelreg.prefetch import PrefetchResult
    from modelreg.verify import VerificationPolicy

__all__ = [
    "Client",
    "DiffResult",
    "InspectResult",
    "PullResult",
    "PushResult",
    "RemoteOptions",
]

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
    timeout: float = 60.0
    """Seconds to wait to connect, or for any read or write to make progress, before
    giving up on a registry request (a stuck registry; not a limit on a whole transfer)."""
    document_deadline: float | None = None
    """Total seconds for a document (manifest, index, config, token, list) and for the
    headers of any answer, retries included; default 60 or ``timeout`` if larger."""
    min_throughput: float = 1024.0
    """Bytes/s a blob transfer must average over ``throughput_window`` seconds."""
    throughput_window: float = 30.0
    hosts_dirs: tuple[str, ...] | None = None
    """certs.d directories with per-host ``hosts.toml`` (mirrors, CAs, plain HTTP); None:
    ``$MODELREG_HOSTS_DIR`` or the default search path (:mod:`modelreg.content.registry.hosts`)."""
    host_overrides: Mapping[str, HostOverride] = field(default_factory=dict)
    """Per-host settings that beat the flags above and the files (``cp --from-*``)."""

    def __post_init__(self) -> None:
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise InvalidInputError(
                f"timeout must be a positive number of seconds, not {self.timeout!r}"
            )
        for name, value in (
            ("document_deadline", self.document_deadline),
            ("min_throughput", self.min_throughput),
            ("throughput_window", self.throughput_window),
        ):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise InvalidInputError(f"{name} must be a positive number, not {value!r}")


@dataclass(frozen=True)
class PushResult:
    reference: str
    digest: str
    transfer: CopyResult
    warnings: tuple[str, ...] = ()
    split_files: int = 0
    """How many files were stored as parts."""
    layers: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            **self.transfer.to_dict(),
            "layers": self.layers,
            "splitFiles": self.split_files,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class PullResult:
    reference: str
    digest: str
    output: str
    files: list[dict[str, Any]]
    bytes_fetched: int
    bytes_from_cache: int
    producer: str = "modelpack"
    skipped: tuple[str, ...] = ()
    repaired: tuple[str, ...] = ()
    """Digests whose local copy was damaged, quarantined and fetched again."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "output": self.output,
            "producer": self.producer,
            "files": self.files,
            "bytesFetched": self.bytes_fetched,
            "bytesFromCache": self.bytes_from_cache,
            "skipped": list(self.skipped),
            "repaired": list(self.repaired),
        }


@dataclass(frozen=True)
class InspectResult:
    reference: str
    descriptor: Descriptor
    manifest: Manifest | Index
    config: dict[str, Any] | None
    files: list[dict[str, Any]] = field(default_factory=list)
    producer: str | None = None
    tensors: TensorListing | None = None

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
            "producer": self.producer,
            "files": self.files,
            **({"tensors": self.tensors.to_dict()} if self.tensors is not None else {}),
        }


_PICKLE_ONLY = frozenset(UNSAFE_EXTENSIONS - {".bin"})


def _annotated_unsafe(desc: Descriptor) -> bool:
    value = desc.annotations.get(ann.ANN_FILE_UNSAFE) or desc.annotations.get(
        ann.LEGACY_ANN_FILE_UNSAFE
    )
    return value is not None and value.strip().lower() not in ("", "false", "0", "no")


def _file_rows(manifest: Manifest, config: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per file of the artifact, named as pull names it (:func:`layer_files`:
    parts of a split file grouped, an archive named by what it holds), no blob read.
    A manifest pull would refuse is shown layer by layer, with the paths it declares."""
    try:
        files = layer_files(manifest, config)
        groups = group_members(files)
    except ModelRegError:
        return [
            {
                "path": layer_path(layer),
                "kind": "layer",
                "mediaType": layer.media_type,
                "size": layer.size,
                "digest": str(layer.digest),
                "untested": layer.annotations.get(mt.ANN_UNTESTED) == "true",
                "unsafe": _annotated_unsafe(layer),
            }
            for layer in manifest.layers
        ]
    rows: list[dict[str, Any]] = []
    for i, f in enumerate(files):
        members = groups.get(i)
        if members is None:
            rows.append(_file_row(f))
        else:
            group = str(f.digest)
            rows.extend(_grouped_row(m, group) for m in members)
    return rows


def _suffix(path: str) -> str:
    """``Path(path).suffix.lower()`` without a Path: a row per file of 20,000."""
    name = path.rpartition("/")[2]
    dot = name.rfind(".")
    return name[dot:].lower() if 0 < dot < len(name) - 1 else ""


def _grouped_row(m: GroupedFile, group: str) -> dict[str, Any]:
    """A file of a small-file group: listed like a file, with the group it rides in."""
    return {
        "path": m.path,
        "kind": "grouped",
        "mediaType": m.group.media_type,
        "size": m.size,
        "digest": m.digest,
        "group": group,
        "untested": False,
        "unsafe": _suffix(m.path) in _PICKLE_ONLY,
    }


def _file_row(f: LayerFile) -> dict[str, Any]:
    first = f.blobs[0]
    row: dict[str, Any] = {
        "path": f.path,
        "kind": "file" if f.kind == "compressed" else f.kind,
        "mediaType": f.media_type,
        "size": f.size,
        "digest": str(f.digest),
        "untested": f.kind in ("file", "compressed")
        and first.annotations.get(mt.ANN_UNTESTED) == "true",
        "unsafe": f.kind != "skipped" and _annotated_unsafe(first),
    }
    if f.kind in ("file", "compressed", "split") and f.path is not None:
        row["unsafe"] = row["unsafe"] or Path(f.path).suffix.lower() in _PICKLE_ONLY
    if f.kind == "compressed":
        row["compressed"] = True
    elif f.kind == "split":
        row["parts"] = len(f.blobs)
    elif f.kind == "archive":
        row["label"] = f.note
    elif f.kind == "skipped":
        row["note"] = f.note
    return row


PENDING_MIN = 64 * 1024 * 1024
"""Push to a registry: a file at least this big whose digest is not cached is sent
while it is being hashed (see :class:`_EarlyUploads`)."""
PENDING_MAX = 2
"""Push: at most this many files are sent while being hashed at once."""
_PENDING_MEDIA_TYPE = "application/octet-stream"


@dataclass
class _Pending:
    """A file sent while it is hashed; hashing completes ``digest``."""

    name: str
    digest: Future[Digest]
    identity: FileIdentity
    """The file when hashing started."""

    @property
    def size(self) -> int:
        return self.identity.size


def _changed(name: str, how: str) -> InvalidInputError:
    return InvalidInputError(
        f"{name!r} changed {how}",
        hint="push again once nothing writes to the file; nothing was tagged",
    )


@contextlib.contextmanager
def _blame_changed_files(files: Iterable[PackedFile]) -> Iterator[None]:
    """An integrity failure while ``files`` are sent, explained by one of them having
    changed since it was hashed, becomes that file's :func:`_changed` error."""
    try:
        yield
    except IntegrityError as exc:
        changed = next((f for f in files if f.changed()), None)
        if changed is None:
            raise
        raise _changed(changed.path, f"after it was hashed ({exc.message})") from exc


class _EarlyUploads:
    """Feeds the push's :class:`~modelreg.transfer.Transfer` while the directory is hashed.

    ``pack_directory`` reports each layer as soon as its digest is known; this
    hands it to the engine right away, so hashing the rest of a big file overlaps
    with uploading what is already hashed. The graph walk that follows runs on the
    same engine and finds these blobs claimed: nothing is checked, sent or counted
    twice. A blob the destination already has is recorded without an event here;
    the walk reports it "skipped" under the manifest's name.

    A big file (:data:`PENDING_MIN`) about to be hashed because its digest is not
    cached starts going to a :class:`~modelreg.content.base.PendingPusher` at once
    (:meth:`hashing`, at most :data:`PENDING_MAX` at a time, within the engine's
    concurrency): the target streams it while it is hashed, checks for the blob (or
    mounts it) once the digest is known, and verifies the bytes against that digest
    at the end. A file that changes meanwhile fails the push with
    :class:`InvalidInputError`.
    """

    def __init__(self, engine: Transfer) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._futures: list[Future[None]] = []
        self._pending: dict[Path, _Pending] = {}
        self._slots = threading.BoundedSemaphore(PENDING_MAX)

    def hashing(self, rel: str, path: Path, size: int) -> None:
        """``pack_directory`` is about to hash ``path``: a big file starts going out now."""
        if not isinstance(self._engine.dst, PendingPusher) or size < PENDING_MIN:
            return
        identity = FileIdentity.of_path(path)
        if identity is None:
            return  # hashing reports it
        with self._lock:
            if path in self._pending or not self._slots.acquire(blocking=False):
                return  # the same file twice, or enough in flight: sent once hashed
            pending = _Pending(rel, Future(), identity)
            self._pending[path] = pending
            self._futures.append(self._engine.submit(self._send_pending, path, pending))

    def submit(self, desc: Descriptor, path: Path, offset: int) -> None:
        """``pack_directory`` hashed a layer: send it (or complete its pending upload)."""
        self._engine.raise_failure()  # fail fast (e.g. denied): stop hashing the rest
        with self._lock:
            pending = self._pending.get(path) if offset == 0 else None
            if pending is not None and not pending.digest.done():
                self._engine.claim(desc)
                self._resolve(pending, desc, path)
                return
            # the file as it is once hashed: an upload that fails to verify while it
            # differs was fed a changed file, not bad bytes
            identity = FileIdentity.of_path(path)
            self._futures.append(self._engine.submit(self._one, desc, path, offset, identity))

    def submit_group(self, group: PackedGroup, files: Sequence[PackedFile]) -> None:
        """``pack_directory`` hashed a small-file group (``files``, as they were hashed):
        send it now, beside the big files still being hashed (the tar is streamed from
        the members' files)."""
        self._engine.raise_failure()
        with self._lock:
            self._futures.append(self._engine.submit(self._send_group, group, files))

    def _send_group(self, group: PackedGroup, files: Sequence[PackedFile]) -> None:
        # the destination refuses bytes that do not hash to the group's digest: a member
        # rewritten since it was hashed is then named
        with _blame_changed_files(files):
            self._engine.send(
                group.descriptor, group_source(group), group.path, announce_existing=False
            )

    @staticmethod
    def _resolve(pending: _Pending, desc: Descriptor, path: Path) -> None:
        if FileIdentity.of_path(path) != pending.identity or desc.size != pending.size:
            pending.digest.set_exception(
                _changed(pending.name, "while it was being hashed and sent")
            )
        else:
            pending.digest.set_result(desc.digest)

    def _send_pending(self, path: Path, pending: _Pending) -> None:
        try:
            name, size = pending.name, pending.size
            try:
                self._engine.push_pending(
                    _PENDING_MEDIA_TYPE, size, slice_source(path, 0, size), pending.digest, name
                )
            except IntegrityError as exc:
                raise _changed(
                    name, f"while it was being sent: the registry refused it ({exc.message})"
                ) from exc
        finally:
            self._slots.release()

    def _one(
        self, desc: Descriptor, path: Path, offset: int, identity: FileIdentity | None
    ) -> None:
        name = f"{path.name}@{offset}" if offset else path.name
        source = slice_source(path, offset, desc.size)
        try:
            self._engine.send(desc, source, name, announce_existing=False)
        except IntegrityError as exc:
            if identity is None or FileIdentity.of_path(path) == identity:
                raise
            raise _changed(path.name, f"after it was hashed ({exc.message})") from exc

    def _stop_waiting(self) -> None:
        """Fail the digests still awaited: their uploads cancel instead of waiting forever."""
        with self._lock:
            for pending in self._pending.values():
                if not pending.digest.done():
                    pending.digest.set_exception(
                        InvalidInputError(f"the push stopped before {pending.name!r} was hashed")
                    )

    def finish(self) -> None:
        """Wait for every upload (hashing is over); the first failure is raised."""
        self._stop_waiting()  # every hashed file's digest was delivered: none can come now
        with self._lock:
            futures = list(self._futures)
        self._engine.wait(futures)

    def abort(self) -> None:
        self._stop_waiting()
        self._engine.close()


class Client:
    """Entry point of the library; thread-safe; close it (or use ``with``)."""

    def __init__(
        self, options: RemoteOptions | None = None, *, settings: Settings | None = None
    ) -> None:
        """``settings``: what the environment says (the store's home, the chunk cache
        bound, the signature referrer cap); default :meth:`Settings.from_env`."""
        self.options = options or RemoteOptions()
        self.settings = settings or Settings.from_env()
        self._registries: dict[str, RegistryClient] = {}
        self._store: LayoutStore | None = None
        self._lock = threading.Lock()
        self._digests: DigestCache | None = None
        self._locations: BlobLocations | None = None
        self._hosts: HostsResolver | None = None

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
                root = Path(self.options.store) if self.options.store else self.settings.store_dir
                self._store = LayoutStore(root, fsync=self.options.fsync)
            return self._store

    def _digest_cache(self) -> DigestCache:
        with self._lock:
            if self._digests is None:
                self._digests = DigestCache(self.settings.state_dir / "digests.sqlite")
            return self._digests

    def locations(self) -> BlobLocations:
        with self._lock:
            if self._locations is None:
                self._locations = BlobLocations(self.settings.state_dir / "locations.sqlite")
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

    def _engine(self, dst_ref: Reference, progress: ProgressCallback | None) -> Transfer:
        """The blob-transfer engine for one operation into ``dst_ref``."""
        return Transfer(
            self.target(dst_ref),
            concurrency=self.options.concurrency,
            progress=progress,
            mount_hint=self._mount_hint(dst_ref),
        )

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

    def registry(self, host: str) -> RegistryClient:
        """The registry client for ``host`` (one per host, shared by its repositories)."""
        from modelreg.content.registry import CredentialStore

        with self._lock:
            client = self._registries.get(host)
            if client is None:
                client = self._new_registry(host, CredentialStore(self.options.docker_config))
                self._registries[host] = client
            return client

    def host_config(self, host: str) -> HostConfig:
        """What the per-host configuration files say about ``host`` (read once)."""
        from modelreg.content.registry.hosts import HostsResolver

        if self._hosts is None:
            self._hosts = HostsResolver(self.options.hosts_dirs)
        return self._hosts.lookup(host)

    def _new_registry(self, host: str, credentials: CredentialProvider) -> RegistryClient:
        from modelreg.content.registry.mirrors import connect

        opts = self.options
        return connect(
            host,
            self.host_config(host),
            credentials=credentials,
            plain_http=opts.plain_http,
            insecure=opts.insecure,
            ca_file=opts.ca_file,
            override=opts.host_overrides.get(host),
            on_warning=opts.on_warning,
            upload_chunk_size=opts.upload_chunk_size,
            timeout=opts.timeout,
            document_deadline=opts.document_deadline,
            min_throughput=opts.min_throughput,
            throughput_window=opts.throughput_window,
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

    def _resolve_node(
        self, ref: Reference | str
    ) -> tuple[Reference, Target, Descriptor, Manifest | Index]:
        """:meth:`resolve`, and the manifest or index it names: one GET where the target
        can (:class:`~modelreg.content.base.ManifestFetcher`), for the commands that read
        the manifest anyway; else resolve, then fetch by digest."""
        ref = Reference.parse(ref) if isinstance(ref, str) else ref
        target = self.target(ref, create=False)
        if not isinstance(target, ManifestFetcher):
            ref, target, desc = self.resolve(ref)
            return ref, target, desc, fetch_node(target, desc)
        desc, data = target.fetch_manifest(ref.reference or "latest")
        if ref.digest is not None and desc.digest != ref.digest:
            raise NotFoundError(f"{ref} resolved to {desc.digest}, not the digest asked for")
        node = parse_manifest_or_index(data, desc.media_type, f"manifest {desc.digest}")
        return ref, target, desc, node

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
        split: bool | None = None,
        part_size: int | str | None = None,
    ) -> PackedModel:
        """Describe a directory as an artifact (metadata, digests, parts); nothing is sent."""
        return pack_directory(
            path,
            metadata=metadata,
            digest_cache=self._digest_cache(),
            ignore=ignore,
            allow_outside_links=allow_outside_links,
            annotations=annotations,
            progress=progress,
            split=split,
            part_size=part_size,
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
        split: bool | None = None,
        part_size: int | str | None = None,
        chunk_index: bool = True,
        pack_small: int | str | bool | None = None,
    ) -> PushResult:
        """Pack a model directory and push it to ``ref`` (tag defaults to ``latest``).

        The chunk index of :mod:`modelreg.lazy` (per-chunk digests, named in a
        manifest annotation so that the manifest digest covers it, stored as a
        referrer) is written unless ``chunk_index=False``: lazy opens then fetch and
        verify chunks instead of whole blobs. It is computed in the same read as
        each file's digest, and cached with it: no file is read for it twice.

        ``split=True`` stores big safetensors/GGUF files as tensor-aligned parts
        (``part_size``, default 32 MiB) so that a later version sends only the
        parts that changed. A Hugging Face cache snapshot directory is recognised
        and pushed with its repository name and revision.

        Blobs go out while the directory is hashed; to a registry, a big file whose
        digest is not cached yet (:data:`PENDING_MIN`) is sent while it is hashed.
        A file that changes during the push fails it (:class:`InvalidInputError`)
        before anything is tagged.

        Files below ``pack_small`` bytes (default: ``modelreg.toml``'s ``[pack]
        small_file_threshold``, else 1 MiB) share deterministic tar layers
        (:mod:`modelreg.model.grouping`); ``pack_small=False`` or ``0`` gives every
        file its own layer.
        """
        ref = Reference.parse(ref) if isinstance(ref, str) else ref
        if ref.digest is not None:
            raise InvalidReferenceError(
                f"cannot push to a digest reference {str(ref)!r}",
                hint="push to a tag; the digest is computed from the content",
            )
        tag = ref.tag or "latest"
        indexer = None
        if chunk_index:
            from modelreg.lazy.chunkindex import ANN_CHUNK_INDEX
            from modelreg.lazy.publish import IndexAnnotator

            if annotations is not None and ANN_CHUNK_INDEX in annotations:
                # the push's own index would silently replace the caller's
                raise InvalidInputError(
                    f"the annotation {ANN_CHUNK_INDEX!r} names a chunk index, and push "
                    "writes its own",
                    hint="pass chunk_index=False (--no-chunk-index) to push with yours",
                )

            indexer = IndexAnnotator()
        with self._engine(ref, progress) as engine:
            packed = self._pack_and_send(
                engine,
                path,
                metadata=metadata,
                ignore=ignore,
                allow_outside_links=allow_outside_links,
                annotations=annotations,
                progress=progress,
                split=split,
                part_size=part_size,
                indexer=indexer,
                grouping=grouping_policy(pack_small),
            )
            if indexer is not None:
                # the index blob goes with the model's (skipped, mounted, counted alike)
                index_blob, index_desc = indexer.result()
                engine.send(index_desc, bytes_source(index_blob), "chunk index")
                engine.send(empty_config(), bytes_source(mt.EMPTY_JSON), "chunk index")
            with _blame_changed_files(packed.files):
                result = walk_graph(engine, packed.as_target(), packed.descriptor, tag=tag)
            if indexer is not None:
                from modelreg.lazy.publish import chunk_index_referrer

                # after its subject: the referrer that keeps the index blob alive
                referrer = chunk_index_referrer(index_desc, packed.descriptor)
                engine.dst.push_manifest(referrer.descriptor(), referrer.raw)
                result.referrers.append(referrer.descriptor())
        self._remember(ref, result.blobs)
        return PushResult(
            reference=str(ref.with_tag(tag).with_digest(packed.manifest.digest)),
            digest=str(packed.manifest.digest),
            transfer=result,
            warnings=packed.warnings,
            split_files=sum(1 for f in packed.files if f.parts),
            layers=len(packed.manifest.layers),
        )

    def _pack_and_send(
        self,
        engine: Transfer,
        path: str | Path,
        *,
        metadata: ModelMetadata | None,
        ignore: Sequence[str],
        allow_outside_links: bool,
        annotations: dict[str, str] | None,
        progress: ProgressCallback | None,
        split: bool | None,
        part_size: int | str | None,
        indexer: IndexAnnotator | None = None,
        grouping: GroupPolicy | None = None,
    ) -> PackedModel:
        """Pack ``path``, every layer going to ``engine`` as soon as it is hashed; with
        ``indexer``, each file's chunk table is hashed in the same read and the index
        named in the manifest."""
        chunking = None
        if indexer is not None:
            from modelreg.lazy.chunkindex import chunk_geometry

            chunking = chunk_geometry
        early = _EarlyUploads(engine)
        try:
            packed = pack_directory(
                path,
                metadata=metadata,
                digest_cache=self._digest_cache(),
                ignore=ignore,
                allow_outside_links=allow_outside_links,
                annotations=annotations,
                progress=progress,
                split=split,
                part_size=part_size,
                on_blob=early.submit,
                on_hash=early.hashing,
                on_group=early.submit_group,
                chunking=chunking,
                annotator=indexer,
                grouping=grouping,
            )
            with _blame_changed_files(packed.files):
                early.finish()
        except BaseException:
            early.abort()
            raise
        return packed

    def import_hf(self, path: str | Path, ref: Reference | str, **kwargs: Any) -> PushResult:
        """Push a Hugging Face cache snapshot (``.../models--ORG--NAME/snapshots/REV``,
        or ``.../models--ORG--NAME``, whose ``refs/main`` is followed).

        Links are followed only into that cache's ``blobs/``; the descriptor gets
        ``name = ORG/NAME`` and ``revision = REV``. No network besides ``ref``.
        """
        return self.push(require_snapshot(path).root, ref, **kwargs)

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
        cache_mode: CacheMode | str = "auto",
        overwrite: bool = False,
    ) -> PullResult:
        """Pull the files of a model into ``output``; every byte verified; all or nothing.

        A file already in ``output`` that the pull would replace with different
        content is refused (:class:`InvalidInputError`) unless ``overwrite``; one with
        the same content is kept as it is. A failed pull leaves ``output`` as it was.

        ``cache_mode`` says what the cache keeps of blobs it lacked: ``"copy"`` its own
        copy; ``"reference"`` only where the verified output file is (each byte written
        once; later pulls copy from that file while it is unchanged, verifying it);
        ``"auto"`` a reflink where the filesystem can, else a reference. ``link``
        implies ``"copy"``; ``cache=False`` keeps and reads nothing.
        """
        mode = parse_cache_mode(cache_mode)  # --link with 'reference': unpack refuses it
        ref, source, desc = self.resolve(ref)
        manifest = self._manifest(source, desc)
        store = self.store if (cache or ref.kind == "store") else None
        needed = sum(layer.size for layer in manifest.layers)
        # a full or read-only output disk is the user's to fix: say so (store writes say
        # it themselves, naming the store); unpack removes its staging before this runs
        repaired: list[str] = []
        untrusted: list[str] = []
        while True:
            try:
                with (
                    local_storage(output, "write the pulled model to", needed=needed),
                    Copies(
                        self.settings.state_dir / "copies.sqlite" if store is not None else None
                    ) as copies,
                ):
                    result: UnpackResult = unpack(
                        source,
                        manifest,
                        output,
                        cache=store,
                        source_is_cache=ref.kind == "store",  # the store is then both
                        include=include,
                        link=link,
                        concurrency=self.options.concurrency,
                        progress=progress,
                        fsync=self.options.fsync,
                        cache_mode=mode,
                        copies=copies,
                        overwrite=overwrite,
                        digests=self._digest_cache(),
                    )
                break
            except CorruptCacheError as exc:
                # the store quarantined the damaged blob, and the failed pull left the output
                # as it was: pulling again fetches that blob from the source. From the store
                # alone there is no other copy; its error says what to do.
                if (
                    ref.kind == "store"
                    or exc.digest in repaired
                    or len(repaired) >= len(manifest.layers)
                ):
                    raise
                repaired.append(exc.digest)
                emit(progress, Event("message", f"repairing the local copy of {exc.digest}"))
            except MirrorIntegrityError as exc:
                # that mirror is distrusted now and the failed pull left the output as it
                # was: pulling again reads the blob from byte 0 from the next source
                if exc.mirror in untrusted:
                    raise
                untrusted.append(exc.mirror)
                note = f"mirror {exc.mirror} served a wrong {exc.digest}; trying the next source"
                emit(progress, Event("message", note))
        self._remember(ref, result.blobs)
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
            producer=result.producer,
            skipped=tuple(result.skipped),
            repaired=tuple(repaired),
        )

    def _manifest(self, target: ReadOnlyTarget, desc: Descriptor) -> Manifest:
        return _model_manifest(fetch_node(target, desc), desc)

    def _resolve_manifest(self, ref: Reference | str) -> tuple[ReadOnlyTarget, Manifest]:
        """The model manifest ``ref`` names, in one GET where the target can."""
        _, target, desc, node = self._resolve_node(ref)
        return target, _model_manifest(node, desc)

    # ----------------------------------------------------------------- inspect
    def inspect(self, ref: Reference | str, *, tensors: bool = False) -> InspectResult:
        """Manifest, config and files of an artifact; with ``tensors=True`` also every
        tensor of its weight files, read from their headers with range requests."""
        ref, target, desc, node = self._resolve_node(ref)
        config: dict[str, Any] | None = None
        files: list[dict[str, Any]] = []
        producer = None
        listing = None
        if isinstance(node, Manifest):
            producer = detect_producer(node)
            config = self._config(target, node)
            files = _file_rows(node, config)
            if tensors:
                listing = list_tensors(target, node, concurrency=self.options.concurrency)
                by_path = {f.path: f for f in listing.files}
                for row in files:
                    described = by_path.get(str(row.get("path")))
                    if described is not None:
                        row["unsafe"] = bool(row["unsafe"] or described.unsafe)
                        row["format"] = described.format
                        if described.unsafe_reason:
                            row["unsafeReason"] = described.unsafe_reason
        return InspectResult(
            reference=str(ref.with_digest(desc.digest)),
            descriptor=desc,
            manifest=node,
            config=config,
            files=files,
            producer=producer,
            tensors=listing,
        )

    def _config(self, target: ReadOnlyTarget, node: Manifest) -> dict[str, Any] | None:
        if not node.config.media_type.endswith("json") or node.config.size > MAX_CONFIG_BYTES:
            return None
        raw = fetch_bytes(target, node.config, limit=MAX_CONFIG_BYTES, what="config")
        try:
            loaded = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"config {node.config.digest} is not valid JSON") from exc
        return loaded if isinstance(loaded, dict) else None

    # -------------------------------------------------------------------- diff
    def diff(
        self, ref_a: Reference | str, ref_b: Reference | str, *, tensors: bool = True
    ) -> DiffResult:
        """Which files and tensors differ between two models, and how many bytes they share."""
        target_a, manifest_a = self._resolve_manifest(ref_a)
        target_b, manifest_b = self._resolve_manifest(ref_b)
        return diff_manifests(
            target_a,
            manifest_a,
            target_b,
            manifest_b,
            tensors=tensors,
            config_a=read_config(target_a, manifest_a),
            config_b=read_config(target_b, manifest_b),
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

    def prefetch(
        self,
        ref: Reference | str,
        *,
        via: Sequence[str] = (),
        referrers: bool = False,
        progress: ProgressCallback | None = None,
    ) -> PrefetchResult:
        """Warm mirrors (``via``, else the configured ones) with a model: every blob read
        through each, verified, and dropped (:mod:`modelreg.prefetch`)."""
        from modelreg.prefetch import prefetch

        return prefetch(self, ref, via=via, referrers=referrers, progress=progress)

    # ---------------------------------------------------------------- listing
    def tags(self, ref: Reference | str) -> list[str]:
        """The tags of a repository; :class:`NotFoundError` for one the store does not
        hold (in the store, a repository exists while it has a tag), as a registry says."""
        ref = Reference.parse(ref) if isinstance(ref, str) else ref
        names = list(self.target(ref, create=False).tags())
        if not names and ref.kind == "store" and ref.repository:
            raise NotFoundError(
                f"repository {ref.repository!r} is not in the local store",
                hint="`modelreg list` shows what the store holds",
            )
        return names

    def referrers(self, ref: Reference | str, artifact_type: str | None = None) -> list[Descriptor]:
        _, target, desc = self.resolve(ref)
        return target.referrers(desc, artifact_type)

    def list_store(self) -> list[dict[str, Any]]:
        """Every tagged manifest in the embedded store: name, digest, and its size,
        creation time and whether it is signed (:func:`modelreg.lifecycle.describe`)."""
        rows = []
        for entry in self.store.entries():
            name = entry.annotations.get(mt.ANN_REF_NAME)
            if name:
                target = self.store.target(name.rpartition(":")[0] or None)
                desc = entry.with_annotations({})
                details = lifecycle.describe(target, desc)
                rows.append({"name": name, "digest": str(entry.digest), **details})
        return sorted(rows, key=lambda r: str(r["name"]))

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

    # ---------------------------------------------------------------- lifecycle
    def delete(
        self, ref: Reference | str, *, referrers: bool = False, dry_run: bool = False
    ) -> lifecycle.DeleteResult:
        """Delete a tag, or a manifest by digest, from a registry or the store;
        ``referrers``: the manifest with its signatures, attestations and chunk index
        (:func:`modelreg.lifecycle.delete`). Store blobs it frees are pruned."""
        ref = Reference.parse(ref) if isinstance(ref, str) else ref
        if ref.tag is None and ref.digest is None:
            raise InvalidInputError(
                f"{str(ref)!r} names no tag or digest", hint="say which: REPO:TAG or REPO@DIGEST"
            )
        target = self.target(ref, create=False)
        reference = str(ref.digest) if ref.digest is not None else str(ref.tag)
        return lifecycle.delete(target, reference, referrers=referrers, dry_run=dry_run)

    def prune(
        self,
        repository: Reference | str,
        *,
        keep_last: int,
        keep: Sequence[str] = (),
        older_than: float | None = None,
        keep_signed_by: VerificationPolicy | None = None,
        dry_run: bool = False,
    ) -> lifecycle.RetentionResult:
        """Keep the newest ``keep_last`` versions of a repository (and tags matching the
        ``keep`` globs, versions younger than ``older_than`` seconds, and versions that
        verify against ``keep_signed_by``, e.g. ``policy_from_options(keys=["a.pub"])``);
        delete the rest with their referrers (:func:`modelreg.lifecycle.retain`). A
        version whose signatures could not be checked is kept and named in ``problems``."""
        ref = Reference.parse(repository) if isinstance(repository, str) else repository
        return lifecycle.retain(
            self.target(ref, create=False),
            keep_last=keep_last,
            keep=keep,
            older_than=older_than,
            keep_signed_by=keep_signed_by,
            dry_run=dry_run,
        )


def _check_host(host: str) -> str:
    try:
        Reference.parse(f"{host}/x")
    except InvalidReferenceError as exc:
        raise InvalidInputError(
            f"invalid registry host {host!r}", hint="give a host such as registry.example.com:5000"
        ) from exc
    return host


def _model_manifest(node: Manifest | Index, desc: Descriptor) -> Manifest:
    """``node`` when it is a model manifest; an index is refused with what to do."""
    if isinstance(node, Index):
        raise FormatError(
            f"{desc.digest} is an image index, not a model manifest",
            hint="pull one of its manifests by digest (see `modelreg inspect`)",
        )
    return node
