"""The pod's background tasks, supervised: none dies unseen.

A task that raises is logged once with its name and counted in
`wa_background_task_failures_total{task}`; its error stays readable (`last_error`) for
/status. Shutdown cancels and awaits whatever still runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from whatsapp_common.logs import get_logger
from whatsapp_common.tasks import cancel_and_wait

from .metrics import Metrics

log = get_logger(__name__)


class Supervised:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._tasks: set[asyncio.Task[Any]] = set()
        self._single: dict[str, asyncio.Task[Any]] = {}
        self._again: set[str] = set()
        self.last_error: str | None = None

    def spawn(self, name: str, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def spawn_single(self, name: str, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Runs `work()` unless it runs already; then it runs once more when that ends, so a
        request made while it ran is never lost."""
        running = self._single.get(name)
        if running is not None and not running.done():
            self._again.add(name)
            return

        def ended(task: asyncio.Task[Any]) -> None:
            if name in self._again and not task.cancelled():
                self._again.discard(name)
                self.spawn_single(name, work)

        task = self.spawn(name, work())
        self._single[name] = task
        task.add_done_callback(ended)

    async def close(self) -> None:
        await cancel_and_wait(*self._tasks)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        self.last_error = f"{task.get_name()}: {error}"
        self._metrics.task_failures.labels(task.get_name()).inc()
        log.error("background task failed", task=task.get_name(), error=repr(error))
