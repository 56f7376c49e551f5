"""Reading one blob again from the next source, without restarting anything else.

A repository read through mirrors (:class:`~modelreg.content.registry.mirrors.MirroredTarget`)
hands a blob over to the next source by itself when its source breaks mid-transfer (the
rest is read from the next mirror or the registry at the offset reached, and the whole
blob is still hashed against its digest). What it cannot take back are bytes that fail
verification: a streamed blob's consumer has them already. Its reader then distrusts
every mirror that served part of the blob and raises
:class:`~modelreg.errors.MirrorIntegrityError`; the consumer throws away what it got of
that blob (its staged file is truncated, its cache ingest aborted, its upload never
committed) and reads the blob again, which now skips those mirrors. That loop is
:func:`refetching`, used per blob by the pull (raw files and split parts), ``cp``'s
source side and ``prefetch``; the other blobs of the operation go on undisturbed.

Ranges (lazy reads) are verified by their caller against the chunk index, after the
target returned them: :func:`checked` fills, checks, and on a mismatch asks the target
(:class:`Blaming`) to distrust the mirrors that served the range, then fills again.

Both loops are bounded: each round distrusts at least one mirror for good, so a
repository with N mirrors needs at most N + 1 rounds; :data:`MAX_ROUNDS` caps it anyway.
When the last source fails too, its error stands, and its hint names every source tried
for that blob and what each did (the target keeps that list).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, TypeVar, runtime_checkable

from modelreg.errors import IntegrityError, MirrorIntegrityError
from modelreg.events import Event, ProgressCallback, emit

__all__ = ["MAX_ROUNDS", "Blaming", "checked", "refetching"]

MAX_ROUNDS = 8
"""At most this many reads of one blob (or range) for one operation."""

T = TypeVar("T")


def refetching(
    attempt: Callable[[], T],
    *,
    what: str,
    progress: ProgressCallback | None = None,
    rounds: int = MAX_ROUNDS,
) -> T:
    """``attempt()`` again after each :class:`~modelreg.errors.MirrorIntegrityError`.

    ``attempt`` reads one blob from byte 0 and must keep nothing of it when it raises.
    A mirror blamed twice (it cannot be: it is distrusted after the first time) or more
    than ``rounds`` reads end the loop with the last error.
    """
    blamed: list[str] = []
    for round_ in itertools.count(1):
        try:
            return attempt()
        except MirrorIntegrityError as exc:
            if exc.mirror in blamed or round_ >= rounds:
                raise
            blamed.append(exc.mirror)
            note = (
                f"mirror {exc.mirror} served a wrong {what}; reading it again from the next source"
            )
            emit(progress, Event("message", note))
    raise AssertionError("unreachable")  # pragma: no cover


@runtime_checkable
class Blaming(Protocol):
    """A target that can say which of its sources served a read, and distrust them."""

    def served_by(self) -> AbstractContextManager[list[str]]:
        """Within the block, the hosts that served this thread's reads are appended to
        the list it yields."""
        ...

    def distrust(self, hosts: Sequence[str], exc: IntegrityError) -> bool:
        """Never read from the mirrors among ``hosts`` again (``exc`` says why); True if
        one was a mirror, so that reading again reads from another source."""
        ...


def checked(
    target: object,
    fill: Callable[[], None],
    check: Callable[[], None],
    *,
    rounds: int = MAX_ROUNDS,
) -> None:
    """``fill()`` then ``check()`` (which raises :class:`IntegrityError` on bad bytes);
    when the bytes came from a mirror, distrust it and do both again."""
    if not isinstance(target, Blaming):
        fill()
        check()
        return
    for round_ in itertools.count(1):
        with target.served_by() as hosts:
            fill()
        try:
            check()
        except IntegrityError as exc:
            if round_ >= rounds or not target.distrust(hosts, exc):
                raise
            continue
        return
