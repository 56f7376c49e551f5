"""Rego conditions, evaluated in-process with regopy (rego-cpp): no OPA server, no network.

A module must declare a package and a ``deny`` set of messages (the conftest/Gatekeeper
convention)::

    package modelreg.provenance
    import rego.v1
    deny contains msg if {
        not startswith(input.predicate.runDetails.builder.id, "https://github.com/")
        msg := "not built on GitHub"
    }

The condition holds when ``deny`` is empty. A module is compiled when the policy loads
(syntax errors are reported with the policy line), and the evaluation is pure: the same
input gives the same answer.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["RegoError", "RegoModule"]

_PACKAGE: Final = re.compile(
    r"^\s*package\s+([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)", re.MULTILINE
)
_FORBIDDEN: Final = ("http.send", "net.lookup_ip_addr", "opa.runtime")
_OFFSET: Final = re.compile(r"\(error [0-9]+:[^|]*\|([0-9]+)\|")
_MESSAGE: Final = re.compile(r"\(errormsg [0-9]+:([^)]*)\)")


class RegoError(Exception):
    """A Rego module that does not compile or evaluate; ``line`` is within the module."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


def _describe(source: str, exc: Exception) -> RegoError:
    text = str(exc)
    offset = _OFFSET.search(text)
    message = _MESSAGE.search(text)
    line = source.count("\n", 0, int(offset.group(1))) + 1 if offset else None
    reason = message.group(1).strip() if message else text.strip().splitlines()[0][:200]
    return RegoError(f"Rego: {reason}", line)


class RegoModule:
    """A compiled Rego module and the ``deny`` query it answers (thread-safe)."""

    def __init__(self, source: str, name: str = "policy.rego") -> None:
        from modelreg._extras import require

        # a missing extra is not a fault of the policy: MissingExtraError (exit 15), not RegoError
        regopy = require("regopy", "rego", "a Rego condition in a policy")
        match = _PACKAGE.search(source)
        if match is None:
            raise RegoError("Rego module has no 'package' declaration", 1)
        for word in _FORBIDDEN:
            if word in source:
                idx = source.index(word)
                raise RegoError(
                    f"Rego builtin {word} is not allowed: policy evaluation is pure",
                    source.count("\n", 0, idx) + 1,
                )
        self.source = source
        self.package = match.group(1)
        self.query = f"data.{self.package}.deny"
        self._lock = threading.Lock()
        self._interp = regopy.Interpreter()
        self._interp.log_level = regopy.LogLevel.NONE  # its errors would go to stdout
        # a builtin error (e.g. count() of a number) must fail the condition, not skip a rule
        self._interp.strict_built_in_errors = True
        try:
            self._interp.add_module(name, source)
        except Exception as exc:  # regopy raises RegoError from its C core
            raise _describe(source, exc) from exc
        # Probe: the module must define `deny` (an empty input gives an empty set, not undefined)
        try:
            self.deny({})
        except RegoError as exc:
            if "undefined" in exc.reason:
                raise RegoError(
                    f"Rego module must define a 'deny' set ({self.query} is undefined)", 1
                ) from exc
            # Other evaluation errors on an empty input are tolerated (rules read input fields)

    def deny(self, document: Mapping[str, Any]) -> list[str]:
        """Messages of the ``deny`` set for ``document`` (empty: the condition holds)."""
        payload = json.dumps(document, sort_keys=True, default=str)
        with self._lock:
            try:
                self._interp.set_input_term(payload)
                output = self._interp.query(self.query)
            except Exception as exc:
                raise _describe(self.source, exc) from exc
            ok = output.ok()
            text = str(output)
        if not ok:
            raise RegoError(f"Rego evaluation failed: {text.strip()[:300]}")
        if text.strip() == "undefined":
            raise RegoError(f"Rego query {self.query} is undefined")
        try:
            doc = json.loads(text)
            values = doc["expressions"][0]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise RegoError(f"unexpected Rego output {text[:200]!r}") from exc
        if isinstance(values, list):
            return [v if isinstance(v, str) else json.dumps(v) for v in values]
        if isinstance(values, dict):  # deny as an object: keys are messages
            return [str(k) for k in values]
        if values in (False, None):
            return []
        return [json.dumps(values)]
