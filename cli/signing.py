"""The keyless (Sigstore) signing flags, one parameter of every command that signs.

``sign``, ``attest`` and ``ci publish`` declare ``keyless: Keyless = KEYLESS_FLAGS``
under ``@keyless_flags()``; their help lists ``--keyless``, ``--identity-token``,
``--identity-token-file``, ``--staging`` and ``--trust-config`` there, declared once in
:mod:`modelreg_cli.options`.
"""

# No ``from __future__ import annotations``: typer reads these annotations at runtime.
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from modelreg_cli.context import flag_group
from modelreg_cli.options import KeylessOpt, StagingOpt, TokenFileOpt, TokenOpt, TrustConfigOpt


@dataclasses.dataclass(frozen=True)
class Keyless:
    """The keyless signing flags of a command, as given on the command line."""

    keyless: bool = False
    identity_token: str | None = None
    identity_token_file: Path | None = None
    staging: bool = False
    trust_config: Path | None = None


KEYLESS_FLAGS = Keyless()
"""The default of a command's ``keyless`` parameter, which :func:`keyless_flags` turns
into the keyless signing flags."""

# In the order a command's help lists them: (parameter, option, default).
_FLAGS: tuple[tuple[str, Any, Any], ...] = (
    ("keyless", KeylessOpt, False),
    ("identity_token", TokenOpt, None),
    ("identity_token_file", TokenFileOpt, None),
    ("staging", StagingOpt, False),
    ("trust_config", TrustConfigOpt, None),
)

_Command = TypeVar("_Command", bound=Callable[..., Any])


def keyless_flags() -> Callable[[_Command], _Command]:
    """Give a command the keyless signing flags through its parameter ``keyless``."""
    return flag_group("keyless", _FLAGS, Keyless)
