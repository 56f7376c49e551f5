"""Media types and annotation keys modelreg reads and writes (FORMATS.md)."""

from __future__ import annotations

from typing import Final

# OCI image-spec
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"
OCI_LAYER_TAR: Final = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_TAR_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
# Docker schema 2 (read only)
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"

MANIFEST_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
ALL_MANIFEST_TYPES: Final = MANIFEST_TYPES | INDEX_TYPES

# The empty descriptor's content: "{}"
EMPTY_JSON: Final = b"{}"
EMPTY_DIGEST: Final = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

# CNCF ModelPack (model-spec)
MODEL_ARTIFACT: Final = "application/vnd.cncf.model.manifest.v1+json"
MODEL_CONFIG: Final = "application/vnd.cncf.model.config.v1+json"
MODEL_LAYER_PREFIX: Final = "application/vnd.cncf.model."
MODEL_ROLES: Final = ("weight", "weight.config", "doc", "code", "dataset")
LEGACY_MODEL_ARTIFACT: Final = "application/vnd.cnai.model.manifest.v1+json"
LEGACY_MODEL_CONFIG: Final = "application/vnd.cnai.model.config.v1+json"
LEGACY_MODEL_LAYER_PREFIX: Final = "application/vnd.cnai.model."


def model_layer(role: str, packing: str = "raw") -> str:
    """``application/vnd.cncf.model.<role>.v1.<packing>``."""
    if role not in MODEL_ROLES:
        raise ValueError(f"unknown model layer role {role!r}")
    return f"{MODEL_LAYER_PREFIX}{role}.v1.{packing}"


# Annotations
ANN_TITLE: Final = "org.opencontainers.image.title"
ANN_CREATED: Final = "org.opencontainers.image.created"
ANN_REF_NAME: Final = "org.opencontainers.image.ref.name"
ANN_FILEPATH: Final = "org.cncf.model.filepath"
ANN_FILE_METADATA: Final = "org.cncf.model.file.metadata+json"
ANN_UNTESTED: Final = "org.cncf.model.file.mediatype.untested"
LEGACY_ANN_FILEPATH: Final = "org.cnai.model.filepath"
LEGACY_ANN_FILE_METADATA: Final = "org.cnai.model.file.metadata+json"
