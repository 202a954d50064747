"""Retrying store calls while the store is unavailable, with exponential backoff."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from whatsapp_common.backoff import backoff_delay
from whatsapp_common.logs import get_logger
from whatsapp_common.objectstore import StoreUnavailable

log = get_logger(__name__)
T = TypeVar("T")

# Called before each wait: (attempt number, the error, seconds until the next attempt).
OnRetry = Callable[[int, StoreUnavailable, float], None]


@dataclass(frozen=True)
class RetryPolicy:
    """`deadline`: seconds one operation keeps retrying (None = forever).
    Only StoreUnavailable is retried; StoreAccessDenied never is."""

    deadline: float | None = None
    base_delay: float = 0.5
    max_delay: float = 30.0

    def until(self) -> float | None:
        """The monotonic clock time at which an operation starting now gives up."""
        return None if self.deadline is None else time.monotonic() + self.deadline


async def retrying(
    call: Callable[[], Awaitable[T]],
    what: str,
    policy: RetryPolicy,
    until: float | None,
    on_retry: OnRetry | None = None,
) -> T:
    """Awaits `call()` until it does not raise StoreUnavailable, or `until` has passed."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except StoreUnavailable as exc:
            delay = backoff_delay(attempt, policy.base_delay, policy.max_delay, "spread")
            if until is not None:
                left = until - time.monotonic()
                if left <= 0:
                    raise
                delay = min(delay, left)
            log.warning(
                "backup store unavailable; retrying",
                operation=what,
                attempt=attempt,
                retry_in=round(delay, 2),
                error=str(exc),
            )
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            await asyncio.sleep(delay)
