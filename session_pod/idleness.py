"""Whether this session has nothing to do: the fact the operator hibernates a location on
(spec.hibernation; README, Hibernation).

Idle means: ready; the catch-up after the last start has completed (what arrived while the
pod was away is recorded); no location request in flight; no message the ack watchdog may
still resend or whose outcome is being resolved; no webhook waiting in the outbox; and no send
nor location request (`/send_message`, `/chats`, `/contacts`, `/login`, `/logout`, `/qr`,
`/pairing_code`) for `IDLE_AFTER_SECONDS`. The last send is read from the ledger (on the
volume), so a pod woken on schedule a day after its last send is idle as soon as it has caught
up and drained.

Each change is published once as an `idle` event (`{idle, since}`); the operator mirrors it
into the resource's `status.idleSince` and decides. Looking is local (SQLite and memory, every
`IDLE_CHECK_SECONDS`), never a call to the API server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from whatsapp_common.event_types import EventType
from whatsapp_common.logs import get_logger
from whatsapp_common.middleware import Handler
from whatsapp_common.states import SessionState
from whatsapp_common.tasks import cancel_and_wait

from .delivery import Inbox, MessageLedger, Outbox
from .delivery.watchdog import WatchdogSettings
from .metrics import Metrics

log = get_logger(__name__)
ACTIVITY_PATHS = frozenset(
    {"/send_message", "/chats", "/contacts", "/login", "/logout", "/qr", "/pairing_code"}
)


def owed_horizon(watchdog: WatchdogSettings) -> float:
    """How long after its last attempt a message short of RECEIVED keeps the session awake:
    until the watchdog has resent it for the last time and given up on it."""
    return watchdog.deadline * (watchdog.max_attempts + 1)


class Idleness:
    def __init__(
        self,
        idle_after: float,
        check_interval: float,
        state: Callable[[], SessionState],
        inbox: Inbox,
        ledger: MessageLedger,
        outbox: Outbox,
        watchdog: WatchdogSettings,
        publish: Callable[[str, dict[str, Any]], object],
        metrics: Metrics,
    ) -> None:
        """`idle_after` 0: never idle (hibernation off), nothing is published."""
        self.idle_after = idle_after
        self._interval = check_interval
        self._state = state
        self._inbox, self._ledger, self._outbox = inbox, ledger, outbox
        self._horizon = owed_horizon(watchdog)
        self._publish = publish
        self._metrics = metrics
        self._in_flight = 0
        self._last_request = 0.0
        self.idle = False  # as last published
        self._task: asyncio.Task[None] | None = None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Counts a location request as activity, from its start to its end."""
        if request.path not in ACTIVITY_PATHS:
            return await handler(request)
        self._in_flight += 1
        try:
            return await handler(request)
        finally:
            self._in_flight -= 1
            self._last_request = time.time()

    async def is_idle(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if self._state() != SessionState.READY or not self._inbox.live:
            return False
        if self._in_flight or now - self._last_request < self.idle_after:
            return False
        owed, newest = await self._ledger.owed(self._horizon, now)
        if owed or (newest is not None and now - newest < self.idle_after):
            return False
        return (await self._outbox.stats()).pending == 0

    async def check(self) -> None:
        """One look; publishes an `idle` event when the answer changed."""
        idle = await self.is_idle()
        if idle != self.idle:
            self.idle = idle
            log.info("idle" if idle else "busy again", idle_after=self.idle_after)
            self._publish(EventType.IDLE, {"idle": idle, "since": time.time()})

    def start(self) -> None:
        if self.idle_after > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="idleness")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except Exception as exc:  # a database error: said and counted, checked again
                self._metrics.task_failures.labels("idleness").inc()
                log.error("idleness check failed", error=repr(exc))
