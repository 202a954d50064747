"""The delivery database: one SQLite file on the pod's volume (WAL, fsync on every commit).

The pod opens it once and every store (outbox, ledger, idempotency keys, inbox) uses that
one connection, so a send's reservation, its ledger entry and its answer can be written in
one transaction. The connection is shared by threads under a lock; async callers run
statements in a worker thread so the event loop never waits on the disk. Writes the loop does
not wait for (`write_soon`) go through one writer thread, in the order they were handed over.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class DeliveryDatabaseError(RuntimeError):
    """The delivery database cannot be opened or written: events or records would be lost."""


class Database:
    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._lock = threading.Lock()
        self._writer = concurrent.futures.ThreadPoolExecutor(1, "delivery-db-writer")

    @classmethod
    def open(cls, path: str | Path, schema: str) -> Database:
        """Opens (creating if needed) the file, checks it is a sound SQLite database, applies
        `schema` (idempotent DDL). Raises DeliveryDatabaseError on anything that would lose
        data later."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5)
        except (OSError, sqlite3.Error) as exc:
            raise DeliveryDatabaseError(f"cannot open delivery database {path}: {exc}") from exc
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise DeliveryDatabaseError(
                    f"delivery database {path} cannot use WAL (got {mode!r})"
                )
            # FULL: a committed event survives power loss, not only a crash (~0.3 ms a commit).
            conn.execute("PRAGMA synchronous=FULL")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise DeliveryDatabaseError(f"delivery database {path} is corrupt: {check}")
            conn.executescript(schema)
        except (OSError, sqlite3.Error, DeliveryDatabaseError) as exc:
            conn.close()
            if isinstance(exc, DeliveryDatabaseError):
                raise
            raise DeliveryDatabaseError(f"cannot use delivery database {path}: {exc}") from exc
        return cls(path, conn)

    @classmethod
    def of(cls, source: Database | str | Path, schema: str) -> Database:
        """The shared database with `schema` applied, or a database of its own at a path."""
        if isinstance(source, Database):
            source.apply(schema)
            return source
        return cls.open(source, schema)

    def apply(self, schema: str) -> None:
        """Idempotent DDL; raises DeliveryDatabaseError when the file cannot take it."""
        with self._lock:
            try:
                self._conn.executescript(schema)
            except sqlite3.Error as exc:
                raise DeliveryDatabaseError(
                    f"cannot use delivery database {self.path}: {exc}"
                ) from exc

    def add_columns(self, table: str, columns: dict[str, str]) -> None:
        """Adds the columns a database written by an older version lacks."""
        with self._lock:
            have = {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}
            for name, declaration in columns.items():
                if name not in have:
                    self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")

    def transact(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Runs `work` in one IMMEDIATE transaction, committed before returning."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(self._conn)
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                raise DeliveryDatabaseError(f"delivery database {self.path} failed: {exc}") from exc

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`transact` in a worker thread."""
        return await asyncio.to_thread(self.transact, work)

    def write_soon(
        self,
        work: Callable[[sqlite3.Connection], T],
        then: Callable[[T], object],
        on_error: Callable[[Exception], object],
    ) -> None:
        """`transact(work)` on the writer thread, after every write handed over before it;
        the event loop goes on at once. Afterwards `then(result)`, or `on_error(error)` (a
        DeliveryDatabaseError when SQLite refused), runs on the calling loop."""
        loop = asyncio.get_running_loop()

        def done(future: concurrent.futures.Future[T]) -> None:
            error = future.exception()
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                if isinstance(error, Exception):
                    loop.call_soon_threadsafe(on_error, error)
                else:
                    loop.call_soon_threadsafe(then, future.result())

        self._writer.submit(self.transact, work).add_done_callback(done)

    def flush(self) -> None:
        """Waits until every write handed over has been done."""
        self._writer.submit(lambda: None).result()

    def close(self) -> None:
        """Finishes the writes handed over, then closes the file."""
        self._writer.shutdown(wait=True)
        with self._lock:
            self._conn.close()
