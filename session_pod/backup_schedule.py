"""When the WhatsApp login is restored and backed up (the storage library says how).

- restore: before the browser first starts; an unavailable store is retried until it
  answers (no QR is shown meanwhile: a fresh profile would ask for one); bad credentials
  are an error the session reports as `failed`;
- backup: once the session is ready and WhatsApp's initial history sync has finished
  (polled, no fixed wait), then every interval while ready, and on shutdown after the
  browser has closed; only while the profile holds a login, so a logged-out profile
  never becomes the newest backup;
- delete: only on an explicit /logout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from whatsapp_common.event_types import EventType
from whatsapp_common.logs import get_logger

from .config import Settings
from .events import EventBus
from .storage import (
    BackupManager,
    BackupRecord,
    RetryPolicy,
    SnapshotError,
    StoreError,
    StoreUnavailable,
    build_store,
)

log = get_logger(__name__)
SyncFinished = Callable[[], Awaitable[bool]]


class BackupSchedule:
    def __init__(self, settings: Settings, bus: EventBus) -> None:
        self._settings = settings
        self._bus = bus
        self._manager = BackupManager(
            build_store(settings.storage),
            settings.storage.prefix,
            settings.location_id,
            settings.storage.keep,
            keys=settings.storage.key_source(),
            retry=RetryPolicy(deadline=None, max_delay=settings.relaunch_backoff_max),
            on_retry=self._store_unavailable,
            settle_seconds=settings.storage.settle_seconds,
        )
        self._lock = asyncio.Lock()
        self._while_ready: asyncio.Task[None] | None = None
        self.last: dict[str, Any] | None = None
        self.store_error: str | None = None

    async def restore(self) -> None:
        """Brings the newest good backup into the profile unless the profile is as new."""
        async with self._lock:
            result = await self._manager.restore(self._settings.profile_dir)
        self.store_error = None
        if result is None:
            log.info("no backup to restore")
            return
        if result.skipped:
            self._bus.publish(
                EventType.BACKUP_FALLBACK,
                {
                    "version": result.version,
                    "skipped": [{"version": s.version, "reason": s.reason} for s in result.skipped],
                },
            )
        if result.restored:
            self._bus.publish(
                EventType.SESSION_RESTORED,
                {
                    "version": result.version,
                    "size": result.size,
                    "duration_seconds": result.duration_seconds,
                },
            )
        if result.version is not None:
            self.last = {"version": result.version, "size": result.size}

    async def backup(self, trigger: str) -> BackupRecord | None:
        """One backup; a failure is reported and left for the next trigger."""
        async with self._lock:
            log.info("backup started", trigger=trigger)
            try:
                record = await self._manager.backup(
                    self._settings.profile_dir, self._settings.whatsapp_web_url
                )
            except (StoreError, SnapshotError, OSError) as exc:
                # Reported and left for the next trigger: the schedule goes on.
                log.error("backup failed", trigger=trigger, error=str(exc))
                self._bus.publish(EventType.BACKUP_FAILED, {"trigger": trigger, "error": str(exc)})
                return None
        self.last = {
            "version": record.version,
            "size": record.size,
            "created": record.created.isoformat(),
        }
        self._bus.publish(
            EventType.REMOTE_SESSION_SAVED,
            {**self.last, "duration_seconds": record.duration_seconds, "trigger": trigger},
        )
        return record

    def session_ready(self, sync_finished: SyncFinished) -> None:
        """Backs up after the initial sync, then periodically, for as long as it is ready."""
        if self._while_ready is None or self._while_ready.done():
            task = asyncio.create_task(self._back_up_while_ready(sync_finished))
            task.add_done_callback(lambda done: self._schedule_ended(done, sync_finished))
            self._while_ready = task

    def _schedule_ended(self, task: asyncio.Task[None], sync_finished: SyncFinished) -> None:
        """The schedule ends only when cancelled; one that broke on an error nobody foresaw
        is said (log, `backup_failed`, counted) and started again after an interval."""
        if task.cancelled() or (error := task.exception()) is None:
            return
        log.error("backup schedule failed; starting it again", error=repr(error))
        self._bus.publish(EventType.BACKUP_FAILED, {"trigger": "schedule", "error": repr(error)})

        def again() -> None:
            if self._while_ready is task:  # still ready, not stopped meanwhile
                self._while_ready = None
                self.session_ready(sync_finished)

        asyncio.get_running_loop().call_later(self._settings.storage.interval_seconds, again)

    def session_not_ready(self) -> None:
        """Stops the schedule; an upload cut short leaves no manifest, so it never counts."""
        task, self._while_ready = self._while_ready, None
        if task is not None:
            task.cancel()

    async def delete_all(self) -> int:
        async with self._lock:
            deleted = await self._manager.delete_all()
        self.last = None
        self._bus.publish(EventType.BACKUPS_DELETED, {"objects": deleted})
        return deleted

    async def _back_up_while_ready(self, sync_finished: SyncFinished) -> None:
        # wa-js has no event for the end of the history sync: poll its progress, for at most
        # SYNC_MAX_WAIT_SECONDS (its progress can stay null, and "in progress" then never
        # ends: wa-js issue #2734).
        deadline = asyncio.get_running_loop().time() + self._settings.sync_max_wait
        trigger = "initial sync finished"
        while not await sync_finished():
            if asyncio.get_running_loop().time() >= deadline:
                trigger = "initial sync did not report its end"
                log.warning("history sync never reported its end; backing up anyway")
                break
            await asyncio.sleep(self._settings.sync_poll_interval)
        await self.backup(trigger)
        while True:
            await asyncio.sleep(self._settings.storage.interval_seconds)
            await self.backup("periodic")

    def _store_unavailable(self, attempt: int, error: StoreUnavailable, delay: float) -> None:
        self.store_error = str(error)
        log.warning(
            "backup storage unavailable, retrying",
            attempt=attempt,
            error=str(error),
            retry_in=delay,
        )
        self._bus.publish(
            EventType.STORAGE_UNAVAILABLE,
            {"attempt": attempt, "error": str(error), "retry_in": delay},
        )
