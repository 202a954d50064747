"""Stopping background tasks: cancel, then wait until each has really ended."""

from __future__ import annotations

import asyncio
from typing import Any

from .logs import get_logger

log = get_logger(__name__)


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancels the tasks and returns once all have ended (a task's cleanup runs before the
    caller goes on). A task that had already failed is logged here, so its error is not lost;
    a cancellation of the caller itself still propagates."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    results = await asyncio.gather(*running, return_exceptions=True)
    for task, result in zip(running, results, strict=True):
        if isinstance(result, Exception):
            log.error(
                "task had failed before it was stopped", task=task.get_name(), error=repr(result)
            )
