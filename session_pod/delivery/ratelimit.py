"""Per-session send rate limit: callers wait their turn (FIFO) instead of being refused."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType


class RateLimiter:
    """At most `per_minute` acquisitions a minute, evenly spaced after an initial `burst`.
    Even spacing rather than a per-minute window: bursts of sends are what risks a ban.
    `per_minute` <= 0 disables the limit."""

    def __init__(self, per_minute: float, burst: int = 1) -> None:
        self.per_minute = per_minute
        self._interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self._burst = max(1, burst)
        self._tokens = float(self._burst)
        self._updated = time.monotonic()
        self._turn = asyncio.Lock()  # asyncio.Lock wakes waiters in FIFO order

    async def acquire(self) -> None:
        if self._interval == 0:
            return
        async with self._turn:
            self._refill()
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) * self._interval)
                self._refill()
            self._tokens -= 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) / self._interval)
        self._updated = now
