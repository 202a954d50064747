"""Ack watchdog: resends messages that do not reach RECEIVED in time, and reports them.

Every `interval` seconds: a message short of RECEIVED (ack 2) `deadline` seconds after its
last send is resent through the pod's `resend(record) -> new WhatsApp id` callback (which
records the attempt in the ledger before it sends, so a crash mid-resend is resolved like any
send), until it
has been sent `max_attempts` times (the first send included); one still short of RECEIVED a
deadline after its last attempt is given up (status `stuck`). Each case emits message_stuck
with `action` "resent", "resend_failed" or "gave_up". A FAILED ack (-1) emits message_failed
(`on_ack`); failed messages are not resent.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from whatsapp_common.envvars import env_bool, env_int, env_number
from whatsapp_common.event_types import EventType
from whatsapp_common.logs import get_logger
from whatsapp_common.tasks import cancel_and_wait

from .ledger import ACK_FAILED, MessageLedger, MessageRecord

log = get_logger(__name__)

Resend = Callable[[MessageRecord], Awaitable[str | None]]
Emit = Callable[[str, dict[str, Any]], object]


@dataclass(frozen=True)
class WatchdogSettings:
    enabled: bool = True
    deadline: float = 300.0
    max_attempts: int = 3
    interval: float = 30.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> WatchdogSettings:
        env = dict(os.environ if env is None else env)
        return cls(
            enabled=env_bool(env, "ACK_WATCHDOG_ENABLED", cls.enabled),
            deadline=env_number(env, "ACK_DEADLINE_SECONDS", cls.deadline, minimum=1),
            max_attempts=env_int(env, "ACK_MAX_ATTEMPTS", cls.max_attempts, minimum=1),
            interval=env_number(env, "ACK_CHECK_INTERVAL_SECONDS", cls.interval, minimum=0.1),
        )


class AckWatchdog:
    def __init__(
        self, ledger: MessageLedger, settings: WatchdogSettings, resend: Resend, emit: Emit
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self._resend = resend
        self._emit = emit
        self._task: asyncio.Task[None] | None = None

    async def on_ack(
        self,
        message_id: str,
        ack: int,
        within: Callable[[sqlite3.Connection, MessageRecord | None], None] | None = None,
    ) -> MessageRecord | None:
        """Records an ack (call it for every message_ack event); emits message_failed when a
        FAILED ack fails the message. None for a message not in the ledger. `within`: see
        MessageLedger.record_ack."""
        before = await self.ledger.get(message_id) if ack == ACK_FAILED else None
        record = await self.ledger.record_ack(message_id, ack, within=within)
        failed_now = before is not None and before.status != "failed"
        if failed_now and record is not None and record.status == "failed":
            log.warning("message failed", message_id=record.id, attempts=record.attempts)
            self._emit(EventType.MESSAGE_FAILED, {**_summary(record), "failed_id": message_id})
        return record

    async def check(self, now: float | None = None) -> None:
        """One pass: give up on exhausted messages, resend the stalled ones."""
        deadline, max_attempts = self.settings.deadline, self.settings.max_attempts
        for record in await self.ledger.give_up(deadline, max_attempts, now):
            log.warning("message stuck: giving up", message_id=record.id, attempts=record.attempts)
            self._emit(EventType.MESSAGE_STUCK, {**_summary(record), "action": "gave_up"})
        for record in await self.ledger.due_for_resend(deadline, max_attempts, now):
            try:
                new_id = await self._resend(record)
            except Exception as exc:
                log.warning("message resend failed", message_id=record.id, error=str(exc))
                new_id = None
            updated = await self.ledger.get(record.id) or record
            action = "resent" if new_id else "resend_failed"
            log.warning(
                "message stuck", message_id=record.id, action=action, attempts=updated.attempts
            )
            self._emit(EventType.MESSAGE_STUCK, {**_summary(updated), "action": action})

    def start(self) -> None:
        """Runs `check` every `interval` seconds (a no-op when disabled)."""
        if self.settings.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="ack-watchdog")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.interval)
            try:
                await self.check()
            except Exception:
                log.exception("ack watchdog pass failed")


def _summary(record: MessageRecord) -> dict[str, Any]:
    return {
        "message_id": record.id,
        "current_id": record.current_id,
        "message_ids": list(record.message_ids),
        "receiver": record.receiver,
        "attempts": record.attempts,
        "ack": record.ack,
        "status": record.status,
    }
