"""The staging directory: where a pull writes, and the one step that commits it.

Every file of a pull is written into a fresh directory inside the output
directory (same filesystem, so the final ``rename`` is atomic per file and no
byte is copied twice). Nothing reaches the output until every layer is written
and verified and :meth:`Staging.commit` has checked, for the whole pull:

* the destinations again, now with archive members known
  (:func:`~._plan.check_destinations`: SECURITY.md case 6, and case 29: the
  output is not changed under a path the user made a directory);
* every staged link of every layer together, resolved the way the kernel would
  through what the output already holds (:func:`~modelreg.model._linkcheck.check_staged`,
  case 7).

A pull that fails anywhere before the moves leaves the output as it was
(case 29): :meth:`Staging.remove` deletes the staging directory, whatever it
holds, in the pull's ``finally``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from modelreg.model._linkcheck import check_staged
from modelreg.model.unpack._plan import check_destinations

PREFIX = ".modelreg-pull-"


class Staging:
    """A pull's staging directory inside ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.root = Path(tempfile.mkdtemp(prefix=PREFIX, dir=out))

    def __truediv__(self, rel: str) -> Path:
        return self.root / rel

    def commit(self, paths: Sequence[str], link_owners: Mapping[str, str]) -> None:
        """Check the whole pull, then move every staged file to its final place.

        ``link_owners`` names the layer that wrote each staged symbolic link.
        """
        check_destinations(self.out, paths)
        # every layer's links together, before anything moves (SECURITY.md case 7)
        check_staged(self.out, self.root, paths, link_owners)
        for rel in paths:
            final = self.out / rel
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.root / rel, final)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
