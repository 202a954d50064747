"""Customers' messages: each one reaches Rails once per volume, also across crashes.

A message comes in two ways: the page reports it (`chat.new_message`), or the pod finds it
when it reads the chats that changed while it was away (the catch-up after every start and
browser relaunch: a message the page took just before a crash is in the chat's history,
not in any event). Either way `accept` records its id and queues its `message` webhook
under that id (the WhatsApp message id is the webhook's `event_id`) in ONE transaction, so
a message is never queued twice and never recorded without its webhook.

The high-water mark of each chat is a time up to which every message of the chat is known
to be recorded: the catch-up reads each chat back to it, and skips the chats that did not
change since. A catch-up that read a chat back to its mark moves the mark; messages the page
reports move it only while no gap can exist (after a complete catch-up, until the session
next leaves `ready`), so a message lost in a crash is never passed over by newer ones.
`since` is when this volume first saw a ready session, so a fresh link does not replay the
account's whole history to Rails.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .outbox import Outbox
from .store import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS incoming_messages (
    id TEXT PRIMARY KEY,
    chat TEXT NOT NULL,
    t INTEGER,
    recorded_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS incoming_messages_recorded ON incoming_messages (recorded_at);
CREATE TABLE IF NOT EXISTS incoming_chats (chat TEXT PRIMARY KEY, last_t INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS inbox_meta (name TEXT PRIMARY KEY, value REAL NOT NULL);
"""
KEEP_IDS_SECONDS = 14 * 24 * 3600.0  # far beyond any catch-up window

# Message types that are WhatsApp's own, not a customer's words (wa-js chat.new_message
# carries them all: src/chat/events/registerNewMessageEvent.ts L30-38).
NOT_FROM_CUSTOMERS = frozenset(
    {
        "ciphertext",
        "e2e_notification",
        "notification",
        "notification_template",
        "gp2",
        "protocol",
        "call_log",
        "broadcast_notification",
        "revoked",
    }
)


def is_customer_message(message: dict[str, Any]) -> bool:
    """A message someone sent to the business: not its own, no notification, no status, no
    undecrypted placeholder (it comes again, decrypted, under the same id)."""
    return not (
        message.get("fromMe")
        or message.get("isNotification")
        or message.get("isStatus")
        or message.get("type") in NOT_FROM_CUSTOMERS
    )


class Inbox:
    def __init__(
        self,
        db: Database | str | Path,
        outbox: Outbox,
        published: Callable[[dict[str, Any]], object],
    ) -> None:
        """`published(message)` runs for each newly accepted message (the event bus)."""
        self._db = Database.of(db, SCHEMA)
        self._outbox = outbox
        self._published = published
        self._marks_follow_live = False  # True only between a complete catch-up and a crash

    @property
    def live(self) -> bool:
        """A complete catch-up ran since the session last became ready: nothing missed."""
        return self._marks_follow_live

    def follow_live(self, follow: bool) -> None:
        """Whether messages reported by the page may move the high-water marks."""
        self._marks_follow_live = follow

    def accept(self, message: dict[str, Any], on_error: Callable[[Exception], object]) -> None:
        """Records a customer message and queues its webhook, on the database's writer thread
        in the order the page reported them (the page's callback and the event loop go on at
        once); announced once committed, unless it was known or is not a customer's. A
        message lost before its commit (a crash) is found by the next catch-up: its chat's
        mark moves only in that commit. A write that fails goes to `on_error`."""
        if not is_customer_message(message):
            return
        move = self._marks_follow_live
        self._db.write_soon(
            lambda c: self._accept_in(c, message, move_mark=move),
            lambda new: self._announce([message] if new else []),
            on_error,
        )

    async def accept_all(self, messages: Iterable[dict[str, Any]]) -> int:
        """`accept` for messages found by the catch-up, oldest first, in one transaction."""
        wanted = sorted(
            (m for m in messages if is_customer_message(m)), key=lambda m: m.get("timestamp") or 0
        )
        new = await self._db.run(
            lambda c: [m for m in wanted if self._accept_in(c, m, move_mark=False)]
        )
        self._announce(new)
        return len(new)

    async def caught_up(self, marks: dict[str, int]) -> None:
        """Moves the marks of chats the catch-up read back to their old mark."""

        def work(c: sqlite3.Connection) -> None:
            for chat, t in marks.items():
                _move_mark(c, chat, t)

        await self._db.run(work)

    async def since(self) -> float:
        """When this volume first had a ready session (set on the first call)."""

        def work(c: sqlite3.Connection) -> float:
            c.execute(
                "INSERT OR IGNORE INTO inbox_meta (name, value) VALUES ('since', ?)",
                (time.time(),),
            )
            return c.execute("SELECT value FROM inbox_meta WHERE name = 'since'").fetchone()[0]

        return await self._db.run(work)

    async def high_waters(self) -> dict[str, int]:
        """The newest message time recorded per chat."""
        rows = await self._db.run(
            lambda c: c.execute("SELECT chat, last_t FROM incoming_chats").fetchall()
        )
        return dict(rows)

    def _accept_in(self, c: sqlite3.Connection, message: dict[str, Any], move_mark: bool) -> bool:
        chat = message.get("from") or ""
        t = int(message.get("timestamp") or 0)
        now = time.time()
        c.execute("DELETE FROM incoming_messages WHERE recorded_at < ?", (now - KEEP_IDS_SECONDS,))
        inserted = c.execute(
            "INSERT OR IGNORE INTO incoming_messages (id, chat, t, recorded_at)"
            " VALUES (?, ?, ?, ?)",
            (message["id"], chat, t, now),
        ).rowcount
        if not inserted:
            return False
        if move_mark:
            _move_mark(c, chat, t)
        self._outbox.enqueue_in(c, "message", message, event_id=message["id"])
        return True

    def _announce(self, messages: list[dict[str, Any]]) -> None:
        if messages:
            self._outbox.notify()
        for message in messages:
            self._published(message)


def _move_mark(c: sqlite3.Connection, chat: str, t: int) -> None:
    c.execute(
        "INSERT INTO incoming_chats (chat, last_t) VALUES (?, ?)"
        " ON CONFLICT (chat) DO UPDATE SET last_t = max(last_t, excluded.last_t)",
        (chat, t),
    )
