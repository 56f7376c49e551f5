"""Reading the code blocks and command spans of the README and docs/, and checking
``modelreg`` command lines against the CLI without running them.

Conventions (also in ``docs/README.md``, "Code blocks are tested"): a fenced block
tagged ``sh``, ``console`` or ``python`` runs, unless the line right before its
fence is a marker comment, invisible on GitHub:

* ``<!-- doc-test: no-run WHY -->``: illustrative (another registry, a cluster, a
  FUSE device). Not run, but every ``modelreg`` command in it must parse (its
  subcommand, every flag, the number of arguments); a Python block must compile
  and its imports must resolve.
* ``<!-- doc-test: synopsis -->``: a usage synopsis (``[--flag X]``, ``A|B``): every
  subcommand and every flag it names must exist.

Blocks in other languages (yaml, toml, json, untagged) are data and are not run.
Outside blocks, a code span that starts with ``modelreg`` or with a subcommand and a
flag (``pull --link``) must name a subcommand and flags that exist.
"""

from __future__ import annotations

import importlib
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

RUN_LANGS = ("sh", "console", "python")
MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*(no-run|synopsis)\b(.*?)-->\s*$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
SHELL_OPERATORS = ("&&", "||", "|", ";", "&", ">", ">>", "<", "<<", "(", ")")


@dataclass
class Block:
    """One fenced block: ``line`` is the fence's line in ``path`` (1-based)."""

    path: Path
    line: int
    lang: str
    marker: str | None
    body: list[str] = field(default_factory=list)

    @property
    def runs(self) -> bool:
        return self.lang in RUN_LANGS and self.marker is None

    def where(self, offset: int = 0) -> str:
        """``file:line`` of the block's ``offset``-th body line (0: the first)."""
        return f"{self.path}:{self.line + 1 + offset}"


@dataclass
class Span:
    path: Path
    line: int
    text: str


def read_markdown(path: Path) -> tuple[list[Block], list[Span]]:
    """The fenced blocks of ``path`` and the code spans outside them."""
    blocks: list[Block] = []
    spans: list[Span] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    current: Block | None = None
    fence = ""
    for number, text in enumerate(lines, start=1):
        if current is not None:
            if text.strip().startswith(fence) and not text.strip().strip(fence[0]):
                blocks.append(current)
                current = None
            else:
                current.body.append(text)
            continue
        opened = FENCE.match(text)
        if opened:
            fence = opened.group(2)
            previous = MARKER.match(lines[number - 2]) if number > 1 else None
            current = Block(path, number, opened.group(3), previous.group(1) if previous else None)
            continue
        for found in SPAN.finditer(text):
            spans.append(Span(path, number, found.group(1).replace("\\|", "|")))
    if current is not None:
        raise AssertionError(f"{path}:{current.line}: code block never closed")
    return blocks, spans


@dataclass
class Command:
    """One logical shell line (continuations joined); ``offset`` into the block body."""

    offset: int
    text: str
    expected: list[str] = field(default_factory=list)


def shell_commands(block: Block) -> list[Command]:
    """``sh`` blocks: every line not blank or a comment, continuations joined; a
    block with a here-document is one command (bash reads it whole)."""
    if any("<<" in line for line in block.body):
        return [Command(0, "\n".join(block.body))]
    commands: list[Command] = []
    for offset, raw in enumerate(block.body):
        if commands and commands[-1].text.endswith("\\"):
            commands[-1].text = commands[-1].text[:-1] + " " + raw.strip()
        elif raw.strip() and not raw.strip().startswith("#"):
            commands.append(Command(offset, raw.strip()))
    return commands


def console_commands(block: Block) -> list[Command]:
    """``console`` blocks: ``$ `` lines and, after each, the lines it must print."""
    commands: list[Command] = []
    for offset, raw in enumerate(block.body):
        if commands and commands[-1].text.endswith("\\"):
            commands[-1].text = commands[-1].text[:-1] + " " + raw.strip()
        elif raw.startswith("$ "):
            commands.append(Command(offset, raw[2:].strip()))
        elif raw.strip():
            if not commands:
                raise AssertionError(f"{block.where(offset)}: output before any command")
            commands[-1].expected.append(raw.strip())
    return commands


def commands_of(block: Block) -> list[Command]:
    if block.lang == "console":
        return console_commands(block)
    return shell_commands(block)


def tokens(text: str) -> list[str]:
    """Shell words and operators (``&&``, ``|``, ``>`` ... as their own tokens)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def segments(words: list[str]) -> list[list[str]]:
    """Split a command line's words at shell operators."""
    parts: list[list[str]] = [[]]
    for word in words:
        if word in SHELL_OPERATORS:
            parts.append([])
        else:
            parts[-1].append(word)
    return [part for part in parts if part]


def modelreg_args(words: list[str]) -> list[str] | None:
    """The arguments after ``modelreg`` (any path to it; ``VAR=x`` prefixes skipped)."""
    while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
        words = words[1:]
    if words and words[0].rsplit("/", 1)[-1] == "modelreg":
        return words[1:]
    return None


def cli() -> Any:
    """modelreg's click command tree."""
    return typer.main.get_command(application().app)


def application() -> Any:
    """``modelreg_cli.application`` (the CLI's package is ``cli/``, mapped at install)."""
    return importlib.import_module("modelreg_cli.application")


def _option_names(command: Any) -> dict[str, Any]:
    names: dict[str, Any] = {"-h": None, "--help": None}
    for param in command.params:
        if param.param_type_name == "option":
            for name in (*param.opts, *param.secondary_opts):
                names[name] = param
    return names


def all_flags(root: Any) -> set[str]:
    """Every flag of every command."""
    found: set[str] = set()
    stack = [root]
    while stack:
        command = stack.pop()
        found.update(_option_names(command))
        stack.extend(getattr(command, "commands", {}).values())
    return found


def _walk(root: Any, args: list[str]) -> tuple[Any, list[str], list[str], str | None]:
    """Follow ``args`` down the command groups: (command, its path, the rest, error).
    Options of a group (``modelreg -q push``) are checked on the way."""
    command, path = root, ["modelreg"]
    rest = list(args)
    while hasattr(command, "commands"):
        options = _option_names(command)
        while rest and rest[0].startswith("-"):
            if rest[0] not in options:
                return command, path, rest, f"`{' '.join(path)}` has no option {rest[0]}"
            param = options[rest.pop(0)]
            if param is not None and not param.is_flag and rest:
                rest.pop(0)
        if not rest:
            return command, path, rest, None
        name = rest.pop(0)
        if name not in command.commands:
            return command, path, rest, f"`{' '.join(path)}` has no command {name!r}"
        command, path = command.commands[name], [*path, name]
    return command, path, rest, None


def check_invocation(root: Any, args: list[str]) -> str | None:
    """Why ``modelreg ARGS`` would not parse (unknown command or flag, a missing
    option value, too many or too few arguments), or None."""
    command, path, rest, error = _walk(root, args)
    if error or hasattr(command, "commands"):
        return error
    if "-h" in rest or "--help" in rest:
        return None
    ctx = command.context_class(command, info_name=path[-1])
    try:
        values, extra, _ = command.make_parser(ctx).parse_args(args=rest)
    except Exception as exc:  # click's UsageError family
        return f"`{' '.join(path)}`: {exc}"
    if extra:
        return f"`{' '.join(path)}`: unexpected argument(s) {extra}"
    for param in command.params:
        if param.param_type_name == "argument" and param.required and param.name not in values:
            return f"`{' '.join(path)}`: missing argument {param.human_readable_name}"
    return None


def check_synopsis(root: Any, text: str) -> str | None:
    """Why a synopsis or prose span ``modelreg CMD [--flag X] A|B`` names something
    that does not exist, or None: the subcommand path and every flag are checked."""
    words = [word for word in text.split() if word.strip(".")]  # ``...``: and so on
    if words and words[0] == "modelreg":
        words = words[1:]
    command, path = root, ["modelreg"]
    while hasattr(command, "commands") and words:
        word = words.pop(0)
        if word[0].isupper():  # a placeholder: ``modelreg COMMAND --help``
            return None
        if word.startswith("-"):
            if word not in _option_names(command):
                return f"`{' '.join(path)}` has no option {word}"
        elif word in command.commands:
            command, path = command.commands[word], [*path, word]
        else:
            return f"`{' '.join(path)}` has no command {word!r}"
    options = _option_names(command)
    for flag in FLAG.findall(" ".join(words)):
        if flag not in options:
            return f"`{' '.join(path)}` has no option {flag}"
    return None
