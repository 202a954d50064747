"""Durable webhook outbox: events are committed to SQLite before `enqueue` returns and
delivered to Rails at least once, strictly in order (the head event blocks those behind it
until it is delivered or dead-lettered).

A restarted pod resumes where the last one stopped: pending events, their attempt counts and
their ids (Rails de-duplicates on `event_id`) are in the database. On `start()` the head event
is tried at once rather than after its stored backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp

from whatsapp_common.backoff import backoff_delay
from whatsapp_common.logs import get_logger
from whatsapp_common.tasks import cancel_and_wait

from .sender import Outcome, post
from .store import Database
from .webhooks import WebhookSettings

log = get_logger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    location TEXT NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS webhook_outbox_location ON webhook_outbox (location, seq);
CREATE TABLE IF NOT EXISTS webhook_dead_letters (
    event_id TEXT PRIMARY KEY,
    location TEXT NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at REAL NOT NULL,
    status INTEGER,
    error TEXT NOT NULL
);
"""

# After an unexpected error in the sender (e.g. the database), wait this long before going on.
_ERROR_PAUSE = 5.0


@dataclass
class _Sender:
    loop: asyncio.AbstractEventLoop
    wake: asyncio.Event  # set by enqueue/replay: there is something new to send
    progress: asyncio.Event  # set after every delivery attempt (stop() drains on it)
    task: asyncio.Task[None] = field(init=False)


@dataclass(frozen=True)
class PendingEvent:
    seq: int
    event_id: str
    type: str
    body: str
    attempts: int
    next_attempt_at: float


@dataclass(frozen=True)
class DeadLetter:
    event_id: str
    type: str
    attempts: int
    failed_at: float
    status: int | None
    error: str
    payload: dict[str, Any]  # may hold the QR string: fine for the API, never for logs

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event": self.type,
            "attempts": self.attempts,
            "failed_at": _iso(self.failed_at),
            "status": self.status,
            "error": self.error,
            "payload": self.payload,
        }


@dataclass(frozen=True)
class OutboxStats:
    pending: int
    dead_letters: int
    oldest_pending_seconds: float | None


class Outbox:
    def __init__(self, db: Database | str | Path, location: str, settings: WebhookSettings) -> None:
        """Opens the database now: a corrupt or unwritable file raises DeliveryDatabaseError."""
        self.location = location
        self.settings = settings
        self._db = Database.of(db, SCHEMA)
        self._sender: _Sender | None = None

    def enqueue(self, event_type: str, data: dict[str, Any]) -> str | None:
        """Stores the event (committed, fsynced) and returns its id; None when webhooks are
        disabled or WEBHOOK_EVENTS filters this type out. It waits for the commit: the pod's
        event loop uses `enqueue_soon`. Raises DeliveryDatabaseError rather than losing the
        event."""
        event_id = self._db.transact(lambda c: self.enqueue_in(c, event_type, data))
        self.notify()
        return event_id

    def enqueue_soon(
        self,
        event_type: str,
        data: dict[str, Any],
        on_error: Callable[[Exception], object],
        stored: Callable[[], object] = lambda: None,
    ) -> None:
        """`enqueue` for the event loop: the commit (an fsync, up to tens of ms on a busy
        disk) happens on the database's writer thread, in the order of the calls, and the
        loop goes on at once; then `stored()`, or `on_error(error)`, runs on the loop. The
        write is done by the time `stop` drains the queue."""

        def committed(_: object) -> None:
            self.notify()
            stored()

        self._db.write_soon(lambda c: self.enqueue_in(c, event_type, data), committed, on_error)

    def enqueue_in(
        self,
        c: sqlite3.Connection,
        event_type: str,
        data: dict[str, Any],
        event_id: str | None = None,
    ) -> str | None:
        """`enqueue` inside the caller's transaction (call `notify` once it committed);
        `event_id` gives the event a stable id (a WhatsApp message id) instead of a new one."""
        if not self.settings.wants(event_type):
            return None
        event_id = event_id or str(uuid.uuid4())
        now = time.time()
        body = json.dumps(
            {
                "event": event_type,
                "event_id": event_id,
                "location_identifier": self.location,
                "timestamp": _iso(now),
                "data": data,
            },
            separators=(",", ":"),
            default=str,
        )
        c.execute(
            "INSERT INTO webhook_outbox (event_id, location, type, body, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (event_id, self.location, event_type, body, now),
        )
        log.info("webhook queued", event=event_type, event_id=event_id)
        return event_id

    async def failed(self) -> list[DeadLetter]:
        """Dead letters of this location, oldest first."""
        rows = await self._db.run(
            lambda c: c.execute(
                "SELECT event_id, type, attempts, failed_at, status, error, body"
                " FROM webhook_dead_letters WHERE location = ? ORDER BY failed_at",
                (self.location,),
            ).fetchall()
        )
        return [DeadLetter(*row[:6], json.loads(row[6])) for row in rows]

    async def replay(self, ids: Collection[str] | Literal["all"]) -> list[str]:
        """Moves dead letters back to the END of the queue with their original event id and
        payload; returns the ids actually re-queued (unknown ids are ignored)."""
        if isinstance(ids, str) and ids != "all":
            raise ValueError("replay takes a collection of event ids or 'all'")

        def work(c: sqlite3.Connection) -> list[str]:
            rows = c.execute(
                "SELECT event_id FROM webhook_dead_letters WHERE location = ? ORDER BY failed_at",
                (self.location,),
            ).fetchall()
            chosen = [r[0] for r in rows if ids == "all" or r[0] in ids]
            for event_id in chosen:
                c.execute(
                    "INSERT INTO webhook_outbox (event_id, location, type, body, created_at)"
                    " SELECT event_id, location, type, body, created_at"
                    " FROM webhook_dead_letters WHERE event_id = ?",
                    (event_id,),
                )
                c.execute("DELETE FROM webhook_dead_letters WHERE event_id = ?", (event_id,))
            return chosen

        replayed = await self._db.run(work)
        for event_id in replayed:
            log.info("webhook replayed", event_id=event_id)
        self.notify()
        return replayed

    async def stats(self) -> OutboxStats:
        def work(c: sqlite3.Connection) -> OutboxStats:
            pending, oldest = c.execute(
                "SELECT count(*), min(created_at) FROM webhook_outbox WHERE location = ?",
                (self.location,),
            ).fetchone()
            (dead,) = c.execute(
                "SELECT count(*) FROM webhook_dead_letters WHERE location = ?", (self.location,)
            ).fetchone()
            return OutboxStats(pending, dead, None if oldest is None else time.time() - oldest)

        return await self._db.run(work)

    def start(self) -> None:
        """Starts the background sender (a no-op when webhooks are disabled)."""
        if not self.settings.enabled or self._sender is not None:
            return
        if not self.settings.secret:
            log.warning("WEBHOOK_SECRET is not set: webhooks are sent unsigned")
        # Resume at once: the stored backoff belonged to the previous process.
        self._db.transact(
            lambda c: c.execute(
                "UPDATE webhook_outbox SET next_attempt_at = 0 WHERE location = ?",
                (self.location,),
            )
        )
        sender = _Sender(asyncio.get_running_loop(), asyncio.Event(), asyncio.Event())
        sender.task = asyncio.create_task(self._run(sender), name="webhook-outbox")
        self._sender = sender

    async def stop(self, drain_timeout: float = 0.0) -> None:
        """Stops the sender, first giving it up to `drain_timeout` seconds to empty the queue.
        An event in flight when it stops stays queued and is sent again on the next start."""
        await asyncio.to_thread(self._db.flush)  # what enqueue_soon handed over is written
        sender = self._sender
        if sender is None:
            return
        deadline = time.monotonic() + drain_timeout
        while (left := deadline - time.monotonic()) > 0 and (await self.stats()).pending:
            sender.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sender.progress.wait(), left)
        self._sender = None
        await cancel_and_wait(sender.task)

    def close(self) -> None:
        self._db.close()

    def notify(self) -> None:
        """Wakes the sender; safe from any thread, and a no-op before start()."""
        sender = self._sender
        if sender is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                sender.loop.call_soon_threadsafe(sender.wake.set)

    async def _run(self, sender: _Sender) -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                sender.wake.clear()
                try:
                    head = await self._db.run(self._head)
                    if head is None:
                        await sender.wake.wait()
                    elif (wait := head.next_attempt_at - time.time()) > 0:
                        # An enqueue or replay wakes us early: re-reading the head is harmless.
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(sender.wake.wait(), wait)
                    else:
                        await self._deliver(http, head)
                        sender.progress.set()
                except Exception:
                    # The sender must not die quietly: events would pile up unseen.
                    log.exception("webhook sender failed; retrying")
                    await asyncio.sleep(_ERROR_PAUSE)

    def _head(self, c: sqlite3.Connection) -> PendingEvent | None:
        row = c.execute(
            "SELECT seq, event_id, type, body, attempts, next_attempt_at FROM webhook_outbox"
            " WHERE location = ? ORDER BY seq LIMIT 1",
            (self.location,),
        ).fetchone()
        return None if row is None else PendingEvent(*row)

    async def _deliver(self, http: aiohttp.ClientSession, event: PendingEvent) -> None:
        attempt = event.attempts + 1
        result = await post(
            http, self.settings, event.type, event.event_id, event.body.encode(), attempt
        )
        fields = {"event": event.type, "event_id": event.event_id, "attempt": attempt}
        if result.outcome is Outcome.DELIVERED:
            await self._db.run(
                lambda c: c.execute("DELETE FROM webhook_outbox WHERE seq = ?", (event.seq,))
            )
            log.info("webhook delivered", status=result.status, **fields)
        elif result.outcome is Outcome.DEAD:
            await self._db.run(lambda c: _bury(c, event, attempt, result.status, result.error))
            log.error("webhook dead-lettered", status=result.status, error=result.error, **fields)
        else:
            delay = backoff_delay(
                attempt, self.settings.retry_base, self.settings.retry_max, "full"
            )
            if result.retry_after is not None:
                delay = min(max(delay, result.retry_after), self.settings.retry_max)
            await self._db.run(
                lambda c: c.execute(
                    "UPDATE webhook_outbox SET attempts = ?, next_attempt_at = ?, last_error = ?"
                    " WHERE seq = ?",
                    (attempt, time.time() + delay, result.error, event.seq),
                )
            )
            log.warning(
                "webhook attempt failed",
                error=result.error,
                status=result.status,
                retry_in=round(delay, 3),
                **fields,
            )


def _bury(
    c: sqlite3.Connection, event: PendingEvent, attempts: int, status: int | None, error: str
) -> None:
    c.execute(
        "INSERT OR REPLACE INTO webhook_dead_letters"
        " (event_id, location, type, body, created_at, attempts, failed_at, status, error)"
        " SELECT event_id, location, type, body, created_at, ?, ?, ?, ? FROM webhook_outbox"
        " WHERE seq = ?",
        (attempts, time.time(), status, error, event.seq),
    )
    c.execute("DELETE FROM webhook_outbox WHERE seq = ?", (event.seq,))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
