"""The dependency rule of ``modelreg.attest`` and the public names around it.

``attest`` holds the wire formats and imports neither ``sign`` nor ``verify``;
``sign`` and ``verify`` import ``attest`` and never each other's private
modules (nor does anything else). Read from the source, so a lazy import inside
a function counts too.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import modelreg

PACKAGE_ROOT = Path(modelreg.__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent
ATTEST_MODULES = ("bundle", "dsse", "intoto", "keys", "model_transparency", "storage")


def _imports(path: Path) -> set[str]:
    """Every module name ``path`` imports, at any depth of the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO_ROOT / folder).rglob("*.py"))


def test_attest_imports_neither_sign_nor_verify():
    for path in (PACKAGE_ROOT / "attest").glob("*.py"):
        bad = {
            n
            for n in _imports(path)
            if _within(n, "modelreg.sign") or _within(n, "modelreg.verify")
        }
        assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize(("importer", "imported"), [("sign", "verify"), ("verify", "sign")])
def test_sign_and_verify_do_not_import_each_other(importer, imported):
    for path in (PACKAGE_ROOT / importer).glob("*.py"):
        bad = {n for n in _imports(path) if _within(n, f"modelreg.{imported}")}
        assert not bad, f"{importer}/{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("package", ["sign", "verify"])
def test_private_modules_stay_private(package):
    """Only the package itself imports ``modelreg.<package>._x``."""
    own = PACKAGE_ROOT / package
    for path in _sources("modelreg", "cli", "tests", "bench", "testdata"):
        if path.parent == own:
            continue
        bad = {n for n in _imports(path) if n.startswith(f"modelreg.{package}._")}
        assert not bad, f"{path.relative_to(REPO_ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize(
    "module",
    ["modelreg.sign", "modelreg.verify", *(f"modelreg.attest.{m}" for m in ATTEST_MODULES)],
)
def test_all_is_complete_and_importable(module):
    mod = importlib.import_module(module)
    exported = mod.__all__
    assert len(set(exported)) == len(exported)
    missing = [name for name in exported if name not in vars(mod)]
    assert not missing, f"{module}.__all__ names what it does not define: {missing}"


def test_sign_reexports_the_formats_from_attest():
    """The format names ``modelreg.sign`` has always exported are attest's own objects."""
    import modelreg.sign as sign

    for name in ATTEST_MODULES:
        mod = importlib.import_module(f"modelreg.attest.{name}")
        for exported in set(sign.__all__) & set(mod.__all__):
            assert vars(sign)[exported] is vars(mod)[exported], f"{exported} from {name}"
