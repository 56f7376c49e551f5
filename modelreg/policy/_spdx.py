"""A small SPDX license-expression checker for allow-lists (no network, no data files).

``MIT``, ``Apache-2.0 OR MIT``, ``(MIT AND BSD-3-Clause)``, ``GPL-2.0-only WITH
Classpath-exception-2.0``. Identifiers compare case-insensitively (as SPDX says).
An expression is allowed when it can be satisfied with allowed licenses: ``OR`` needs
one side allowed, ``AND`` both; ``X WITH E`` is allowed only if ``X WITH E`` itself is
listed. Anything that does not parse is not allowed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection

__all__ = ["expression_allowed"]

_TOKEN = re.compile(r"\s*(\(|\)|[A-Za-z0-9.+:-]+)")


def _tokens(text: str) -> list[str] | None:
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            return None
        out.append(m.group(1))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


class _Parser:
    def __init__(self, tokens: list[str], allowed: set[str]) -> None:
        self.tokens = tokens
        self.i = 0
        self.allowed = allowed

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> str:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def _chain(
        self, op: str, operand: Callable[[], bool], combine: Callable[[list[bool]], bool]
    ) -> bool:
        """``operand (op operand)*``: every operand is parsed (one that does not parse
        fails the whole expression, even past a side that already decides) before
        ``combine`` decides."""
        values = [operand()]
        while (self.peek() or "").upper() == op:
            self.take()
            values.append(operand())
        return combine(values)

    def expr(self) -> bool:  # OR binds loosest: one side allowed is enough
        return self._chain("OR", self.and_expr, any)

    def and_expr(self) -> bool:  # AND needs every side allowed
        return self._chain("AND", self.atom, all)

    def atom(self) -> bool:
        tok = self.peek()
        if tok is None:
            raise ValueError("unexpected end")
        if tok == "(":
            self.take()
            value = self.expr()
            if self.peek() != ")":
                raise ValueError("missing )")
            self.take()
            return value
        if tok == ")" or tok.upper() in ("AND", "OR", "WITH"):
            raise ValueError(f"unexpected {tok}")
        ident = self.take()
        if (self.peek() or "").upper() == "WITH":
            self.take()
            exc = self.peek()
            if exc is None or exc in ("(", ")"):
                raise ValueError("WITH needs an exception id")
            self.take()
            return f"{ident} WITH {exc}".lower() in self.allowed
        return ident.lower() in self.allowed


def expression_allowed(expression: str, allowed: Collection[str]) -> bool:
    tokens = _tokens(expression)
    if not tokens:
        return False
    parser = _Parser(tokens, {" ".join(a.split()).lower() for a in allowed})
    try:
        value = parser.expr()
    except (ValueError, IndexError):
        return False
    return value and parser.i == len(tokens)
