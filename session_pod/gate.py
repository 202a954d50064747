"""The gate a planned browser relaunch closes: operations in flight finish, new ones wait.

An operation is one unit of the send path that must not be cut by a relaunch the pod chose
itself: a /send_message (number check, id chosen, ledger, send, outcome), a watchdog resend,
the resolution and catch-up after READY. A crash may still cut one; the send path's design
covers that (an unknown outcome is looked up). The gate only keeps a recycle from adding
such cuts, and keeps sends arriving during it from being refused as "not ready".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class OperationGate:
    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._running = 0

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    @contextlib.asynccontextmanager
    async def operation(self, wait: float) -> AsyncIterator[None]:
        """Runs one operation; while the gate is closed, waits for it to open at most `wait`
        seconds (then goes on, and meets the session's state as it is)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._open.wait(), wait)
        self._running += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    async def close(self, drain_seconds: float) -> int:
        """Closes the gate and waits up to `drain_seconds` for the running operations to
        finish; returns how many still run."""
        self._open.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), drain_seconds)
        return self._running

    def open(self) -> None:
        self._open.set()
