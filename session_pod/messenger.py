"""The /send_message pipeline: idempotency key, rate limit, send, ledger, archive.

The ledger records each message before the chat is archived, so its delivery acks
(which arrive a fraction of a second later) find it. The ack watchdog resends through
the same path.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from .delivery import AckWatchdog, IdempotencyStore, MessageLedger, MessageRecord, RateLimiter
from .events import SessionEvent
from .session import Session


class Messenger:
    def __init__(
        self,
        session: Session,
        ledger: MessageLedger,
        idempotency: IdempotencyStore,
        limiter: RateLimiter,
    ) -> None:
        self.session = session
        self.ledger = ledger
        self.idempotency = idempotency
        self.limiter = limiter
        self.watchdog = AckWatchdog(
            ledger, session.settings.watchdog, self.resend, session.bus.publish
        )
        self._ack_tasks: set[asyncio.Task[Any]] = set()

    async def send(
        self, chat_id: str, text: str, idempotency_key: str | None
    ) -> tuple[dict[str, Any], bool]:
        """(answer, replayed): a key seen within 24 h returns its first answer, unsent."""
        if idempotency_key is None:
            return await self._send(chat_id, text), False
        request_hash = hashlib.sha256(f"{chat_id}\n{text}".encode()).hexdigest()
        async with self.idempotency.claim(idempotency_key, request_hash) as claim:
            if claim.response is not None:
                return claim.response, True
            answer = await self._send(chat_id, text)
            await claim.complete(answer)
            return answer, False

    async def resend(self, record: MessageRecord) -> str | None:
        """The watchdog's resend of a message stuck short of RECEIVED: the new WhatsApp id."""
        async with self.limiter:
            sent = await self.session.send_text(record.receiver, record.body or "")
        await self.session.archive(sent["chat_id"])
        return sent["id"]

    def on_event(self, event: SessionEvent) -> None:
        """Bus listener: every delivery ack goes to the ledger (through the watchdog)."""
        if event.type == "message_ack":
            task = asyncio.create_task(self.watchdog.on_ack(event.data["id"], event.data["ack"]))
            self._ack_tasks.add(task)
            task.add_done_callback(self._ack_tasks.discard)

    async def _send(self, chat_id: str, text: str) -> dict[str, Any]:
        async with self.limiter:
            sent = await self.session.send_text(chat_id, text)
        await self.ledger.record(sent["id"], sent["chat_id"], text, sent["ack"])
        archived = await self.session.archive(sent["chat_id"])
        return {"success": True, "message": text, **sent, "archived": archived}
