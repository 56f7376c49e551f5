"""Where the links a pull writes lead, judged the way the kernel resolves a path (case 7).

Checking one link target lexically (``posixpath.normpath(dirname + target)``) is
wrong as soon as a component of the target is itself a link: ``p/q/r -> ../..``
is harmless alone, but ``pw -> p/q/r/../../../etc/passwd`` normalises to
``etc/passwd`` while the kernel first follows ``p/q/r`` to the output root and
then climbs out of it. So :class:`LinkTree` models the tree a pull writes (files,
directories, symbolic links with their targets) and resolves each path the way
the kernel does:

* component by component; a symbolic link is replaced by its target, resolved
  relative to the directory that holds the link, and ``..`` applies to the
  location reached so far, never to the spelling of the path;
* at most :data:`MAX_LINKS` links per resolution (Linux's ``ELOOP`` bound);
  more is refused as a loop;
* a component the tree does not hold is a plain name (the user may create it
  later, as a directory): conservative, since any ``..`` that climbs above the
  output root at any step is refused, whatever would exist there;
* a name that differs from a link in the tree only by case or Unicode
  normalisation is refused: it is the link on a case-insensitive filesystem
  and a plain name elsewhere;
* absolute targets are refused.

No entry may sit below a link (it would be written through it). The tree knows
only what it is given: :func:`modelreg.model.archive.extract_archive` checks each
archive on its own, before creating its links; :func:`check_staged` checks the
whole pull again before anything leaves the staging directory: every staged entry
of every layer (links read back from the staged links themselves), each placed
where it will really land (the user's own links in the output move it), resolved
together with what the output directory already holds (``fallback``; a user's
link leading outside it is refused when a pulled link goes through it).
Resolutions are memoised per link, so many links chained through each other cost
time linear in the size of their targets.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from modelreg.errors import InvalidInputError, UnsafeContentError

__all__ = ["MAX_LINKS", "MAX_TARGET", "LinkTree", "Node", "check_staged", "existing_in"]

MAX_LINKS: Final = 40
"""Links followed in one resolution before it is refused as a loop (Linux MAXSYMLINKS)."""
MAX_TARGET: Final = 4096
"""Longest link target accepted (PATH_MAX)."""

_HINT: Final = (
    "the artifact is hostile or broken: every link, followed the way the kernel follows it, "
    "must stay inside the output directory; refused, nothing was written"
)


@dataclass(frozen=True, slots=True)
class Node:
    """What is at one path: a file, a directory or a symbolic link (with its target)."""

    kind: Literal["file", "dir", "link"]
    owner: str
    """Who writes it (a layer and member), for messages."""
    target: str = ""


Lookup = Callable[[str], "Node | None"]


@dataclass(frozen=True, slots=True)
class _Done:
    """Marks the end of a link's target in the work list: its resolution is complete."""

    key: str
    links_before: int


def _fold(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


class LinkTree:
    """The entries one archive or one whole pull writes; see the module docstring.

    ``fallback`` tells what is at a path the tree does not write (what already
    exists in the output directory); entries of the tree take precedence, except
    directories, which a pull creates only where nothing is.
    """

    def __init__(self, fallback: Lookup | None = None) -> None:
        self._nodes: dict[str, Node] = {}
        self._dirs: set[str] = set()
        self._folded_links: dict[str, str] = {}
        self._fallback = fallback
        self._fallback_seen: dict[str, Node | None] = {}
        self._memo: dict[str, tuple[tuple[str, ...], int]] = {}

    def add_file(self, path: str, owner: str) -> None:
        self._nodes[path] = Node("file", owner)
        self._add_parents(path)
        self._memo.clear()  # a resolution may have taken this name for a plain one

    def add_dir(self, path: str) -> None:
        self._dirs.add(path)
        self._add_parents(path)
        self._memo.clear()

    def add_link(self, path: str, target: str, owner: str) -> None:
        """Record a symbolic link; its target's form is checked here, where it leads
        by :meth:`check`."""
        if not target or "\x00" in target or "\\" in target or len(target) > MAX_TARGET:
            raise UnsafeContentError(
                f"{owner}: symbolic link {path!r} has the target {target[:200]!r}, "
                "empty, too long or with a NUL or backslash",
                hint=_HINT,
            )
        if target.startswith("/"):
            raise UnsafeContentError(
                f"{owner}: symbolic link {path!r} -> {target!r} is absolute", hint=_HINT
            )
        self._nodes[path] = Node("link", owner, target)
        self._folded_links[_fold(path)] = path
        self._add_parents(path)
        self._memo.clear()

    def _add_parents(self, path: str) -> None:
        parent, _, _ = path.rpartition("/")
        while parent and parent not in self._dirs:
            self._dirs.add(parent)
            parent, _, _ = parent.rpartition("/")

    def link_on(self, path: str) -> str | None:
        """The first link among ``path`` and its parents, spelled as in the tree, or None
        (case and Unicode normalisation ignored: conservative)."""
        if not self._folded_links:
            return None
        ends = [i for i, c in enumerate(path) if c == "/"]
        for end in (*ends, len(path)):
            prefix = path[:end]
            node = self._nodes.get(prefix)
            if node is not None and node.kind == "link":
                return prefix
            folded = self._folded_links.get(_fold(prefix))
            if folded is not None:
                return folded
        return None

    def check(self) -> None:
        """:class:`UnsafeContentError` for the first entry written through a link or link
        that leads outside, once every link is followed."""
        for path, node in sorted(self._nodes.items()):
            parent = path.rpartition("/")[0]
            via = self.link_on(parent) if parent else None
            if via is not None:
                raise UnsafeContentError(
                    f"{node.owner}: {path!r} would be written through the symbolic link "
                    f"{via!r} ({self._nodes[via].owner})",
                    hint=_HINT,
                )
        for path, node in sorted(self._nodes.items()):
            if node.kind == "link":
                # its parent holds no link (checked above): resolution starts there
                self.resolve(path, plain_parent=True)

    def resolve(self, path: str, *, plain_parent: bool = False) -> tuple[str, ...]:
        """Where ``path`` (relative to the root) leads once every link is followed, as
        components below the root; refused if it leaves the root at any step.
        ``plain_parent``: the caller knows no component but the last is a link."""
        parts = path.split("/")
        stack: list[str] = parts[:-1] if plain_parent else []
        pending: list[str | _Done] = [parts[-1]] if plain_parent else list(reversed(parts))
        links = 0
        trail: list[str] = []
        while pending:
            part = pending.pop()
            if isinstance(part, _Done):
                self._memo[part.key] = (tuple(stack), links - part.links_before)
                continue
            if part in ("", "."):
                continue
            if part == "..":
                if not stack:
                    raise self._escape(path, trail)
                stack.pop()
                continue
            key = "/".join((*stack, part))
            node = self._node(key)
            if node is None or node.kind != "link":
                stack.append(part)
                continue
            trail.append(f"{key!r} -> {node.target!r}")
            memo = self._memo.get(key)
            if memo is not None:
                stack = list(memo[0])
                links += memo[1]
            else:
                if node.target.startswith("/"):
                    raise UnsafeContentError(
                        f"{self._describe(path)} leads through {node.owner}: "
                        f"{key!r} -> {node.target!r}, an absolute path",
                        hint=_HINT,
                    )
                pending.append(_Done(key, links))
                pending.extend(reversed(node.target.split("/")))
                links += 1
            if links > MAX_LINKS:
                raise UnsafeContentError(
                    f"{self._describe(path)} follows more than {MAX_LINKS} links "
                    f"(a loop?): {', '.join(trail[:6])}{', ...' if len(trail) > 6 else ''}",
                    hint=_HINT,
                )
        return tuple(stack)

    def _node(self, key: str) -> Node | None:
        node = self._nodes.get(key)
        if node is not None:
            return node
        if self._fallback is not None:
            if key not in self._fallback_seen:
                self._fallback_seen[key] = self._fallback(key)
            found = self._fallback_seen[key]
            if found is not None:
                return found
        if key in self._dirs:
            return Node("dir", "")
        folded = self._folded_links.get(_fold(key))
        if folded is not None:
            raise UnsafeContentError(
                f"the path {key!r} differs from the symbolic link {folded!r} "
                f"({self._nodes[folded].owner}) only by case or Unicode normalisation: it "
                "leads elsewhere on a case-insensitive filesystem than on this one",
                hint=_HINT,
            )
        return None

    def _describe(self, path: str) -> str:
        node = self._nodes.get(path)
        if node is None:
            return f"the path {path!r}"
        if node.kind == "link":
            return f"{node.owner}: symbolic link {path!r} -> {node.target!r}"
        return f"{node.owner}: {path!r}"

    def _escape(self, path: str, trail: list[str]) -> UnsafeContentError:
        through = f", following {', then '.join(trail)}," if trail else ""
        return UnsafeContentError(
            f"{self._describe(path)} leads outside the output directory{through} "
            "where a '..' climbs above it",
            hint=_HINT,
        )


def existing_in(root: str | os.PathLike[str]) -> Lookup:
    """A ``fallback`` for :class:`LinkTree`: what already exists below ``root``.

    A pull moves its files into a directory that may hold the user's own links; a
    link the pull writes may resolve through them. An absolute link of the user's
    that leads inside ``root`` is given as the relative target it amounts to; one
    that leads elsewhere stays absolute, and a path through it is refused.
    """
    base = os.fspath(root)
    real_root = os.path.realpath(base)

    def lookup(key: str) -> Node | None:
        path = os.path.join(base, key)
        owner = f"{path!r}, already in the output directory"
        try:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                return Node("dir", owner)
            if not stat.S_ISLNK(st.st_mode):
                return Node("file", owner)
            target = os.readlink(path)
        except OSError:  # absent, or removed meanwhile: a plain name
            return None
        if target.startswith("/"):
            real = os.path.realpath(path)
            if real == real_root or real.startswith(real_root + os.sep):
                # every component of key is a plain directory: this is the link's parent
                holder = os.path.join(real_root, os.path.dirname(key))
                target = os.path.relpath(real, holder).replace(os.sep, "/")
        return Node("link", owner, target)

    return lookup


def _placed_dir(base: str, real_root: str, parent: str) -> str:
    """Where the directory ``parent`` of the output really is, below the root: the
    user's own links in the output move what the pull writes there."""
    if not parent:
        return ""
    real = os.path.realpath(os.path.join(base, parent))
    where = os.path.relpath(real, real_root).replace(os.sep, "/")
    if where == ".." or where.startswith("../"):
        raise UnsafeContentError(
            f"{os.path.join(base, parent)!r} is a link leading outside the output directory",
            hint="remove the link or pull into an empty directory",
        )
    return "" if where == "." else where


def check_staged(
    root: str | os.PathLike[str],
    staging: str | os.PathLike[str],
    paths: Sequence[str],
    owners: Mapping[str, str],
) -> None:
    """The whole pull's check, before ``paths`` move from ``staging`` into ``root``.

    Every staged entry (a link is read from the staged link itself: what is checked
    is what moves) is placed where it will land, through links the output already
    holds, and every link is then resolved together with the others and with what
    ``root`` holds. ``owners`` names the layer that wrote each link, for messages.
    """
    base = os.fspath(root)
    real_root = os.path.realpath(base)
    tree = LinkTree(fallback=existing_in(base))
    dirs: dict[str, str] = {}
    placed: dict[str, str] = {}
    for rel in paths:
        parent, _, name = rel.rpartition("/")
        if parent not in dirs:
            dirs[parent] = _placed_dir(base, real_root, parent)
        key = f"{dirs[parent]}/{name}" if dirs[parent] else name
        if key in placed:
            raise InvalidInputError(
                f"{placed[key]!r} and {rel!r} of the model land on the same file "
                f"{os.path.join(base, key)!r} through a link in the output directory",
                hint="remove the link or pull into an empty directory",
            )
        placed[key] = rel
        staged = os.path.join(os.fspath(staging), rel)
        owner = owners.get(rel, f"the layer file {rel!r}")
        if os.path.islink(staged):
            tree.add_link(key, os.readlink(staged), owner)
        else:
            tree.add_file(key, owner)
    tree.check()  # also refuses an entry placed below a link the pull writes
