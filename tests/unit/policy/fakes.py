"""Test stand-ins shaped like ``modelreg.verify`` results, fact builders, and the
policy document the tests vary."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any

from modelreg.policy import ArtifactFacts, Facts, FileFact, Policy, StepError

DIGEST = "sha256:" + "a" * 64
OTHER_DIGEST = "sha256:" + "b" * 64
MODEL_TYPE = "application/vnd.cncf.model.manifest.v1+json"
WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"


def policy_doc(
    require: str,
    *,
    name: str = "p",
    mode: str = "enforce",
    match: str = '["registry.example.com/models/**"]',
    match_extra: str = "",
) -> str:
    """A ModelPolicy document: ``require`` (YAML, any indentation) under spec.require,
    ``match`` the references list, ``match_extra`` more lines of spec.match (indented
    four spaces). Without ``match_extra`` its lines do not move: tests count them."""
    head = textwrap.dedent(
        f"""\
        apiVersion: modelreg.dev/v1alpha1
        kind: ModelPolicy
        metadata:
          name: {name}
        spec:
          mode: {mode}
          match:
            references: {match}
        """
    )
    return head + match_extra + "  require:\n" + textwrap.indent(textwrap.dedent(require), "    ")


@dataclass(frozen=True)
class Sig:
    authority: str
    kind: str = "key"
    signer: str = ""
    issuer: str | None = None
    bundle_digest: str = "sha256:" + "c" * 64


@dataclass(frozen=True)
class Att:
    predicate_type: str
    predicate: dict[str, Any]
    signer: str = "ci"
    bundle_digest: str = "sha256:" + "d" * 64


@dataclass(frozen=True)
class Result:
    digest: str = DIGEST
    ok: bool = True
    signatures: tuple[Sig, ...] = ()
    attestations: tuple[Att, ...] = ()
    failures: tuple[str, ...] = field(default_factory=tuple)


def modelpack_config(
    fmt: str | None = "safetensors",
    licenses: list[str] | None = None,
    name: str | None = "llm",
    version: str | None = "1.0",
) -> dict[str, Any]:
    descriptor: dict[str, Any] = {}
    if name:
        descriptor["name"] = name
    if version:
        descriptor["version"] = version
    if licenses is not None:
        descriptor["licenses"] = licenses
    cfg: dict[str, Any] = {"paramSize": "8b"}
    if fmt:
        cfg["format"] = fmt
    return {"descriptor": descriptor, "config": cfg, "modelfs": {"type": "layers", "diffIds": []}}


def artifact(
    files: list[tuple[str, int]] | None = None,
    config: dict[str, Any] | None = None,
    artifact_type: str = MODEL_TYPE,
    media_type: str = WEIGHT_RAW,
    unsafe: dict[str, str] | None = None,
) -> ArtifactFacts:
    files = files if files is not None else [("model.safetensors", 1000), ("config.json", 10)]
    unsafe = unsafe or {}
    return ArtifactFacts(
        media_type="application/vnd.oci.image.manifest.v1+json",
        artifact_type=artifact_type,
        config=config if config is not None else modelpack_config(licenses=["Apache-2.0"]),
        files=tuple(
            FileFact(
                path=p,
                media_type=media_type,
                size=s,
                digest=f"sha256:{i:064x}",
                unsafe=unsafe.get(p),
            )
            for i, (p, s) in enumerate(files)
        ),
    )


def facts(
    name: str,
    *,
    policies: list[Policy] | tuple[Policy, ...] = (),
    result: Result | StepError | None = None,
    art: ArtifactFacts | None = None,
    digest: str = DIGEST,
    errors: tuple[StepError, ...] = (),
) -> Facts:
    """Facts for ``name``; ``result`` is recorded for every policy that needs verification."""
    verifications = {}
    if result is not None:
        verifications = {p.digest: result for p in policies if p.needs_verification}
    return Facts(
        reference=f"{name}:v1",
        name=name,
        digest=digest,
        artifact=art if art is not None else artifact(),
        verifications=verifications,
        errors=errors,
    )
