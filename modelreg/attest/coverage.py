"""Which files a model-level signature covers: one rule for every reader.

A model-transparency signature (``model.sig``) lists a model's files by
relative path. Three parties must agree on that set, or a file is listed by
one and skipped by another: the statement ``modelreg sign`` derives from a
manifest (:mod:`modelreg.attest.model_transparency`), the directory verifier
(:mod:`modelreg.verify._directory`), and ``model_signing`` itself, which a
user may run on either side. Issue 15 was such a drift: the statement listed
``.gitattributes`` as a resource *and* named it in ``ignore_paths``, so both
verifiers skipped the file, then reported it missing.

The rule is ``model_signing`` 1.1's, read from its source
(``hashing.Config.hash``, ``hashing.Config.add_ignored_paths`` and
``_serialization.serialization.should_ignore``):

* every regular file under the model root is covered, dotfiles included;
* except a file equal to, or below, an *ignored path*. Ignored paths are
  relative to the model root and compared by whole components: ``.git``
  ignores ``.git/HEAD`` but neither ``.github`` nor ``.gitignore``; ``a``
  does not ignore ``ab``;
* the ignored paths are the git metadata ``model_signing`` leaves out unless
  told ``--no-ignore-git-paths`` (:data:`GIT_PATHS`, at the top level only: a
  nested ``sub/.gitignore`` is covered), the statement's own
  ``serialization.ignore_paths``, the signature file when it sits inside the
  directory, and what the user adds;
* an ignored path that is absolute or contains ``..`` ignores nothing
  (``model_signing`` drops what does not stay under the root; lexically a
  ``..`` path never matches a file found by walking the root).

What follows for a manifest: a git file packed as a layer is not a resource
of the model-level statement (``model_signing verify`` would skip it and call
it missing), so only the manifest signature covers it, through the layer
digest. The statement still records :data:`GIT_PATHS` in ``ignore_paths`` so
that a verifier run with ``--no-ignore-git-paths`` reaches the same set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final

__all__ = ["GIT_PATHS", "SIGNATURE_NAME", "Coverage", "statement_ignore_paths"]

#: What ``model_signing`` ignores by default (``hashing.Config.hash``), top level only.
GIT_PATHS: Final = (".git", ".gitattributes", ".github", ".gitignore")
#: The file name ``model_signing`` and ``modelreg`` use for a model signature.
SIGNATURE_NAME: Final = "model.sig"


def _usable(path: str) -> PurePosixPath | None:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts:
        return None
    return pure


@dataclass(frozen=True, slots=True)
class Coverage:
    """The ignored paths of one signature; :meth:`covers` says whether a file is signed."""

    ignored: tuple[PurePosixPath, ...]

    @classmethod
    def of(cls, ignore_paths: Iterable[str] = (), *, git_paths: bool = True) -> Coverage:
        """Ignore ``ignore_paths`` (relative to the root), and git metadata unless told not to."""
        wanted = [*(GIT_PATHS if git_paths else ()), *ignore_paths]
        usable = (_usable(p) for p in wanted)
        return cls(tuple(dict.fromkeys(p for p in usable if p is not None)))

    def also(self, *paths: str) -> Coverage:
        """This coverage with more ignored paths."""
        return Coverage.of([*(str(p) for p in self.ignored), *paths], git_paths=False)

    def covers(self, relpath: str | PurePosixPath) -> bool:
        """Whether the file (or directory) at ``relpath`` is inside the signature."""
        rel = PurePosixPath(relpath)
        return not any(rel.is_relative_to(ignored) for ignored in self.ignored)


def statement_ignore_paths(names: Iterable[str], extra: Iterable[str] = ()) -> list[str]:
    """The ``ignore_paths`` a statement records: git metadata, ``extra``, the signature file.

    ``model.sig`` is recorded (as ``model_signing sign`` records the signature it
    writes) unless the model itself has a file of that name.
    """
    recorded = [*GIT_PATHS, *extra]
    if SIGNATURE_NAME not in set(names):
        recorded.append(SIGNATURE_NAME)
    return list(dict.fromkeys(recorded))
