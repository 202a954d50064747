"""Message ledger: every message the pod sends, its acks with their times, and its resends.

Ids: a message is known by the WhatsApp id of its FIRST send (`MessageRecord.id`, the id
/send_message answered with). The pod chooses each id BEFORE it sends (wa-js
`SendMessageOptions.messageId`) and writes it here first (`begin_in`), with the attempt's
outcome `unknown`; the send's result turns it into `sent` or `failed` (`finish_in`). An
attempt still `unknown` after a crash is resolved by looking its id up in WhatsApp Web
(`unresolved`). A resend gets a new WhatsApp id, linked to the same record (`message_ids`,
newest last; `current_id` is the newest). Acks and lookups accept any of those ids, by
WhatsApp's key id too: receipts may address the chat by LID (`...@lid`) where the message was
sent to a phone number, or the other way round.

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
from collections.abc import Callable
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
# Columns added after the first release: databases of older pods get them on open.
MESSAGE_COLUMNS = {"chat": "TEXT", "idempotency_key": "TEXT"}
ATTEMPT_COLUMNS = {
    "key_id": "TEXT",
    # unknown (chosen, maybe sent), sent (WhatsApp has it), failed (WhatsApp refused it)
    "outcome": "TEXT NOT NULL DEFAULT 'sent'",
    # must an attempt whose outcome is unknown be sent if WhatsApp does not have it? Yes for a
    # keyed send, a send already answered as queued, and a resend; no for a send without a
    # key that was answered with an error (the client decides).
    "must_deliver": "INTEGER NOT NULL DEFAULT 0",
    "result": "TEXT",
    "created_at": "REAL",
}
OUTCOMES = ("unknown", "sent", "failed")

_COLUMNS = (
    "id, receiver, body_sha256, created_at, attempts, last_attempt_at, current_id, ack, ack_at,"
    " status, body, chat, idempotency_key"
)


# An attempt whose outcome is unknown belongs to the resolver: neither resent nor given up.
_CURRENT_ATTEMPT_KNOWN = (
    "current_id NOT IN (SELECT wa_id FROM message_ids WHERE outcome = 'unknown')"
)


def key_id(wa_id: str) -> str:
    """The random part of a serialized message key `true_<remote>_<id>[_<participant>]`:
    the same whichever way WhatsApp addresses the chat."""
    parts = wa_id.split("_")
    return parts[2] if len(parts) >= 3 else wa_id


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
    chat: str | None = None  # the chat it was sent in, as WhatsApp Web named it (maybe @lid)
    idempotency_key: str | None = None
    message_ids: tuple[str, ...] = ()
    acks: tuple[AckEntry, ...] = ()
    current_outcome: str = "sent"

    def as_dict(self) -> dict[str, Any]:
        """For the API: everything except the body."""
        data = asdict(self)
        del data["body"], data["idempotency_key"]
        return data


@dataclass(frozen=True)
class Attempt:
    """One send of a message whose outcome is not known yet."""

    wa_id: str
    message: MessageRecord
    must_deliver: bool


class MessageLedger:
    def __init__(self, db: Database | str | Path) -> None:
        """Raises DeliveryDatabaseError when the database is corrupt or unwritable."""
        self._db = Database.of(db, SCHEMA)
        self._db.add_columns("messages", MESSAGE_COLUMNS)
        self._db.add_columns("message_ids", ATTEMPT_COLUMNS)
        self._db.apply(
            "CREATE INDEX IF NOT EXISTS message_ids_key ON message_ids (key_id);"
            "CREATE INDEX IF NOT EXISTS message_ids_outcome ON message_ids (outcome);"
        )

    @property
    def db(self) -> Database:
        return self._db

    def begin_in(
        self,
        c: sqlite3.Connection,
        message_id: str,
        receiver: str,
        chat: str,
        body: str,
        *,
        must_deliver: bool,
        idempotency_key: str | None = None,
    ) -> MessageRecord:
        """A new message about to be sent with the id chosen for it: status pending, first
        attempt `unknown`. Part of the caller's transaction."""
        now = time.time()
        c.execute(
            "INSERT INTO messages (id, receiver, body_sha256, body, created_at, last_attempt_at,"
            " current_id, ack, ack_at, status, chat, idempotency_key)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, 'pending', ?, ?)",
            (
                message_id,
                receiver,
                hashlib.sha256(body.encode()).hexdigest(),
                body,
                now,
                now,
                message_id,
                chat,
                idempotency_key,
            ),
        )
        _add_attempt(c, message_id, message_id, 1, must_deliver)
        return _load(c, message_id)

    def add_attempt_in(self, c: sqlite3.Connection, ledger_id: str, wa_id: str) -> MessageRecord:
        """A resend about to go out under `wa_id`: one more attempt (it restarts the
        deadline), outcome `unknown`, to be delivered whatever happens."""
        c.execute(
            "UPDATE messages SET attempts = attempts + 1, last_attempt_at = ?, current_id = ?"
            " WHERE id = ?",
            (time.time(), wa_id, ledger_id),
        )
        (attempts,) = c.execute(
            "SELECT attempts FROM messages WHERE id = ?", (ledger_id,)
        ).fetchone()
        _add_attempt(c, ledger_id, wa_id, attempts, True)
        return _load(c, ledger_id)

    def finish_in(
        self,
        c: sqlite3.Connection,
        wa_id: str,
        outcome: str,
        ack: int | None = None,
        result: str | None = None,
    ) -> MessageRecord:
        """The outcome of one attempt: `sent` (with the ack WhatsApp reported) or `failed`
        (WhatsApp refused it: the message fails unless an earlier attempt got through)."""
        if outcome not in ("sent", "failed"):
            raise ValueError(f"an attempt ends sent or failed, not {outcome!r}")
        ledger_id = _resolve(c, wa_id)
        if ledger_id is None:
            raise KeyError(wa_id)
        c.execute(
            "UPDATE message_ids SET outcome = ?, result = ? WHERE wa_id = ?",
            (outcome, result, wa_id),
        )
        if outcome == "failed":
            _apply_ack(c, ledger_id, wa_id, ACK_FAILED, time.time())
        elif ack is not None:
            _apply_ack(c, ledger_id, wa_id, ack, time.time())
        return _load(c, ledger_id)

    def must_deliver_in(self, c: sqlite3.Connection, wa_id: str) -> None:
        """The client was told the message is queued: it is owed, whatever crashes."""
        c.execute("UPDATE message_ids SET must_deliver = 1 WHERE wa_id = ?", (wa_id,))

    async def unresolved(self, max_age_seconds: float = 24 * 3600.0) -> list[Attempt]:
        """Attempts whose outcome is unknown (a crash, a timeout, an answer still awaited),
        oldest first."""

        def work(c: sqlite3.Connection) -> list[Attempt]:
            rows = c.execute(
                "SELECT wa_id, message_id, must_deliver FROM message_ids"
                " WHERE outcome = 'unknown' AND coalesce(created_at, 0) > ?"
                " ORDER BY created_at",
                (time.time() - max_age_seconds,),
            ).fetchall()
            return [Attempt(wa, _load(c, ledger_id), bool(must)) for wa, ledger_id, must in rows]

        return await self._db.run(work)

    async def open_messages(self, limit: int = 200) -> list[MessageRecord]:
        """The newest messages still short of RECEIVED whose last attempt went out: their
        acks may have changed while the pod was away."""

        def work(c: sqlite3.Connection) -> list[MessageRecord]:
            rows = c.execute(
                "SELECT m.id FROM messages m JOIN message_ids a ON a.wa_id = m.current_id"
                " WHERE m.status IN ('pending', 'sent') AND a.outcome = 'sent'"
                " ORDER BY m.created_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [_load(c, row[0]) for row in rows]

        return await self._db.run(work)

    async def owed(
        self, horizon_seconds: float, now: float | None = None
    ) -> tuple[int, float | None]:
        """(messages short of RECEIVED last attempted within `horizon_seconds` of `now`: the
        watchdog may still resend them or their outcome is being resolved; the time of the
        newest attempt of any message, None for an empty ledger). What keeps a session
        awake."""
        cutoff = (time.time() if now is None else now) - horizon_seconds

        def work(c: sqlite3.Connection) -> tuple[int, float | None]:
            (owed,) = c.execute(
                "SELECT count(*) FROM messages WHERE status IN ('pending', 'sent')"
                " AND last_attempt_at > ?",
                (cutoff,),
            ).fetchone()
            (newest,) = c.execute("SELECT max(last_attempt_at) FROM messages").fetchone()
            return owed, newest

        return await self._db.run(work)

    async def record_ack(
        self,
        wa_id: str,
        ack: int,
        at: float | None = None,
        within: Callable[[sqlite3.Connection, MessageRecord | None], None] | None = None,
    ) -> MessageRecord | None:
        """Stores an ack of any attempt; None when the id is not in the ledger. Acks only move
        the status forward, except FAILED on the current attempt of a message not yet received.
        An ack >= SENT proves an attempt of unknown outcome reached WhatsApp. `within(c,
        record)` runs in the same transaction (the ack's webhook is queued with it)."""
        when = time.time() if at is None else at

        def work(c: sqlite3.Connection) -> MessageRecord | None:
            record = _ack_in(c, wa_id, ack, when)
            if within is not None:
                within(c, record)
            return record

        return await self._db.run(work)

    async def record_attempt(self, message_id: str) -> MessageRecord:
        """Counts a resend that failed before it had an id, so attempts stay bounded."""
        now = time.time()

        def work(c: sqlite3.Connection) -> MessageRecord:
            ledger_id = _resolve(c, message_id)
            if ledger_id is None:
                raise KeyError(message_id)
            c.execute(
                "UPDATE messages SET attempts = attempts + 1, last_attempt_at = ? WHERE id = ?",
                (now, ledger_id),
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
            lambda c: _stalled(
                c,
                cutoff,
                f"attempts < ? AND body IS NOT NULL AND {_CURRENT_ATTEMPT_KNOWN}",
                max_attempts,
            )
        )

    async def give_up(
        self, deadline_seconds: float, max_attempts: int, now: float | None = None
    ) -> list[MessageRecord]:
        """Marks `stuck` (and returns) the messages short of RECEIVED `deadline_seconds` after
        their last allowed attempt."""
        cutoff = (time.time() if now is None else now) - deadline_seconds

        def work(c: sqlite3.Connection) -> list[MessageRecord]:
            stalled = _stalled(
                c, cutoff, f"attempts >= ? AND {_CURRENT_ATTEMPT_KNOWN}", max_attempts
            )
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


def _add_attempt(
    c: sqlite3.Connection, ledger_id: str, wa_id: str, attempt: int, must_deliver: bool
) -> None:
    c.execute(
        "INSERT INTO message_ids (wa_id, message_id, attempt, key_id, outcome, must_deliver,"
        " created_at) VALUES (?, ?, ?, ?, 'unknown', ?, ?)",
        (wa_id, ledger_id, attempt, key_id(wa_id), int(must_deliver), time.time()),
    )


def _find_attempt(c: sqlite3.Connection, wa_id: str) -> tuple[str, str] | None:
    """(the attempt's id as the ledger stores it, its message) for an id that may name the
    chat otherwise (a receipt under a LID): by the exact id, else by the key's id."""
    query = "SELECT wa_id, message_id FROM message_ids WHERE "
    row = c.execute(query + "wa_id = ?", (wa_id,)).fetchone()
    if row is None:
        row = c.execute(query + "key_id = ?", (key_id(wa_id),)).fetchone()
    return None if row is None else (row[0], row[1])


def _resolve(c: sqlite3.Connection, wa_id: str) -> str | None:
    found = _find_attempt(c, wa_id)
    return None if found is None else found[1]


def _apply_ack(c: sqlite3.Connection, ledger_id: str, wa_id: str, ack: int, when: float) -> None:
    _log_ack(c, ledger_id, wa_id, ack, when)
    record = _load(c, ledger_id)
    if _advances(record, wa_id, ack):
        status = status_for(ack)
        c.execute(
            "UPDATE messages SET ack = ?, ack_at = ?, status = ?,"
            " body = CASE WHEN ? THEN body END WHERE id = ?",
            (ack, when, status, status in RESENDABLE, ledger_id),
        )


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
    (outcome,) = c.execute(
        "SELECT outcome FROM message_ids WHERE wa_id = ?", (row[6],)
    ).fetchone() or ("sent",)
    return MessageRecord(
        *row,
        message_ids=tuple(r[0] for r in ids),
        acks=tuple(AckEntry(*a) for a in acks),
        current_outcome=outcome,
    )


def _ack_in(c: sqlite3.Connection, wa_id: str, ack: int, when: float) -> MessageRecord | None:
    found = _find_attempt(c, wa_id)
    if found is None:
        return None
    attempt, ledger_id = found
    if ack >= ACK_SENT:
        c.execute(
            "UPDATE message_ids SET outcome = 'sent' WHERE wa_id = ? AND outcome = 'unknown'",
            (attempt,),
        )
    _apply_ack(c, ledger_id, attempt, ack, when)
    return _load(c, ledger_id)
