"""In-process event bus: every state change and WhatsApp event, fanned out to /events streams.

Listeners (metrics, the messenger) see an event at once. Streams see it once it is durable:
its webhook stored by the journal (the outbox, on the database's writer thread) or by whoever
published it; so whatever a stream (the operator) saw, Rails gets, even after a kill -9.
Events are numbered as streams see them and keep a bounded history, so a reconnecting SSE
client can resume with Last-Event-ID.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from whatsapp_common.logs import get_logger

log = get_logger(__name__)

# Event payload keys that are secrets: sent to API clients, never written to logs.
SECRET_KEYS = frozenset({"qr", "pairing_code", "link_url"})


@dataclass(frozen=True)
class SessionEvent:
    id: int
    type: str
    data: dict[str, Any]
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "at": self.at, "data": self.data}


# journal(event, stored): store the event's webhook, then call `stored()` on the event loop
# (also when storing failed: the event still happened).
Journal = Callable[[SessionEvent, Callable[[], None]], None]


class EventBus:
    def __init__(
        self, history: int = 200, subscriber_queue: int = 1000, journal: Journal | None = None
    ) -> None:
        self._journal = journal
        self._ids = itertools.count(1)
        self.last_id = 0  # of the newest event streams have seen: /events resumes after it
        self._history: deque[SessionEvent] = deque(maxlen=history)
        self._subscribers: set[asyncio.Queue[SessionEvent | None]] = set()
        self._queue_size = subscriber_queue
        self._closed = False
        self._listeners: list[Callable[[SessionEvent], None]] = []

    def add_listener(self, listener: Callable[[SessionEvent], None]) -> None:
        """Called synchronously for every event, before any stream sees it (its id is 0:
        events are numbered when streams see them)."""
        self._listeners.append(listener)

    def publish(
        self, type_: str, data: dict[str, Any] | None = None, durable: bool = False
    ) -> None:
        """`durable`: the event's webhook was stored by whoever publishes it, or it has none
        (`idle`, a fact for the operator only); otherwise the journal stores it before any
        stream sees the event."""
        event = SessionEvent(0, type_, data or {})
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                # One broken listener must not keep the event from the others and the streams.
                log.exception("event listener failed", event=type_)
        if durable or self._journal is None:
            self._fan_out(event)
        else:
            self._journal(event, lambda: self._fan_out(event))

    def _fan_out(self, event: SessionEvent) -> None:
        event = replace(event, id=next(self._ids))
        self.last_id = event.id
        self._history.append(event)
        safe = {k: ("<redacted>" if k in SECRET_KEYS else v) for k, v in event.data.items()}
        log.info("event", event=event.type, event_id=event.id, data=safe)
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # A reader that stopped reading loses its stream rather than the pod its memory.
                self._subscribers.discard(queue)
                _end(queue)
        return event

    async def subscribe(self, after_id: int = 0) -> AsyncIterator[SessionEvent]:
        """Yields the retained events newer than `after_id`, then live ones until close()."""
        queue: asyncio.Queue[SessionEvent | None] = asyncio.Queue(self._queue_size)
        backlog = [e for e in self._history if e.id > after_id]
        if self._closed:
            return
        self._subscribers.add(queue)
        try:
            for event in backlog:
                yield event
            last = backlog[-1].id if backlog else after_id
            while (event := await queue.get()) is not None:
                if event.id > last:
                    yield event
        finally:
            self._subscribers.discard(queue)

    def close(self) -> None:
        """Ends every subscription (on shutdown, so open /events streams finish)."""
        self._closed = True
        for queue in list(self._subscribers):
            _end(queue)
        self._subscribers.clear()


def _end(queue: asyncio.Queue[SessionEvent | None]) -> None:
    """Drops what a subscriber has not read yet and tells it the stream is over."""
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(None)
