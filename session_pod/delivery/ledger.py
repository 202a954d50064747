"""Message ledger: every message the pod sends, its acks with their times, and its resends.

Ids: a message is known by the WhatsApp id of its FIRST send (`MessageRecord.id`, the id
/send_message answered with). A resend gets a new WhatsApp id; `record_attempt` links it to
the same record (`message_ids`, newest last; `current_id` is the newest). Acks and lookups
accept any of those ids, and an ack >= RECEIVED of any attempt counts for the message.

Status, from the best ack so far (ack values are wa-js's):
    pending   no ack yet, or 0 CLOCK (not yet on WhatsApp's server)
    sent      1 SENT (server has it: one tick)
    received  2 RECEIVED (delivered to the phone: two ticks)
    read      3 READ or 4 PLAYED
    failed    -1 FAILED (WhatsApp refused it; not resent)
    stuck     not RECEIVED within the deadline after the last allowed attempt (given up)

The body is kept only while the message may still be resent (pending/sent), so the watchdog
can resend it after a restart; it is erased on any other status. The sha256 stays.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .store import Database

ACK_FAILED, ACK_CLOCK, ACK_SENT, ACK_RECEIVED, ACK_READ, ACK_PLAYED = -1, 0, 1, 2, 3, 4
STATUSES = ("pending", "sent", "received", "read", "failed", "stuck")
RESENDABLE = ("pending", "sent")

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    receiver TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    body TEXT,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    last_attempt_at REAL NOT NULL,
    current_id TEXT NOT NULL,
    ack INTEGER,
    ack_at REAL,
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_status ON messages (status, last_attempt_at);
CREATE INDEX IF NOT EXISTS messages_created ON messages (created_at);
CREATE TABLE IF NOT EXISTS message_ids (
    wa_id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL,
    attempt INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS message_ids_message ON message_ids (message_id, attempt);
CREATE TABLE IF NOT EXISTS message_acks (
    message_id TEXT NOT NULL,
    wa_id TEXT NOT NULL,
    ack INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS message_acks_message ON message_acks (message_id, at);
"""

_COLUMNS = (
    "id, receiver, body_sha256, created_at, attempts, last_attempt_at, current_id, ack, ack_at,"
    " status, body"
)


def status_for(ack: int | None) -> str:
    if ack is None or ack == ACK_CLOCK:
        return "pending"
    if ack == ACK_FAILED:
        return "failed"
    if ack == ACK_SENT:
        return "sent"
    return "received" if ack == ACK_RECEIVED else "read"


@dataclass(frozen=True)
class AckEntry:
    message_id: str  # the WhatsApp id of the attempt this ack is about
    ack: int
    at: float


@dataclass(frozen=True)
class MessageRecord:
    id: str
    receiver: str
    body_sha256: str
    created_at: float
    attempts: int
    last_attempt_at: float
    current_id: str
    ack: int | None
    ack_at: float | None
    status: str
    body: str | None
    message_ids: tuple[str, ...] = ()
    acks: tuple[AckEntry, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """For the API: everything except the body."""
        data = asdict(self)
        del data["body"]
        return data


class MessageLedger:
    def __init__(self, db_path: str | Path) -> None:
        """Raises OutboxError when the database is corrupt or unwritable."""
        self._db = Database.open(db_path, SCHEMA)

    async def record(
        self, message_id: str, receiver: str, body: str, ack: int | None = None
    ) -> MessageRecord:
        """Records a message just sent (first attempt). Recording the same id again is a no-op."""
        now = time.time()
        digest = hashlib.sha256(body.encode()).hexdigest()
        status = status_for(ack)

        def work(c: sqlite3.Connection) -> MessageRecord:
            inserted = c.execute(
                "INSERT INTO messages (id, receiver, body_sha256, body, created_at,"
                " last_attempt_at, current_id, ack, ack_at, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (
                    message_id,
                    receiver,
                    digest,
                    body if status in RESENDABLE else None,
                    now,
                    now,
                    message_id,
                    ack,
                    None if ack is None else now,
                    status,
                ),
            ).rowcount
            if inserted:
                c.execute(
                    "INSERT INTO message_ids (wa_id, message_id, attempt) VALUES (?, ?, 1)",
                    (message_id, message_id),
                )
                if ack is not None:
                    _log_ack(c, message_id, message_id, ack, now)
            return _load(c, message_id)

        return await self._db.run(work)

    async def record_ack(
        self, wa_id: str, ack: int, at: float | None = None
    ) -> MessageRecord | None:
        """Stores an ack of any attempt; None when the id is not in the ledger. Acks only move
        the status forward, except FAILED on the current attempt of a message not yet received."""
        when = time.time() if at is None else at

        def work(c: sqlite3.Connection) -> MessageRecord | None:
            message_id = _resolve(c, wa_id)
            if message_id is None:
                return None
            _log_ack(c, message_id, wa_id, ack, when)
            record = _load(c, message_id)
            if _advances(record, wa_id, ack):
                status = status_for(ack)
                c.execute(
                    "UPDATE messages SET ack = ?, ack_at = ?, status = ?,"
                    " body = CASE WHEN ? THEN body END WHERE id = ?",
                    (ack, when, status, status in RESENDABLE, message_id),
                )
                record = _load(c, message_id)
            return record

        return await self._db.run(work)

    async def record_attempt(
        self, message_id: str, new_message_id: str | None = None
    ) -> MessageRecord:
        """Counts one more send of the message (any of its ids), restarting its deadline;
        `new_message_id` (the resend's WhatsApp id) becomes its current id. A failed resend
        (no new id) still counts, so attempts stay bounded."""
        now = time.time()

        def work(c: sqlite3.Connection) -> MessageRecord:
            ledger_id = _resolve(c, message_id)
            if ledger_id is None:
                raise KeyError(message_id)
            c.execute(
                "UPDATE messages SET attempts = attempts + 1, last_attempt_at = ? WHERE id = ?",
                (now, ledger_id),
            )
            if new_message_id is not None:
                (attempts,) = c.execute(
                    "SELECT attempts FROM messages WHERE id = ?", (ledger_id,)
                ).fetchone()
                c.execute(
                    "INSERT OR IGNORE INTO message_ids (wa_id, message_id, attempt)"
                    " VALUES (?, ?, ?)",
                    (new_message_id, ledger_id, attempts),
                )
                c.execute(
                    "UPDATE messages SET current_id = ? WHERE id = ?", (new_message_id, ledger_id)
                )
            return _load(c, ledger_id)

        return await self._db.run(work)

    async def get(self, message_id: str) -> MessageRecord | None:
        """By the first or any later WhatsApp id of the message."""

        def work(c: sqlite3.Connection) -> MessageRecord | None:
            ledger_id = _resolve(c, message_id)
            return None if ledger_id is None else _load(c, ledger_id)

        return await self._db.run(work)

    async def list(self, status: str | None = None, limit: int = 100) -> list[MessageRecord]:
        """Newest first; `status` one of STATUSES (ValueError otherwise) or None for all."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")

        def work(c: sqlite3.Connection) -> list[MessageRecord]:
            ids = c.execute(
                "SELECT id FROM messages WHERE ? IS NULL OR status = ?"
                " ORDER BY created_at DESC LIMIT ?",
                (status, status, limit),
            ).fetchall()
            return [_load(c, row[0]) for row in ids]

        return await self._db.run(work)

    async def due_for_resend(
        self, deadline_seconds: float, max_attempts: int, now: float | None = None
    ) -> list[MessageRecord]:
        """Messages short of RECEIVED `deadline_seconds` after their last send, that may still
        be sent again (attempts < max_attempts), oldest first."""
        cutoff = (time.time() if now is None else now) - deadline_seconds
        return await self._db.run(
            lambda c: _stalled(c, cutoff, "attempts < ? AND body IS NOT NULL", max_attempts)
        )

    async def give_up(
        self, deadline_seconds: float, max_attempts: int, now: float | None = None
    ) -> list[MessageRecord]:
        """Marks `stuck` (and returns) the messages short of RECEIVED `deadline_seconds` after
        their last allowed attempt."""
        cutoff = (time.time() if now is None else now) - deadline_seconds

        def work(c: sqlite3.Connection) -> list[MessageRecord]:
            stalled = _stalled(c, cutoff, "attempts >= ?", max_attempts)
            for record in stalled:
                c.execute(
                    "UPDATE messages SET status = 'stuck', body = NULL WHERE id = ?", (record.id,)
                )
            return [_load(c, record.id) for record in stalled]

        return await self._db.run(work)

    def close(self) -> None:
        self._db.close()


def _advances(record: MessageRecord, wa_id: str, ack: int) -> bool:
    best = record.ack
    if ack >= ACK_RECEIVED:
        return best is None or best < ack
    if record.status in ("received", "read", "stuck", "failed") or wa_id != record.current_id:
        return False
    if ack == ACK_FAILED:
        return True
    return best is None or best < ack


def _resolve(c: sqlite3.Connection, wa_id: str) -> str | None:
    row = c.execute("SELECT message_id FROM message_ids WHERE wa_id = ?", (wa_id,)).fetchone()
    return None if row is None else row[0]


def _log_ack(c: sqlite3.Connection, message_id: str, wa_id: str, ack: int, at: float) -> None:
    c.execute(
        "INSERT INTO message_acks (message_id, wa_id, ack, at) VALUES (?, ?, ?, ?)",
        (message_id, wa_id, ack, at),
    )


def _stalled(c: sqlite3.Connection, cutoff: float, condition: str, arg: int) -> list[MessageRecord]:
    rows = c.execute(
        f"SELECT id FROM messages WHERE status IN ('pending', 'sent') AND last_attempt_at <= ?"
        f" AND {condition} ORDER BY last_attempt_at",
        (cutoff, arg),
    ).fetchall()
    return [_load(c, row[0]) for row in rows]


def _load(c: sqlite3.Connection, ledger_id: str) -> MessageRecord:
    row = c.execute(f"SELECT {_COLUMNS} FROM messages WHERE id = ?", (ledger_id,)).fetchone()
    ids = c.execute(
        "SELECT wa_id FROM message_ids WHERE message_id = ? ORDER BY attempt", (ledger_id,)
    ).fetchall()
    acks = c.execute(
        "SELECT wa_id, ack, at FROM message_acks WHERE message_id = ? ORDER BY at, rowid",
        (ledger_id,),
    ).fetchall()
    return MessageRecord(
        *row, message_ids=tuple(r[0] for r in ids), acks=tuple(AckEntry(*a) for a in acks)
    )
