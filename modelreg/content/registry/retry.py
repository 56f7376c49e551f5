"""Retry policy: exponential backoff with full jitter, ``Retry-After``, a total deadline.

Only requests that are safe to repeat are retried (GET, HEAD, manifest PUT,
DELETE, upload-status GET); a request that opens an upload session is retried
only when it never reached the server. Time and randomness are injectable so
tests never sleep.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from modelreg.errors import InvalidInputError

__all__ = ["RETRY_STATUSES", "RetryPolicy", "parse_retry_after"]

RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
"""Statuses worth another attempt of an idempotent request."""


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry.

    ``max_attempts`` counts the first try. The delay before attempt ``n+1`` is
    uniform in ``[0, min(max_delay, base_delay * 2**(n-1))]`` (full jitter), or the
    server's ``Retry-After`` capped by ``max_delay``. No retry starts once
    ``total_deadline`` seconds have passed since the first attempt.
    """

    max_attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 10.0
    total_deadline: float = 120.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    jitter: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidInputError(
                f"retry max_attempts must be at least 1, got {self.max_attempts!r}"
            )
        if self.base_delay < 0 or self.max_delay < 0 or self.total_deadline < 0:
            raise InvalidInputError("retry delays and deadline must not be negative")

    def backoff(self, attempt: int) -> float:
        """Delay after the ``attempt``-th failure (1-based), with full jitter."""
        ceiling = min(self.max_delay, self.base_delay * (2.0 ** max(0, attempt - 1)))
        return ceiling * self.jitter()

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(self.max_delay, max(0.0, retry_after))
        return self.backoff(attempt)

    def start(self) -> RetryState:
        return RetryState(self, self.clock() + self.total_deadline)


class RetryState:
    """The budget of one logical operation: attempts made and the deadline."""

    __slots__ = ("attempts", "deadline", "policy")

    def __init__(self, policy: RetryPolicy, deadline: float) -> None:
        self.policy = policy
        self.deadline = deadline
        self.attempts = 0

    def begin(self) -> int:
        self.attempts += 1
        return self.attempts

    def can_retry(self) -> bool:
        return self.attempts < self.policy.max_attempts and self.policy.clock() < self.deadline

    def wait(self, retry_after: float | None = None) -> bool:
        """Sleep before the next attempt; False (no sleep) when the budget is spent."""
        if not self.can_retry():
            return False
        pause = self.policy.delay(self.attempts, retry_after)
        if self.policy.clock() + pause > self.deadline:
            return False
        if pause > 0:
            self.policy.sleep(pause)
        return True
