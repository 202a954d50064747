"""Idempotency keys for /send_message: the same key within the TTL (24 h) answers with the
first result and never sends twice, also across a process restart.

Use `claim`: it serialises identical keys inside the process (the second request waits for
the first and gets its answer) and persists a reservation before the send, so a request
interrupted by a crash is never silently sent again.

    async with store.claim(key, request_hash) as claim:
        if claim.response is not None:
            return claim.response          # answered before
        response = await send(...)
        await claim.complete(response)     # as soon as there is a result

Leaving the block with an exception before `complete` releases the key, so the client can
retry. A reservation left by a crashed process (outcome unknown) raises IdempotencyConflict
until it expires: the caller answers 409 rather than risking a second send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


class IdempotencyConflict(Exception):
    """The key is reserved by a request that did not finish (it was interrupted by a crash, or
    runs in another process): it may or may not have been sent."""


class IdempotencyMismatch(Exception):
    """The key was used before with a different request."""


@dataclass
class Claim:
    key: str
    response: dict[str, Any] | None  # the stored answer, when the key was used before
    _store: IdempotencyStore
    completed: bool = False

    async def complete(self, response: dict[str, Any]) -> None:
        await self._store.put(self.key, response)
        self.completed = True


class IdempotencyStore:
    def __init__(self, db_path: str | Path, ttl_seconds: float = DAY) -> None:
        """Raises OutboxError when the database is corrupt or unwritable."""
        self._db = Database.open(db_path, SCHEMA)
        self._ttl = ttl_seconds
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

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
        body = json.dumps(response, separators=(",", ":"))
        await self._db.run(
            lambda c: c.execute(
                "INSERT INTO idempotency_keys (key, request_hash, response, created_at)"
                " VALUES (?, '', ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET response = excluded.response",
                (key, body, time.time()),
            )
        )

    @contextlib.asynccontextmanager
    async def claim(self, key: str, request_hash: str = "") -> AsyncIterator[Claim]:
        """See the module docstring. `request_hash` (e.g. sha256 of receiver + body) makes a
        reuse of the key for a different request raise IdempotencyMismatch."""
        async with self._hold(key):
            response = await self._db.run(lambda c: self._reserve(c, key, request_hash))
            claim = Claim(key, response, self)
            try:
                yield claim
            finally:
                if response is None and not claim.completed:
                    # Synchronous on purpose: this also runs when the request is cancelled.
                    self._db.transact(
                        lambda c: c.execute(
                            "DELETE FROM idempotency_keys WHERE key = ? AND response IS NULL",
                            (key,),
                        )
                    )

    def close(self) -> None:
        self._db.close()

    def _reserve(self, c: sqlite3.Connection, key: str, request_hash: str) -> dict[str, Any] | None:
        c.execute("DELETE FROM idempotency_keys WHERE created_at <= ?", (time.time() - self._ttl,))
        row = c.execute(
            "SELECT request_hash, response FROM idempotency_keys WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            c.execute(
                "INSERT INTO idempotency_keys (key, request_hash, response, created_at)"
                " VALUES (?, ?, NULL, ?)",
                (key, request_hash, time.time()),
            )
            return None
        stored_hash, response = row
        if stored_hash and request_hash and stored_hash != request_hash:
            raise IdempotencyMismatch(f"idempotency key {key!r} was used for another request")
        if response is None:
            raise IdempotencyConflict(f"idempotency key {key!r} has an unfinished request")
        return json.loads(response)

    @contextlib.asynccontextmanager
    async def _hold(self, key: str) -> AsyncIterator[None]:
        """A per-key lock, forgotten when nobody holds or waits for it."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
