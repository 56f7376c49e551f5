"""Declarative conditions on an attestation (``field`` + ``equals|in|matches|exists``),
composable with ``allOf`` / ``anyOf``, and Rego modules for the expressive cases.

Each condition's :meth:`check` is pure and returns ``(holds, why)``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, Protocol

from modelreg.policy._rego import RegoError, RegoModule

__all__ = [
    "MISSING",
    "AllOfConditions",
    "AnyOfConditions",
    "Condition",
    "ConditionError",
    "FieldCondition",
    "RegoCondition",
    "lookup",
]

MISSING: Final = object()
"""What :func:`lookup` returns for an absent path."""


class ConditionError(Exception):
    """A condition that could not be evaluated (e.g. a Rego runtime error)."""


def lookup(document: Any, path: str) -> Any:
    """``a.b.0.c`` into nested mappings/lists; returns the ``MISSING`` sentinel if absent."""
    current = document
    for part in path.split("."):
        if isinstance(current, Mapping):
            if part not in current:
                return MISSING
            current = current[part]
        elif isinstance(current, list) and part.isdigit():
            index = int(part)
            if index >= len(current):
                return MISSING
            current = current[index]
        else:
            return MISSING
    return current


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


class Condition(Protocol):
    @property
    def line(self) -> int | None: ...

    def check(self, document: Mapping[str, Any]) -> tuple[bool, str]: ...


@dataclass(frozen=True)
class FieldCondition:
    field: str
    op: Literal["equals", "in", "matches", "exists"]
    value: Any
    line: int | None = None
    _regex: re.Pattern[str] | None = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.op == "matches":
            object.__setattr__(self, "_regex", re.compile(str(self.value)))

    def check(self, document: Mapping[str, Any]) -> tuple[bool, str]:
        actual = lookup(document, self.field)
        present = actual is not MISSING
        if self.op == "exists":
            want = bool(self.value)
            ok = present == want
            return ok, f"{self.field} {'exists' if present else 'is absent'}"
        if not present:
            return False, f"{self.field} is absent"
        if self.op == "equals":
            ok = actual == self.value
            return ok, f"{self.field} = {_show(actual)}" + (
                "" if ok else f", want {_show(self.value)}"
            )
        if self.op == "in":
            ok = actual in self.value
            return ok, f"{self.field} = {_show(actual)}" + (
                "" if ok else f", want one of {_show(self.value)}"
            )
        assert self._regex is not None
        ok = isinstance(actual, str) and self._regex.fullmatch(actual) is not None
        return ok, f"{self.field} = {_show(actual)}" + (
            "" if ok else f", want a match of {self.value!r}"
        )


@dataclass(frozen=True)
class _Combined:
    """Conditions combined: checked in order until one settles the outcome (a failure for
    allOf, a success for anyOf), the reasons of the others joined otherwise."""

    conditions: tuple[Condition, ...]
    line: int | None = None
    _NAME: ClassVar[str]
    _SETTLES: ClassVar[bool]

    def __post_init__(self) -> None:
        if not self.conditions:
            raise ValueError(f"{self._NAME} needs at least one condition")

    def check(self, document: Mapping[str, Any]) -> tuple[bool, str]:
        whys = []
        for cond in self.conditions:
            ok, why = cond.check(document)
            if bool(ok) is self._SETTLES:
                return self._SETTLES, why
            whys.append(why)
        return self._unsettled(whys)

    def _unsettled(self, whys: list[str]) -> tuple[bool, str]:
        raise NotImplementedError


@dataclass(frozen=True)
class AllOfConditions(_Combined):
    _NAME: ClassVar[str] = "allOf"
    _SETTLES: ClassVar[bool] = False

    def _unsettled(self, whys: list[str]) -> tuple[bool, str]:
        return True, "; ".join(whys)


@dataclass(frozen=True)
class AnyOfConditions(_Combined):
    _NAME: ClassVar[str] = "anyOf"
    _SETTLES: ClassVar[bool] = True

    def _unsettled(self, whys: list[str]) -> tuple[bool, str]:
        return False, "none of: " + " | ".join(whys)


@dataclass(frozen=True)
class RegoCondition:
    module: RegoModule
    line: int | None = None

    def check(self, document: Mapping[str, Any]) -> tuple[bool, str]:
        try:
            denied = self.module.deny(document)
        except RegoError as exc:
            raise ConditionError(exc.reason) from exc
        if denied:
            return False, "rego: " + "; ".join(sorted(denied))
        return True, f"rego {self.module.package}: no deny"


def condition_list(items: Sequence[Condition]) -> Condition:
    return items[0] if len(items) == 1 else AllOfConditions(tuple(items))
