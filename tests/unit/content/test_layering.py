"""``modelreg.content`` sits below ``modelreg.lazy`` and must not import it.

Read from the sources, every ``import`` statement counts, also those inside
functions (a deferred import is still a dependency, only a hidden one)."""

from __future__ import annotations

import ast
from pathlib import Path

import modelreg.content

CONTENT = Path(modelreg.content.__file__).parent
FORBIDDEN = "modelreg.lazy"


def _imported(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """``(line, module.name)`` of every import in the file, relative ones resolved."""
    package = "modelreg." + ".".join(path.relative_to(CONTENT.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    text = path.read_text() if source is None else source
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return out


def test_content_imports_nothing_from_lazy() -> None:
    sources = sorted(CONTENT.rglob("*.py"))
    assert CONTENT / "gc.py" in sources
    offending = [
        f"{path.relative_to(CONTENT.parent)}:{line} imports {name}"
        for path in sources
        for line, name in _imported(path)
        if name == FORBIDDEN or name.startswith(FORBIDDEN + ".")
    ]
    assert offending == []


def test_the_check_sees_function_local_and_relative_imports() -> None:
    probe = CONTENT / "registry" / "probe.py"  # never written: only its place matters
    source = "def f():\n    from ...lazy import handle\n    import modelreg.lazy._cache\n"
    names = [name for _line, name in _imported(probe, source)]
    assert names == ["modelreg.lazy.handle", "modelreg.lazy._cache"]
