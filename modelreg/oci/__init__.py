"""Pure OCI data: references, digests, descriptors, manifests, indexes. No I/O."""

from modelreg.oci import mediatypes
from modelreg.oci.descriptor import Descriptor, Platform
from modelreg.oci.digest import Digest, Hasher
from modelreg.oci.manifest import (
    MAX_MANIFEST_BYTES,
    Index,
    Manifest,
    canonical_json,
    children,
    empty_config,
    parse_manifest_or_index,
)
from modelreg.oci.reference import Reference

__all__ = [
    "MAX_MANIFEST_BYTES",
    "Descriptor",
    "Digest",
    "Hasher",
    "Index",
    "Manifest",
    "Platform",
    "Reference",
    "canonical_json",
    "children",
    "empty_config",
    "mediatypes",
    "parse_manifest_or_index",
]
