"""``with`` for the objects that hold something open (a database, a file, an engine)
until their ``close()``: one definition of the protocol instead of one per class."""

from __future__ import annotations

from typing import Self

__all__ = ["Closing"]


class Closing:
    """The object is its own context manager: ``with`` hands it out and closes it when
    the block ends, however it ends. A subclass defines :meth:`close`."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
