"""Idempotency keys for /send_message: the same key within the TTL (24 h) answers with the
first result and reaches WhatsApp once, also across crashes of the browser and the pod.

Use `claim`: it serialises identical keys inside the process (the second request waits for
the first and gets its answer) and persists a reservation before anything is sent:

    async with store.claim(key, request_hash) as claim:
        if claim.response is not None:
            return claim.response          # answered before
        if claim.message_id is not None:
            ...                            # sent before with an outcome unknown: resolve it
        ... choose the message id; store.bind_in(c, key, id) in the ledger's transaction
        ... send; store.complete_in(c, key, response) with the attempt's outcome

Leaving the block with an exception before a message id is bound releases the key (nothing
was sent), so the client may retry. Once bound, the reservation stays until the key has an
answer: whatever crashes, a retry resolves that one message id and never sends another.
One process uses a database (the pod's volume): a reservation without a message id left by
an earlier process is taken over, since nothing was sent under it.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .locks import KeyedLocks
from .store import Database

DAY = 24 * 3600.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    response TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at);
"""
KEY_COLUMNS = {"message_id": "TEXT"}  # the ledger message the key was sent as


class IdempotencyMismatch(Exception):
    """The key was used before with a different request."""


@dataclass
class Claim:
    key: str
    response: dict[str, Any] | None  # the stored answer, when the key was answered before
    message_id: str | None  # the ledger message sent under the key, when one was chosen
    _store: IdempotencyStore

    async def complete(self, response: dict[str, Any]) -> None:
        """Stores the answer on its own (no ledger write goes with it)."""
        await self._store.put(self.key, response)


class IdempotencyStore:
    def __init__(self, db: Database | str | Path, ttl_seconds: float = DAY) -> None:
        """Raises DeliveryDatabaseError when the database is corrupt or unwritable."""
        self._db = Database.of(db, SCHEMA)
        self._db.add_columns("idempotency_keys", KEY_COLUMNS)
        self._ttl = ttl_seconds
        self._locks = KeyedLocks()

    async def get(self, key: str) -> dict[str, Any] | None:
        """The response stored for `key` within the TTL, else None."""
        row = await self._db.run(
            lambda c: c.execute(
                "SELECT response FROM idempotency_keys WHERE key = ? AND created_at > ?"
                " AND response IS NOT NULL",
                (key, time.time() - self._ttl),
            ).fetchone()
        )
        return None if row is None else json.loads(row[0])

    async def put(self, key: str, response: dict[str, Any]) -> None:
        """Stores `response` for `key` (keeping the time of the key's first use)."""
        await self._db.run(lambda c: self.complete_in(c, key, response))

    def complete_in(self, c: sqlite3.Connection, key: str, response: dict[str, Any]) -> None:
        """The key's answer, inside the caller's transaction."""
        body = json.dumps(response, separators=(",", ":"))
        c.execute(
            "INSERT INTO idempotency_keys (key, request_hash, response, created_at)"
            " VALUES (?, '', ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET response = excluded.response",
            (key, body, time.time()),
        )

    def first_answer_in(
        self, c: sqlite3.Connection, key: str, response: dict[str, Any]
    ) -> dict[str, Any]:
        """The key's stored answer, or `response` stored as it when it has none: a key never
        gets a second, different answer."""
        row = c.execute("SELECT response FROM idempotency_keys WHERE key = ?", (key,)).fetchone()
        if row is not None and row[0] is not None:
            return json.loads(row[0])
        self.complete_in(c, key, response)
        return response

    def bind_in(self, c: sqlite3.Connection, key: str, message_id: str) -> None:
        """Ties the reservation to the message about to be sent, inside the ledger's
        transaction: from here on the key is never released."""
        c.execute("UPDATE idempotency_keys SET message_id = ? WHERE key = ?", (message_id, key))

    def message_of(self, c: sqlite3.Connection, message_id: str) -> str | None:
        """The key a message was sent under and still owes an answer, if any."""
        row = c.execute(
            "SELECT key FROM idempotency_keys WHERE message_id = ? AND response IS NULL",
            (message_id,),
        ).fetchone()
        return None if row is None else row[0]

    @contextlib.asynccontextmanager
    async def claim(self, key: str, request_hash: str = "") -> AsyncIterator[Claim]:
        """See the module docstring. `request_hash` (e.g. sha256 of receiver + body) makes a
        reuse of the key for a different request raise IdempotencyMismatch."""
        async with self._locks.hold(key):
            response, message_id = await self._db.run(lambda c: self._reserve(c, key, request_hash))
            claim = Claim(key, response, message_id, self)
            try:
                yield claim
            finally:
                if response is None and message_id is None:
                    # Synchronous on purpose: this also runs when the request is cancelled.
                    self._db.transact(
                        lambda c: c.execute(
                            "DELETE FROM idempotency_keys WHERE key = ? AND response IS NULL"
                            " AND message_id IS NULL",
                            (key,),
                        )
                    )

    def close(self) -> None:
        self._db.close()

    def _reserve(
        self, c: sqlite3.Connection, key: str, request_hash: str
    ) -> tuple[dict[str, Any] | None, str | None]:
        c.execute("DELETE FROM idempotency_keys WHERE created_at <= ?", (time.time() - self._ttl,))
        row = c.execute(
            "SELECT request_hash, response, message_id FROM idempotency_keys WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None:
            c.execute(
                "INSERT INTO idempotency_keys (key, request_hash, response, created_at)"
                " VALUES (?, ?, NULL, ?)",
                (key, request_hash, time.time()),
            )
            return None, None
        stored_hash, response, message_id = row
        if stored_hash and request_hash and stored_hash != request_hash:
            raise IdempotencyMismatch(f"idempotency key {key!r} was used for another request")
        return (None if response is None else json.loads(response)), message_id
