"""Token-bucket rate limits, in memory, keyed by any string (user, address…)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class RateLimiter:
    """Allows `per_minute` hits per key, refilled continuously; bursts up to that many.

    In memory and per process, which is what one `docintel serve` needs; state
    for idle keys is dropped so a flood of distinct keys cannot grow it forever.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, last update)

    def retry_after(self, key: str) -> int:
        """Seconds until `key` may try again; 0 when a hit is allowed now (no hit taken)."""
        tokens = self._tokens(key)
        return 0 if tokens >= 1 else max(1, math.ceil((1 - tokens) / self.rate))

    def hit(self, key: str) -> int:
        """Take one hit for `key`: 0 when allowed, else the seconds to wait (nothing taken)."""
        wait = self.retry_after(key)
        if wait == 0:
            self._buckets[key] = (self._tokens(key) - 1, self._clock())
        return wait

    def _tokens(self, key: str) -> float:
        now = self._clock()
        tokens, last = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens >= self.capacity and key in self._buckets:
            del self._buckets[key]  # full again: forget it
        return tokens

    def __len__(self) -> int:
        return len(self._buckets)
