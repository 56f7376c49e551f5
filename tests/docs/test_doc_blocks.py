"""The README's and docs/'s code blocks run here, so documentation cannot rot.

Markers and what each kind of block must satisfy: :mod:`tests.docs.blocks`. Each
Markdown file runs in order, in a working directory of its own (with a copy of
``testdata/models``) and a fresh ``MODELREG_HOME``, so later blocks build on earlier
ones, as a reader's shell would.

* ``modelreg ...`` commands (with or without a path such as ``.venv/bin/``) run in
  this process through the CLI application: the command a reader types, without
  paying the interpreter's start-up for each. Steps that install the project
  (``python3 -m venv``, ``pip install``) are skipped: the suite runs inside the
  installed project. ``cd DIR`` and ``export VAR=VALUE`` act on the rest of the file.
* Any other command, and any line with a pipe, redirection, ``$`` or a glob, runs in
  ``bash -e -o pipefail`` with the project's ``bin`` first on ``PATH``.
* Python blocks run in this process, in the working directory.
* A block that names ``localhost:5000`` runs against the suite's loopback
  Distribution registry (``registry_plain``), each file under a repository prefix
  of its own; ``/tmp/`` in a block is a ``tmp`` directory in the working directory.
* A file that names ``localhost:5443`` gets a fresh registry with htpasswd basic
  auth over TLS: user ``ci-bot``, the password in ``REGISTRY_PASSWORD``, and its CA
  trusted through a ``hosts.toml`` in ``MODELREG_HOSTS_DIR`` (as a registry with a
  public CA needs nothing).
* A file that names ``trust_config.json`` gets the suite's private sigstore
  (:class:`tests.integration.sigstore_fixtures.FakeSigstore`: Fulcio- and Rekor-like
  services on loopback): ``trust_config.json`` and ``trusted_root.json`` in the
  working directory, and in ``TOKEN`` an OIDC token for a GitHub Actions workflow of
  ``github.com/acme``.
* The working directory also holds a copy of ``examples/wasm-mlp`` (its sources).
* A FUSE mount a block leaves under the working directory is detached at the end.
* ``console`` blocks: the lines after a ``$ `` command must each appear in what it
  printed (stdout and stderr, runs of spaces as one; ``...`` stands for anything).

A failure names the Markdown file and line of the command, its exit code and output.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, NoReturn

import pytest
from typer.testing import CliRunner

from tests.docs.blocks import (
    Block,
    Command,
    all_flags,
    application,
    check_invocation,
    check_synopsis,
    cli,
    commands_of,
    modelreg_args,
    read_markdown,
    segments,
    tokens,
)
from tests.integration.sigstore_fixtures import FakeSigstore

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
REGISTRY_NAME = "localhost:5000"
AUTH_REGISTRY_NAME = "localhost:5443"
AUTH_USER = "ci-bot"
SIGSTORE_FILE = "trust_config.json"
SIGSTORE_IDENTITY = "https://github.com/acme/models/.github/workflows/release.yml@refs/heads/main"
SIGSTORE_ISSUER = "https://token.actions.githubusercontent.com"
UNQUOTED_SPECIAL = re.compile(r"[$`*?~\[]")
BIN = Path(sys.executable).parent


def doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ------------------------------------------------------------------ static checks


def parse_failures(path: Path) -> list[str]:
    """Every ``modelreg`` command and span of ``path`` that names something the CLI
    does not have, as ``file:line: why``."""
    root = cli()
    flags = all_flags(root)
    blocks, spans = read_markdown(path)
    failures: list[str] = []
    for block in blocks:
        if block.lang == "python":
            failures.extend(_python_static(block))
        if block.lang not in ("sh", "console"):
            continue
        for command in commands_of(block):
            where = block.where(command.offset)
            if block.marker == "synopsis":
                for line in command.text.splitlines():
                    if line.strip().startswith("modelreg"):
                        error = check_synopsis(root, line)
                        if error:
                            failures.append(f"{where}: {error}")
                continue
            try:
                words = tokens(command.text)
            except ValueError as exc:
                failures.append(f"{where}: not shell words: {exc}")
                continue
            for segment in segments(words):
                args = modelreg_args(segment)
                if args is not None:
                    error = check_invocation(root, args)
                    if error:
                        failures.append(f"{where}: {error}")
    commands = set(root.commands)
    for span in spans:
        words = span.text.split()
        where = f"{span.path}:{span.line}"
        if words[0] == "modelreg" or (
            words[0] in commands and len(words) > 1 and words[1].startswith("-")
        ):
            error = check_synopsis(root, span.text)
        elif len(words) == 1 and re.fullmatch(r"--[a-z][a-z0-9-]*", words[0]):
            error = None if words[0] in flags else f"no command has the option {words[0]}"
        else:
            continue
        if error:
            failures.append(f"{where}: {error} (in `{span.text}`)")
    return failures


def _python_static(block: Block) -> list[str]:
    """A Python block parses; a block that is not run has its imports resolved."""
    try:
        tree = ast.parse("\n".join(block.body), filename=block.where())
    except SyntaxError as exc:
        return [f"{block.where((exc.lineno or 1) - 1)}: {exc.msg}"]
    if block.runs:
        return []
    failures = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            try:
                exec(compile(ast.Module([node], []), block.where(), "exec"), {})
            except ImportError as exc:
                failures.append(f"{block.where(node.lineno - 1)}: {exc}")
    return failures


@pytest.mark.parametrize("path", DOCS, ids=doc_id)
def test_every_documented_command_parses(path: Path) -> None:
    failures = parse_failures(path)
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------- running


class DocRunner:
    """Runs one Markdown file's blocks in order in ``work``."""

    def __init__(self, path: Path, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = path
        self.work = work
        self.cwd = work
        self.monkeypatch = monkeypatch
        self.registry: str | None = None
        self.auth_registry: str | None = None
        self.runner = CliRunner()
        self.app = application().app

    def substitute(self, text: str) -> str:
        text = text.replace("/tmp/", f"{self.work}/tmp/")
        if self.registry is not None:
            text = text.replace(REGISTRY_NAME, self.registry)
        if self.auth_registry is not None:
            text = text.replace(AUTH_REGISTRY_NAME, self.auth_registry)
        return text

    def fail(self, where: str, what: str, code: int | str, output: str) -> NoReturn:
        pytest.fail(f"{where}: `{what}` exited {code}\n{output}", pytrace=False)

    # -------------------------------------------------------------- shell lines
    def run_command(self, block: Block, command: Command) -> None:
        where = block.where(command.offset)
        text = self.substitute(command.text)
        words = tokens(text)
        in_process = "\n" not in text and not UNQUOTED_SPECIAL.search(_unquoted(text))
        in_process = in_process and not set(words) & {"|", "||", ";", "&", ">", ">>", "<"}
        outputs: list[str] = []
        if in_process:
            for segment in segments(words):
                outputs.append(self.run_segment(where, segment))
        else:
            outputs.append(self.run_bash(where, text))
        self.expect(where, command, "\n".join(outputs))

    def run_segment(self, where: str, words: list[str]) -> str:
        args = modelreg_args(words)
        if args is not None:
            with _chdir(self.cwd):
                result = self.runner.invoke(self.app, args)
            output = result.stdout + result.stderr
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                output += "".join(traceback.format_exception(result.exception))
            if result.exit_code != 0:
                self.fail(where, shlex_join(words), result.exit_code, output)
            return output
        if words[:3] in (["python3", "-m", "venv"], ["python", "-m", "venv"]) or (
            len(words) > 1 and words[0].endswith("pip") and words[1] == "install"
        ):
            return ""  # installing: the suite runs in the installed project
        if words[0] == "cd" and len(words) == 2:
            self.cwd = (self.cwd / words[1]).resolve()
            return ""
        if words[0] == "export" and all("=" in w for w in words[1:]):
            for assignment in words[1:]:
                name, value = assignment.split("=", 1)
                self.monkeypatch.setenv(name, value)
            return ""
        return self.run_bash(where, shlex_join(words))

    def run_bash(self, where: str, script: str) -> str:
        env = dict(os.environ)
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        # anything but loopback goes to a closed port, never out
        env.update(
            HTTP_PROXY="http://127.0.0.1:9",
            HTTPS_PROXY="http://127.0.0.1:9",
            NO_PROXY="127.0.0.1,localhost",
        )
        # output to a file, not a pipe: a command a block starts in the background
        # (``modelreg mount ... &``) would hold a pipe open until it ends
        with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
            try:
                done = subprocess.run(
                    ["bash", "-e", "-o", "pipefail", "-c", script],
                    cwd=self.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=120,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                log.seek(0)
                self.fail(where, script, "not: killed after 120 s", log.read())
            log.seek(0)
            output = log.read()
        if done.returncode != 0:
            self.fail(where, script, done.returncode, output)
        return output

    def expect(self, where: str, command: Command, output: str) -> None:
        printed = [" ".join(line.split()) for line in output.splitlines()]
        for expected in command.expected:
            wanted = " ".join(self.substitute(expected).split())
            pattern = re.compile(".*".join(re.escape(part) for part in wanted.split("...")))
            if not any(pattern.search(line) for line in printed):
                pytest.fail(
                    f"{where}: `{command.text}` did not print {expected!r}; it printed:\n{output}",
                    pytrace=False,
                )

    # ------------------------------------------------------------------- python
    def run_python(self, block: Block) -> None:
        source = self.substitute("\n".join(block.body))
        stdout = io.StringIO()
        try:
            with _chdir(self.cwd), contextlib.redirect_stdout(stdout):
                exec(compile(source, block.where(), "exec"), {"__name__": "__doc_block__"})
        except Exception:
            printed = stdout.getvalue()
            pytest.fail(
                f"{block.where()}: python block failed\n{traceback.format_exc()}{printed}",
                pytrace=False,
            )


def _unquoted(text: str) -> str:
    """``text`` without its single-quoted parts (their content is literal)."""
    return re.sub(r"'[^']*'", "''", text)


def shlex_join(words: list[str]) -> str:
    return shlex.join(words)


@contextlib.contextmanager
def _chdir(path: Path) -> Any:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _runnable(path: Path) -> bool:
    return any(block.runs for block in read_markdown(path)[0])


def _start_auth_registry(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh basic-auth TLS registry for ``localhost:5443``: its host. The password
    goes to ``REGISTRY_PASSWORD``, its CA into a ``hosts.toml`` modelreg reads."""
    server = request.getfixturevalue("registry_factory")(
        auth="basic", tls=True, username=AUTH_USER, password=secrets.token_urlsafe(16)
    )
    monkeypatch.setenv("REGISTRY_PASSWORD", server.password)
    hosts = Path(os.environ["MODELREG_HOSTS_DIR"]) / server.host
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(
        f'server = "{server.url}"\nca = "{server.ca_file}"\n', encoding="utf-8"
    )
    return str(server.host)


def _start_sigstore(
    stack: contextlib.ExitStack, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The suite's private sigstore on loopback, its client trust config and trusted
    root in ``work``, an identity token in ``TOKEN``."""
    fake = FakeSigstore()
    stack.enter_context(fake.serving(work))
    monkeypatch.setenv("TOKEN", fake.identity_token(SIGSTORE_IDENTITY, SIGSTORE_ISSUER))


def _detach_mounts(work: Path) -> None:
    """Detach any mount left under ``work`` (a block that failed between mount and
    umount): its ``modelreg mount`` process then ends by itself."""
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in points:
        if point.startswith(f"{work}/"):
            subprocess.run(["fusermount3", "-u", "-z", point], capture_output=True, check=False)


@pytest.mark.parametrize("path", [p for p in DOCS if _runnable(p)], ids=doc_id)
def test_blocks_run(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    blocks = [block for block in read_markdown(path)[0] if block.runs]
    work = tmp_path / "work"
    (work / "tmp").mkdir(parents=True)
    shutil.copytree(ROOT / "testdata" / "models", work / "testdata" / "models")
    shutil.copytree(
        ROOT / "examples" / "wasm-mlp",
        work / "examples" / "wasm-mlp",
        ignore=shutil.ignore_patterns("build", "__pycache__"),
    )
    runner = DocRunner(path, work, monkeypatch)
    text = "\n".join("\n".join(block.body) for block in blocks)
    if REGISTRY_NAME in text:
        server = request.getfixturevalue("registry_plain")
        runner.registry = f"{server.host}/docs-{path.stem.lower()}"
    if AUTH_REGISTRY_NAME in text:
        runner.auth_registry = _start_auth_registry(request, monkeypatch)
    with contextlib.ExitStack() as stack:
        stack.callback(_detach_mounts, work)
        if SIGSTORE_FILE in text:
            _start_sigstore(stack, work, monkeypatch)
        for block in blocks:
            if block.lang == "python":
                runner.run_python(block)
            else:
                for command in commands_of(block):
                    runner.run_command(block, command)


# ------------------------------------------------------------ the two set-ups


def test_readme_test_command_is_what_ci_runs() -> None:
    """The README's test command is the one ``.ci/run`` runs."""
    blocks, _ = read_markdown(ROOT / "README.md")
    shown = [block.body for block in blocks if block.lang == "sh"]
    assert ["bash scripts/test"] in shown
    assert "exec bash scripts/test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


# ---------------------------------------------------------- the checker itself


def test_a_missing_flag_is_reported_with_its_line(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# x\n\n```sh\nmodelreg pull tiny:v1 -o out --no-such-flag\n```\n\n"
        "<!-- doc-test: synopsis -->\n```sh\nmodelreg push DIR REF [--bogus N]\n```\n\n"
        "Use `pull --linked` or `modelreg frobnicate`.\n",
        encoding="utf-8",
    )
    failures = parse_failures(page)
    assert [f.split(": ", 1)[0] for f in failures] == [
        f"{page}:4",
        f"{page}:9",
        f"{page}:12",
        f"{page}:12",
    ], failures
    assert "--no-such-flag" in failures[0] and "--bogus" in failures[1]


def test_a_failing_command_is_reported_with_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "page.md"
    page.write_text("```console\n$ modelreg tags never-pushed\n```\n", encoding="utf-8")
    (block,) = read_markdown(page)[0]
    runner = DocRunner(page, tmp_path, monkeypatch)
    with pytest.raises(pytest.fail.Exception, match=rf"{re.escape(str(page))}:2: .* exited 3"):
        runner.run_command(block, commands_of(block)[0])
