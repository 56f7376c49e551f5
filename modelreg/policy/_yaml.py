"""YAML to located values: every mapping, list and scalar keeps the line it came from.

PyYAML's composer gives nodes with marks; we turn them into :class:`Located` values so
that validation errors can say ``file:line``. Duplicate keys are refused (a second key
silently overriding the first would hide what a reviewer reads), aliases are expanded
under a node budget (no billion laughs), and only the safe YAML tags are constructed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import yaml

from modelreg.errors import PolicyError

__all__ = ["MAX_NODES", "MAX_POLICY_BYTES", "Located", "PolicyLoadError", "load_documents"]

MAX_POLICY_BYTES: Final = 1024 * 1024
MAX_NODES: Final = 100_000


class PolicyLoadError(PolicyError):
    """A policy document that cannot be loaded: says which file, which line and why."""

    def __init__(self, source: str, line: int | None, reason: str, *, hint: str | None = None):
        where = f"{source}:{line}" if line else source
        super().__init__(
            f"invalid policy {where}: {reason}",
            hint=hint or "fix the policy file; see policies/README.md for the format",
        )
        self.source = source
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Located:
    """A YAML value and the 1-based line it starts on.

    ``value`` is ``dict[str, Located]``, ``list[Located]`` or a plain scalar
    (str, int, float, bool, None).
    """

    value: Any
    line: int
    key_lines: Mapping[str, int] | None = None
    """For mappings: the line of each key (where an unknown key is reported)."""

    def plain(self) -> Any:
        """The value with locations stripped (for hashing and for Rego/JSON input)."""
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value


class _Converter:
    def __init__(self, source: str) -> None:
        self.source = source
        self.count = 0
        self._scalars = yaml.constructor.SafeConstructor()

    def convert(self, node: yaml.Node) -> Located:
        self.count += 1
        if self.count > MAX_NODES:
            raise PolicyLoadError(
                self.source,
                node.start_mark.line + 1,
                f"more than {MAX_NODES} YAML nodes (aliases expanded)",
            )
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Located] = {}
            key_lines: dict[str, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise PolicyLoadError(
                        self.source,
                        key_node.start_mark.line + 1,
                        "YAML merge keys ('<<') are not allowed in policies",
                    )
                key = self.convert(key_node).value
                if not isinstance(key, str):
                    raise PolicyLoadError(
                        self.source,
                        key_node.start_mark.line + 1,
                        f"mapping keys must be strings, not {type(key).__name__} {key!r}",
                    )
                if key in out:
                    raise PolicyLoadError(
                        self.source,
                        key_node.start_mark.line + 1,
                        f"duplicate key {key!r} (first on line {out[key].line})",
                    )
                out[key] = self.convert(value_node)
                key_lines[key] = key_node.start_mark.line + 1
            return Located(out, line, key_lines)
        if isinstance(node, yaml.SequenceNode):
            return Located([self.convert(item) for item in node.value], line)
        assert isinstance(node, yaml.ScalarNode)
        try:
            value = self._scalars.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise PolicyLoadError(self.source, line, f"bad scalar: {exc}") from exc
        if not isinstance(value, str | int | float | bool | type(None)):
            raise PolicyLoadError(
                self.source, line, f"unsupported YAML value of type {type(value).__name__}"
            )
        return Located(value, line)


def load_documents(text: str | bytes, source: str) -> Iterator[Located]:
    """Parse every YAML document of ``text`` into located values (empty ones skipped)."""
    if len(text) > MAX_POLICY_BYTES:
        raise PolicyLoadError(source, None, f"file larger than {MAX_POLICY_BYTES} bytes")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyLoadError(source, None, "not UTF-8 text") from exc
    converter = _Converter(source)
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = " ".join(p for p in (exc.context, exc.problem) if p) or "YAML syntax error"
        raise PolicyLoadError(source, line, f"YAML syntax error: {reason}") from exc
    except yaml.YAMLError as exc:
        raise PolicyLoadError(source, None, f"YAML error: {exc}") from exc
    for node in nodes:
        if node is None:
            continue
        yield converter.convert(node)
