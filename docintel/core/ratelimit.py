"""Token-bucket rate limits keyed by any string (user, address…): in memory, or shared.

With the embedded database one server holds every limit in memory. With
PostgreSQL several API nodes answer, so each limit lives in the database
(`SharedLimiter`): a client that spreads its attempts over the nodes gets no
more than from one.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import Protocol

from docintel.core.db import Database, database, execute, now_epoch


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


class Limiter(Protocol):
    """A rate limit the server awaits: in this process, or shared by every API node."""

    async def retry_after(self, key: str) -> int: ...

    async def hit(self, key: str) -> int: ...


class LocalLimiter:
    """`RateLimiter` in this process: for the embedded database's one server."""

    def __init__(self, per_minute: int) -> None:
        self.bucket = RateLimiter(per_minute)

    async def retry_after(self, key: str) -> int:
        return self.bucket.retry_after(key)

    async def hit(self, key: str) -> int:
        return self.bucket.hit(key)


# The same token bucket, one row per key, refilled by the database's clock, so
# that every API node counts against it (PostgreSQL). A take is one statement:
# refill, check and take, or no row when the bucket holds less than one token.
_TAKE = """
INSERT INTO rate_limit AS r (key, tokens, updated) VALUES (?, ? - 1, {now})
ON CONFLICT (key) DO UPDATE
    SET tokens = LEAST(?, r.tokens + ({now} - r.updated) * ?) - 1, updated = {now}
    WHERE LEAST(?, r.tokens + ({now} - r.updated) * ?) >= 1
RETURNING tokens
"""
_PEEK = "SELECT LEAST(?, tokens + ({now} - updated) * ?) FROM rate_limit WHERE key = ?"
# A bucket untouched for a minute is full again: its row can go.
_FORGET = "DELETE FROM rate_limit WHERE updated < {now} - 60"


class SharedLimiter:
    """`RateLimiter`'s rule, kept in the database for all API nodes at once."""

    def __init__(self, db: Database, name: str, per_minute: int) -> None:
        self.db = db
        self.name = name
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._takes = 0

    async def retry_after(self, key: str) -> int:
        tokens = await self.db.run(self._peek, self._row(key))
        return self._wait(tokens)

    async def hit(self, key: str) -> int:
        self._takes += 1
        forget = self._takes % 200 == 0
        tokens = await self.db.run(self._take, self._row(key), forget)
        return self._wait(tokens)

    def _row(self, key: str) -> str:
        # A digest: keys may hold any character (PostgreSQL text refuses NUL),
        # and the table then keeps no user name or address in the clear.
        return hashlib.sha256(f"{self.name}\0{key}".encode("utf-8", "surrogatepass")).hexdigest()

    def _wait(self, tokens: float | None) -> int:
        if tokens is None or tokens >= 1:
            return 0
        return max(1, math.ceil((1 - tokens) / self.rate))

    def _peek(self, key: str) -> float | None:
        rows = execute(_PEEK.format(now=now_epoch()), (self.capacity, self.rate, key)).fetchall()
        return float(rows[0][0]) if rows else None

    def _take(self, key: str, forget: bool) -> float | None:
        """None when taken; else the tokens the bucket holds (less than one)."""
        with database.atomic():
            if forget:
                execute(_FORGET.format(now=now_epoch()))
            cap, rate = self.capacity, self.rate
            params = (key, cap, cap, rate, cap, rate)
            if execute(_TAKE.format(now=now_epoch()), params).fetchall():
                return None
        return self._peek(key)


def limiter(db: Database, shared: bool, name: str, per_minute: int) -> Limiter:
    """Shared through the database when several API nodes share it (PostgreSQL)."""
    return SharedLimiter(db, name, per_minute) if shared else LocalLimiter(per_minute)
