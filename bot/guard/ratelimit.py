"""Per-client rate limits: a token bucket per client key, `per_minute` requests a minute with bursts of
up to `per_minute`. Pure but for its own memory; the clock is injected (tests move it by hand)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import LRUCache

MAX_CLIENTS = 100_000


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: float = 0.0  # seconds until the client may try again (refused only)
    first_refusal: bool = False  # the first refusal since the client's last allowed request: log it, once

    @property
    def retry_seconds(self) -> int:
        """For `Retry-After`: whole seconds, rounded up (a client that waits that long gets through)."""
        return max(1, math.ceil(self.retry_after))


ALLOWED = Verdict(True)


@dataclass
class _Bucket:
    tokens: float
    at: float
    refusing: bool = False


class RateLimiter:
    """`take(client)` spends one request of the client's bucket. `per_minute=0` limits nothing. At most
    `max_clients` buckets are kept; the least recently seen is forgotten (it starts full again)."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = MAX_CLIENTS) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._buckets: LRUCache[str, _Bucket] = LRUCache(max_clients)

    def take(self, client: str) -> Verdict:
        if self.per_minute <= 0:
            return ALLOWED
        now, rate = self.clock(), self.per_minute / 60.0
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = _Bucket(float(self.per_minute), now)
        bucket.tokens = min(float(self.per_minute), bucket.tokens + max(0.0, now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            bucket.refusing = False
            return ALLOWED
        first = not bucket.refusing
        bucket.refusing = True
        return Verdict(False, (1.0 - bucket.tokens) / rate, first)

