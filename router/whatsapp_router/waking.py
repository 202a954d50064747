"""Waking a hibernating location (README, Hibernation): a `/send_message`, `/login`, `/chats`,
`/contacts`, `/logout` or `/pairing_code` for it asks the operator (the backend writes
`status.wakeRequest`), then the request is held until the session is ready again, at most
`WAKE_HOLD_SECONDS`; past that (or with 0) it gets the seed's 400 "being initialized" with
`Retry-After`, and Rails comes back."""

from __future__ import annotations

import asyncio
import contextlib

from whatsapp_common.answers import being_initialized
from whatsapp_common.states import Phase

from .directory import Backend, Directory, Route, SessionRecord, Verdict
from .metrics import RouterMetrics

# Phases a waking session does not leave by itself: a request is answered as they say.
SETTLED = frozenset(
    {Phase.READY, Phase.QR_REQUIRED, Phase.LOGGED_OUT, Phase.FAILED, Phase.PAUSED, Phase.CONFLICT}
)


def waking(route: Route) -> bool:
    """Asleep, or woken and not ready yet."""
    session = route.session
    if session is None or not session.hibernates:
        return False
    return route.verdict is Verdict.ASLEEP or session.phase not in SETTLED


class Waker:
    def __init__(
        self,
        backend: Backend,
        directory: Directory,
        metrics: RouterMetrics,
        hold_seconds: float,
        retry_after: int,
    ) -> None:
        self._backend, self._directory, self._metrics = backend, directory, metrics
        self._hold, self._retry_after = hold_seconds, retry_after
        self._asked: dict[str, float | None] = {}  # resource name -> the sleep it asked to end

    async def until_awake(self, location: str, route: Route) -> Route:
        """The route once the session is ready (or settled elsewhere, e.g. logged out);
        raises the seed's 400 "being initialized" when that takes longer than the hold."""
        deadline = asyncio.get_running_loop().time() + self._hold
        while waking(route):
            if route.verdict is Verdict.ASLEEP and route.session is not None:
                await self.ask(route.session)
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                self._metrics.wake_holds.labels("answered_later").inc()
                raise being_initialized(location, route.state, self._retry_after)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._directory.next_change().wait(), left)
            route = self._directory.route(location)
        self._metrics.wake_holds.labels("forwarded").inc()
        return route

    async def ask(self, session: SessionRecord) -> None:
        """Once per sleep and router (the operator answers each distinct request once)."""
        if self._asked.get(session.name) == session.since:
            return
        await self._backend.wake_session(session)
        self._asked[session.name] = session.since
        self._metrics.wakes_requested.inc()
