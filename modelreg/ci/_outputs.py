"""Writing results where each CI looks for them.

* GitHub Actions: ``name=value`` lines appended to ``$GITHUB_OUTPUT`` (multi-line
  values in the ``name<<DELIMITER`` form), Markdown appended to
  ``$GITHUB_STEP_SUMMARY``;
* GitLab CI: a dotenv report (``KEY=value`` lines, one line each, for
  ``artifacts: reports: dotenv``), ``modelreg.env`` by default inside GitLab CI;
* everywhere: a JSON summary file when asked for.

Writing never fails the step: a file that cannot be written is reported as a
warning (the step's own outcome is what matters).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from modelreg.settings import ci_environ

__all__ = [
    "DEFAULT_DOTENV",
    "CIOutputs",
    "dotenv_lines",
    "github_output_lines",
]

DEFAULT_DOTENV: Final = "modelreg.env"
_DOTENV_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OUTPUT_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def github_output_lines(outputs: Mapping[str, str]) -> str:
    """``$GITHUB_OUTPUT`` content: ``name=value``, or a heredoc for multi-line values."""
    chunks = []
    for name, value in outputs.items():
        if not _OUTPUT_NAME.match(name):
            raise ValueError(f"bad output name {name!r}")
        if "\n" in value or "\r" in value:
            delimiter = f"MODELREG_EOF_{secrets.token_hex(8)}"
            chunks.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
        else:
            chunks.append(f"{name}={value}\n")
    return "".join(chunks)


def dotenv_lines(variables: Mapping[str, str]) -> str:
    """A GitLab dotenv report: one ``KEY=value`` a line, values on one line."""
    out = []
    for name, value in variables.items():
        if not _DOTENV_NAME.match(name):
            raise ValueError(f"bad dotenv variable name {name!r}")
        flat = " ".join(value.split("\n")).replace("\r", " ")
        out.append(f"{name}={flat}\n")
    return "".join(out)


@dataclass
class CIOutputs:
    """Files to write results to; :meth:`from_env` fills them from the CI's variables."""

    github_output: Path | None = None
    github_step_summary: Path | None = None
    dotenv: Path | None = None
    summary_json: Path | None = None
    dotenv_prefix: str = "MODELREG_"
    written: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        summary_json: str | os.PathLike[str] | None = None,
        dotenv: str | os.PathLike[str] | None = None,
    ) -> CIOutputs:
        """GitHub's files from ``GITHUB_OUTPUT`` / ``GITHUB_STEP_SUMMARY``; the dotenv
        file from ``dotenv``, ``MODELREG_DOTENV``, or ``modelreg.env`` in GitLab CI."""
        env = ci_environ(environ)

        def path(value: str | os.PathLike[str] | None) -> Path | None:
            return Path(value) if value else None

        dotenv_path = path(dotenv) or path(env.get("MODELREG_DOTENV"))
        if dotenv_path is None and env.get("GITLAB_CI") == "true":
            dotenv_path = Path(DEFAULT_DOTENV)
        summary = path(summary_json) or path(env.get("MODELREG_SUMMARY_JSON"))
        return cls(
            github_output=path(env.get("GITHUB_OUTPUT")),
            github_step_summary=path(env.get("GITHUB_STEP_SUMMARY")),
            dotenv=dotenv_path,
            summary_json=summary,
        )

    def _write(self, path: Path, text: str, *, append: bool, what: str) -> None:
        try:
            if path.parent and not path.parent.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a" if append else "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            self.warnings.append(f"could not write the {what} {str(path)!r}: {exc.strerror}")
        else:
            self.written.append(str(path))

    def write(
        self,
        outputs: Mapping[str, str],
        summary: Mapping[str, Any],
        markdown: str,
        *,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        """Write every configured file; problems become :attr:`warnings` (and ``warn``)."""
        before = len(self.warnings)
        if self.github_output is not None:
            self._write(
                self.github_output,
                github_output_lines(outputs),
                append=True,
                what="GitHub output file",
            )
        if self.github_step_summary is not None:
            self._write(self.github_step_summary, markdown, append=True, what="GitHub step summary")
        if self.dotenv is not None:
            variables = {
                self.dotenv_prefix + name.upper().replace("-", "_"): value
                for name, value in outputs.items()
            }
            self._write(self.dotenv, dotenv_lines(variables), append=False, what="dotenv report")
        if self.summary_json is not None:
            self._write(
                self.summary_json,
                json.dumps(summary, indent=2, sort_keys=True) + "\n",
                append=False,
                what="JSON summary",
            )
        if warn is not None:
            for message in self.warnings[before:]:
                warn(message)
