"""JSON schema checks for what modelreg writes.

The rules come from the OCI image-spec and the CNCF ModelPack config schema; the
schemas are reproduced in ``tests/schemas/`` so that a clone of the project alone
passes its tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

_DIR = Path(__file__).parent / "schemas"


def _schema(name: str) -> dict[str, Any]:
    return json.loads((_DIR / name).read_text())


def validate_model_config(data: bytes) -> None:
    jsonschema.Draft202012Validator(_schema("modelpack-config.json")).validate(json.loads(data))


def validate_manifest(data: bytes) -> None:
    jsonschema.Draft202012Validator(_schema("oci-manifest.json")).validate(json.loads(data))


def validate_index(data: bytes) -> None:
    jsonschema.Draft202012Validator(_schema("oci-index.json")).validate(json.loads(data))
