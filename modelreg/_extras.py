"""Optional extras: one rule for a feature whose package is not installed.

modelreg's base install (``pip install modelreg``) pushes, pulls, signs and
verifies. Some features need packages the base install leaves out, grouped as
extras in ``pyproject.toml``: ``lazy`` (NumPy, ml_dtypes), ``mount`` (pyfuse3,
trio), ``wasm`` (wasmtime), ``rego`` (regopy), ``webhook`` (httptools),
``torch``. Each feature imports its package through :func:`require`, at the
moment it is used, so that:

* a missing package is :class:`~modelreg.errors.MissingExtraError` (exit 15)
  everywhere, never a traceback, a policy error or a registry error;
* the message names the feature and the package, the hint the one command to
  run: ``pip install 'modelreg[EXTRA]'``;
* nothing else pays for the import (``modelreg --help`` loads none of them).

A package that is installed but fails to import (a compiled module missing its
system library, such as pyfuse3 without libfuse3) is reported the same way, with
the import error quoted, since the cure is the same reinstall.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from modelreg.errors import MissingExtraError

__all__ = ["require"]


def require(module: str, extra: str, feature: str, *, system: str | None = None) -> ModuleType:
    """Import ``module`` for ``feature``, or raise :class:`MissingExtraError` naming
    ``pip install 'modelreg[extra]'`` (``system``: what the OS must provide first)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == module.split(".")[0]:
            why = f"the {module!r} package, which is not installed"
        else:
            why = f"the {module!r} package, which cannot be imported ({exc})"
        install = f"pip install 'modelreg[{extra}]'"
        raise MissingExtraError(
            f"{feature} needs {why}",
            hint=f"{system}, then {install}" if system else install,
            extra=extra,
            module=module,
        ) from exc
