"""A small thread-safe TTL + LRU cache, and the decision cache key.

The key of a decision is ``(repository name, digest, digest of the policies that
apply)``: a policy edit (even only a key file's content) changes the key, so a cached
decision never outlives the policy it was made under (SECURITY 24).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from modelreg.policy import Policy

__all__ = ["TTLCache", "decision_key", "policies_digest"]

K = TypeVar("K")
V = TypeVar("V")


def policies_digest(policies: Iterable[Policy]) -> str:
    joined = "\n".join(sorted(p.digest for p in policies))
    return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()


def decision_key(name: str, digest: str, policies: Iterable[Policy]) -> tuple[str, str, str]:
    return (name, digest, policies_digest(policies))


class TTLCache(Generic[K, V]):
    """Entries expire ``ttl`` seconds after being stored (each may carry its own TTL)."""

    def __init__(
        self,
        ttl: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        now = self._clock()
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            expires, value = item
            if expires <= now:
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return value

    def put(self, key: K, value: V, ttl: float | None = None) -> None:
        ttl = self.ttl if ttl is None else ttl
        if ttl <= 0:
            return
        with self._lock:
            self._data[key] = (self._clock() + ttl, value)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)
