"""Load ``ModelPolicy`` documents: strict validation with file, line and reason.

Unknown keys are errors (a typo such as ``requier:`` must not silently drop a
requirement), every requirement section must require something, regular expressions,
public keys and Rego modules are compiled at load time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from modelreg._json import canonical_json
from modelreg.errors import InvalidReferenceError
from modelreg.policy._conditions import (
    AllOfConditions,
    AnyOfConditions,
    Condition,
    FieldCondition,
    RegoCondition,
    condition_list,
)
from modelreg.policy._glob import Glob
from modelreg.policy._policy import (
    API_VERSION,
    KIND,
    AllOf,
    AttestationRule,
    AuthoritySpec,
    FormatRule,
    KeyAuthoritySpec,
    KeylessAuthoritySpec,
    LicenseRule,
    Match,
    MaxSizeRule,
    NoPickleRule,
    Policy,
    RequiredFieldsRule,
    Rule,
    SignatureRule,
)
from modelreg.policy._rego import RegoError, RegoModule
from modelreg.policy._results import Mode
from modelreg.policy._yaml import MAX_POLICY_BYTES, Located, PolicyLoadError, load_documents

__all__ = ["PolicySet", "load_policies", "load_policy_file", "parse_policies"]

_NAME: Final = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_MAX_KEY_BYTES: Final = 64 * 1024
_POLICY_SUFFIXES: Final = (".yaml", ".yml")


class _Validator:
    def __init__(self, source: str, base_dir: Path | None) -> None:
        self.source = source
        self.base_dir = base_dir

    def fail(
        self, node: Located | int | None, path: str, reason: str, hint: str | None = None
    ) -> PolicyLoadError:
        line = node.line if isinstance(node, Located) else node
        return PolicyLoadError(
            self.source, line, f"{path}: {reason}" if path else reason, hint=hint
        )

    def mapping(
        self, node: Located, path: str, allowed: Iterable[str], required: Iterable[str] = ()
    ) -> dict[str, Located]:
        if not isinstance(node.value, dict):
            raise self.fail(node, path, f"must be a mapping, not {_kind(node.value)}")
        allowed = set(allowed)
        for key, value in node.value.items():
            if key not in allowed:
                raise self.fail(
                    (node.key_lines or {}).get(key, value.line),
                    f"{path}.{key}" if path else key,
                    f"unknown field (expected one of: {', '.join(sorted(allowed))})",
                )
        for key in required:
            if key not in node.value:
                raise self.fail(node, path or "document", f"missing required field {key!r}")
        return dict(node.value)

    def string(self, node: Located, path: str) -> str:
        if not isinstance(node.value, str) or not node.value.strip():
            raise self.fail(node, path, f"must be a non-empty string, not {_kind(node.value)}")
        return node.value

    def strings(self, node: Located, path: str) -> tuple[str, ...]:
        if not isinstance(node.value, list) or not node.value:
            raise self.fail(node, path, "must be a non-empty list of strings")
        return tuple(self.string(item, f"{path}[{i}]") for i, item in enumerate(node.value))

    def items(self, node: Located, path: str) -> list[Located]:
        if not isinstance(node.value, list) or not node.value:
            raise self.fail(node, path, "must be a non-empty list")
        return list(node.value)

    def boolean(self, node: Located, path: str) -> bool:
        if not isinstance(node.value, bool):
            raise self.fail(node, path, f"must be true or false, not {node.value!r}")
        return node.value

    def integer(self, node: Located, path: str, minimum: int) -> int:
        if isinstance(node.value, bool) or not isinstance(node.value, int) or node.value < minimum:
            raise self.fail(node, path, f"must be an integer >= {minimum}, not {node.value!r}")
        value: int = node.value
        return value

    def regex(self, node: Located, path: str) -> str:
        text = self.string(node, path)
        try:
            re.compile(text)
        except re.error as exc:
            raise self.fail(node, path, f"invalid regular expression: {exc}") from exc
        return text

    def read_file(self, node: Located, path: str, limit: int) -> bytes:
        name = self.string(node, path)
        file = Path(name)
        if not file.is_absolute() and self.base_dir is not None:
            file = self.base_dir / file
        try:
            with open(file, "rb") as fh:
                data = fh.read(limit + 1)
        except OSError as exc:
            raise self.fail(node, path, f"cannot read {str(file)!r}: {exc.strerror}") from exc
        if len(data) > limit:
            raise self.fail(node, path, f"{str(file)!r} is larger than {limit} bytes")
        return data


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _check_public_key(v: _Validator, node: Located, path: str, pem: bytes) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    if b"PRIVATE KEY" in pem:
        raise v.fail(
            node,
            path,
            "this is a private key; a policy names public keys only",
            hint="give the .pub file; never put a private key in a policy",
        )
    try:
        load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise v.fail(node, path, "not a PEM public key") from exc


def _authority(v: _Validator, node: Located, path: str, index: int) -> AuthoritySpec:
    fields = v.mapping(node, path, {"name", "key", "keyless"})
    if ("key" in fields) == ("keyless" in fields):
        raise v.fail(node, path, "give exactly one of 'key' or 'keyless'")
    name = v.string(fields["name"], f"{path}.name") if "name" in fields else ""
    if "key" in fields:
        kpath = f"{path}.key"
        key = v.mapping(fields["key"], kpath, {"path", "pem"})
        if ("path" in key) == ("pem" in key):
            raise v.fail(fields["key"], kpath, "give exactly one of 'path' or 'pem'")
        if "path" in key:
            pem = v.read_file(key["path"], f"{kpath}.path", _MAX_KEY_BYTES)
            where = key["path"]
        else:
            pem = v.string(key["pem"], f"{kpath}.pem").encode()
            where = key["pem"]
        _check_public_key(v, where, kpath, pem)
        return KeyAuthoritySpec(name=name or f"key-{index}", public_key_pem=pem, line=node.line)
    kpath = f"{path}.keyless"
    spec = v.mapping(fields["keyless"], kpath, {"issuer", "identity", "identityRegexp"}, {"issuer"})
    issuer = v.string(spec["issuer"], f"{kpath}.issuer")
    if ("identity" in spec) == ("identityRegexp" in spec):
        raise v.fail(fields["keyless"], kpath, "give exactly one of 'identity' or 'identityRegexp'")
    identity = v.string(spec["identity"], f"{kpath}.identity") if "identity" in spec else None
    regexp = (
        v.regex(spec["identityRegexp"], f"{kpath}.identityRegexp")
        if "identityRegexp" in spec
        else None
    )
    return KeylessAuthoritySpec(
        name=name or f"keyless-{index}",
        issuer=issuer,
        identity=identity,
        identity_regexp=regexp,
        line=node.line,
    )


def _signatures(v: _Validator, node: Located) -> SignatureRule:
    path = "spec.require.signatures"
    fields = v.mapping(node, path, {"authorities", "threshold", "trustedRoot"}, {"authorities"})
    authorities = tuple(
        _authority(v, item, f"{path}.authorities[{i}]", i)
        for i, item in enumerate(v.items(fields["authorities"], f"{path}.authorities"))
    )
    names = [a.name for a in authorities]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise v.fail(
            fields["authorities"], f"{path}.authorities", f"duplicate authority name {dupes[0]!r}"
        )
    threshold = (
        v.integer(fields["threshold"], f"{path}.threshold", 1) if "threshold" in fields else 1
    )
    if threshold > len(authorities):
        raise v.fail(
            fields["threshold"],
            f"{path}.threshold",
            f"threshold {threshold} is more than the {len(authorities)} authorities listed",
        )
    trusted_root = None
    if "trustedRoot" in fields:
        node_root = fields["trustedRoot"]
        name = v.string(node_root, f"{path}.trustedRoot")
        file = Path(name)
        if not file.is_absolute() and v.base_dir is not None:
            file = v.base_dir / file
        v.read_file(node_root, f"{path}.trustedRoot", 16 * 1024 * 1024)  # must exist now
        trusted_root = str(file)
    return SignatureRule(
        authorities=authorities, threshold=threshold, trusted_root=trusted_root, line=node.line
    )


_OPS: Final = ("equals", "in", "matches", "exists")


def _condition(v: _Validator, node: Located, path: str, base_dir: Path | None) -> Condition:
    if not isinstance(node.value, dict):
        raise v.fail(
            node,
            path,
            "a condition is a mapping (field + equals|in|matches|exists, or anyOf/allOf)",
        )
    keys = set(node.value)
    for combinator, cls in (("anyOf", AnyOfConditions), ("allOf", AllOfConditions)):
        if combinator in keys:
            fields = v.mapping(node, path, {combinator})
            items = v.items(fields[combinator], f"{path}.{combinator}")
            conds = tuple(
                _condition(v, item, f"{path}.{combinator}[{i}]", base_dir)
                for i, item in enumerate(items)
            )
            return cls(conds, line=node.line)
    fields = v.mapping(node, path, {"field", *_OPS}, {"field"})
    field_path = v.string(fields["field"], f"{path}.field")
    ops = [op for op in _OPS if op in fields]
    if len(ops) != 1:
        raise v.fail(node, path, "give exactly one of equals, in, matches, exists")
    op = ops[0]
    value_node = fields[op]
    value: Any
    if op == "in":
        if not isinstance(value_node.value, list) or not value_node.value:
            raise v.fail(value_node, f"{path}.in", "must be a non-empty list")
        value = value_node.plain()
    elif op == "matches":
        value = v.regex(value_node, f"{path}.matches")
    elif op == "exists":
        value = v.boolean(value_node, f"{path}.exists")
    else:
        value = value_node.plain()
    return FieldCondition(field=field_path, op=op, value=value, line=node.line)  # type: ignore[arg-type]


def _rego(v: _Validator, node: Located, path: str) -> RegoCondition:
    source = v.string(node, path)
    try:
        module = RegoModule(source, name=f"{v.source}:{node.line}")
    except RegoError as exc:
        # a block scalar's content starts on the line after the key
        line = node.line + exc.line if exc.line is not None else node.line
        raise v.fail(line, path, exc.reason) from exc
    return RegoCondition(module, line=node.line)


def _attestations(v: _Validator, node: Located) -> list[AttestationRule]:
    path = "spec.require.attestations"
    out: list[AttestationRule] = []
    for i, item in enumerate(v.items(node, path)):
        ipath = f"{path}[{i}]"
        fields = v.mapping(item, ipath, {"predicateType", "conditions", "rego"}, {"predicateType"})
        ptype = v.string(fields["predicateType"], f"{ipath}.predicateType")
        conds: list[Condition] = []
        if "conditions" in fields:
            conds.extend(
                _condition(v, c, f"{ipath}.conditions[{j}]", v.base_dir)
                for j, c in enumerate(v.items(fields["conditions"], f"{ipath}.conditions"))
            )
        if "rego" in fields:
            conds.append(_rego(v, fields["rego"], f"{ipath}.rego"))
        rule_id = f"attestations[{ptype}]"
        if any(r.id == rule_id for r in out):
            rule_id = f"attestations[{i}:{ptype}]"
        out.append(
            AttestationRule(
                predicate_type=ptype,
                condition=condition_list(conds) if conds else None,
                id=rule_id,
                line=item.line,
            )
        )
    return out


def _artifact(v: _Validator, node: Located) -> list[Rule]:
    path = "spec.require.artifact"
    fields = v.mapping(
        node, path, {"formats", "noPickle", "licenses", "maxSizeBytes", "requiredFields"}
    )
    rules: list[Rule] = []
    if "formats" in fields:
        rules.append(
            FormatRule(v.strings(fields["formats"], f"{path}.formats"), line=fields["formats"].line)
        )
    if "noPickle" in fields and v.boolean(fields["noPickle"], f"{path}.noPickle"):
        rules.append(NoPickleRule(line=fields["noPickle"].line))
    if "licenses" in fields:
        rules.append(
            LicenseRule(
                v.strings(fields["licenses"], f"{path}.licenses"), line=fields["licenses"].line
            )
        )
    if "maxSizeBytes" in fields:
        rules.append(
            MaxSizeRule(
                v.integer(fields["maxSizeBytes"], f"{path}.maxSizeBytes", 1),
                line=fields["maxSizeBytes"].line,
            )
        )
    if "requiredFields" in fields:
        rules.append(
            RequiredFieldsRule(
                v.strings(fields["requiredFields"], f"{path}.requiredFields"),
                line=fields["requiredFields"].line,
            )
        )
    if not rules:
        raise v.fail(node, path, "requires nothing (noPickle: false alone is not a requirement)")
    return rules


def _digest(plain: Any, keys: Sequence[AuthoritySpec], trusted_root: str | None) -> str:
    root_hash = None
    if trusted_root is not None:
        with open(trusted_root, "rb") as fh:
            root_hash = hashlib.sha256(fh.read()).hexdigest()
    material = {
        "document": plain,
        "trustedRoot": root_hash,
        "keys": {
            a.name: a.public_key_pem.decode("utf-8", "replace")
            for a in keys
            if isinstance(a, KeyAuthoritySpec)
        },
    }
    return "sha256:" + hashlib.sha256(canonical_json(material, sort_keys=True)).hexdigest()


def _policy(v: _Validator, doc: Located) -> Policy:
    top = v.mapping(
        doc,
        "",
        {"apiVersion", "kind", "metadata", "spec"},
        {"apiVersion", "kind", "metadata", "spec"},
    )
    api = top["apiVersion"]
    if api.value != API_VERSION:
        raise v.fail(
            api, "apiVersion", f"unsupported {api.value!r}; this modelreg reads {API_VERSION}"
        )
    if top["kind"].value != KIND:
        raise v.fail(top["kind"], "kind", f"unsupported {top['kind'].value!r}; expected {KIND}")
    meta = v.mapping(
        top["metadata"], "metadata", {"name", "description", "annotations", "labels"}, {"name"}
    )
    name = v.string(meta["name"], "metadata.name")
    if not _NAME.match(name):
        raise v.fail(
            meta["name"],
            "metadata.name",
            f"{name!r} is not a DNS-style name (lowercase letters, digits, '-', '.')",
        )
    description = (
        v.string(meta["description"], "metadata.description") if "description" in meta else ""
    )
    spec = v.mapping(top["spec"], "spec", {"mode", "match", "require"}, {"match", "require"})
    mode: Mode = "enforce"
    if "mode" in spec:
        if spec["mode"].value not in ("enforce", "warn"):
            raise v.fail(
                spec["mode"], "spec.mode", f"must be enforce or warn, not {spec['mode'].value!r}"
            )
        mode = spec["mode"].value
    match_fields = v.mapping(
        spec["match"], "spec.match", {"references", "artifactTypes"}, {"references"}
    )
    patterns = v.strings(match_fields["references"], "spec.match.references")
    globs_list: list[Glob] = []
    for p, node in zip(patterns, match_fields["references"].value, strict=True):
        try:
            globs_list.append(Glob(p))
        except InvalidReferenceError as exc:
            raise v.fail(node, "spec.match.references", exc.message, exc.hint) from exc
    globs = tuple(globs_list)
    for g, node in zip(globs, match_fields["references"].value, strict=True):
        if not g.well_formed():
            raise v.fail(
                node,
                "spec.match.references",
                f"{g.pattern!r} must be REGISTRY/REPOSITORY (e.g. registry.example.com/models/**), "
                "store:REPOSITORY for the embedded local store (e.g. store:team/**), "
                "or oci:PATH for a layout directory",
            )
    types = (
        v.strings(match_fields["artifactTypes"], "spec.match.artifactTypes")
        if "artifactTypes" in match_fields
        else ()
    )
    req = v.mapping(spec["require"], "spec.require", {"signatures", "attestations", "artifact"})
    if not req:
        raise v.fail(
            spec["require"],
            "spec.require",
            "requires nothing: give signatures, attestations or artifact",
        )
    rules: list[Rule] = []
    signatures = _signatures(v, req["signatures"]) if "signatures" in req else None
    if signatures is not None:
        rules.append(signatures)
    attestations: list[AttestationRule] = []
    if "attestations" in req:
        if signatures is None:
            raise v.fail(
                req["attestations"],
                "spec.require.attestations",
                "attestations are trusted only when signed: add signatures.authorities "
                "naming who may sign them",
            )
        attestations = _attestations(v, req["attestations"])
        rules.extend(attestations)
    if "artifact" in req:
        rules.extend(_artifact(v, req["artifact"]))
    plain = doc.plain()
    return Policy(
        name=name,
        mode=mode,
        match=Match(references=globs, artifact_types=types),
        require=AllOf(tuple(rules), id="require", line=spec["require"].line),
        digest=_digest(
            plain,
            signatures.authorities if signatures else (),
            signatures.trusted_root if signatures else None,
        ),
        source=v.source,
        line=doc.line,
        description=description,
        signatures=signatures,
        attestation_types=tuple(a.predicate_type for a in attestations),
        document=plain,
    )


def parse_policies(
    text: str | bytes, source: str = "<string>", base_dir: str | Path | None = None
) -> list[Policy]:
    """Every ``ModelPolicy`` document in ``text`` (YAML, ``---``-separated)."""
    v = _Validator(source, Path(base_dir) if base_dir is not None else None)
    policies = [_policy(v, doc) for doc in load_documents(text, source)]
    if not policies:
        raise PolicyLoadError(source, None, "no policy document found")
    return policies


def load_policy_file(path: str | Path) -> list[Policy]:
    file = Path(path)
    try:
        with open(file, "rb") as fh:
            data = fh.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyLoadError(str(file), None, f"cannot read: {exc.strerror}") from exc
    return parse_policies(data, str(file), file.parent)


@dataclass(frozen=True)
class PolicySet:
    """Policies loaded together; names are unique; ``digest`` changes with any of them."""

    policies: tuple[Policy, ...]

    def __post_init__(self) -> None:
        seen: dict[str, Policy] = {}
        for p in self.policies:
            if p.name in seen:
                other = seen[p.name]
                raise PolicyLoadError(
                    p.source,
                    p.line,
                    f"policy name {p.name!r} is already used by {other.source}:{other.line}",
                )
            seen[p.name] = p

    @property
    def digest(self) -> str:
        joined = "\n".join(sorted(p.digest for p in self.policies))
        return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()

    def matching(self, name: str) -> tuple[Policy, ...]:
        return tuple(p for p in self.policies if p.applies_to(name))

    def __iter__(self) -> Any:
        return iter(self.policies)

    def __len__(self) -> int:
        return len(self.policies)


def load_policies(paths: Iterable[str | Path]) -> PolicySet:
    """Load policy files; a directory contributes its ``*.yaml``/``*.yml`` files, sorted."""
    policies: list[Policy] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix in _POLICY_SUFFIXES and f.is_file())
            if not files:
                raise PolicyLoadError(str(p), None, "directory holds no .yaml policy file")
            for f in files:
                policies.extend(load_policy_file(f))
        else:
            policies.extend(load_policy_file(p))
    if not policies:
        raise PolicyLoadError("<none>", None, "no policy given")
    return PolicySet(tuple(policies))
