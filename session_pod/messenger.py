"""Messages out and in: /send_message exactly once, and every customer message to Rails.

A send, with or without an idempotency key, goes: number check → the chat and the message's
id chosen in WhatsApp Web (`prepare_send`) → ledger entry with that id, outcome `unknown`,
and the key bound to it, in one transaction → the send under that id → its result, the
key's answer and the ledger's outcome in one transaction. A crash or timeout between the
last two steps leaves the outcome `unknown`; it is resolved, never guessed, by looking the
id up in WhatsApp Web (`resolve_unfinished`, after every start and browser relaunch, and
inline when the key's retry arrives): found → sent; not found → sent now, under the same id
(for a keyed send, one already answered as queued, and a resend), or failed (a send without
a key that was answered with an error: the client decides). The ack watchdog's resends take
the same path with a new id.

After every start the pod also catches up what it may have missed: the customer messages of
the chats that changed (the inbox records each once) and the acks of open messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
from typing import Any

from whatsapp_common.event_types import EventType
from whatsapp_common.logs import get_logger
from whatsapp_common.states import SessionState

from .delivery import (
    AckWatchdog,
    IdempotencyStore,
    MessageLedger,
    MessageRecord,
    Outbox,
    RateLimiter,
)
from .delivery.inbox import Inbox
from .delivery.locks import KeyedLocks
from .driver import DriverError
from .events import SessionEvent
from .session import NotReady, Session
from .tasks import Supervised

log = get_logger(__name__)
CATCH_UP_CHATS = 50  # the chats that changed most recently
CATCH_UP_FIRST_PAGE, CATCH_UP_MAX_MESSAGES = 50, 1600  # per chat, read back to its mark


class SendOutcomeUnknown(RuntimeError):
    """WhatsApp may or may not have the message: it is checked before anything is resent."""


class OutcomePending(RuntimeError):
    """A keyed send's earlier outcome cannot be checked yet (the session is not ready)."""


def failure(result: str, message_id: str) -> dict[str, Any]:
    """The seed's error answer for a send WhatsApp refused (`result` is its send result)."""
    return {"success": False, "message": "Error sending message", "error": result, "id": message_id}


class Messenger:
    def __init__(
        self,
        session: Session,
        ledger: MessageLedger,
        idempotency: IdempotencyStore,
        inbox: Inbox,
        outbox: Outbox,
        limiter: RateLimiter,
        tasks: Supervised,
    ) -> None:
        self.session = session
        self.outbox = outbox
        self.ledger = ledger
        self.idempotency = idempotency
        self.inbox = inbox
        self.limiter = limiter
        self.watchdog = AckWatchdog(
            ledger, session.settings.watchdog, self.resend, session.bus.publish
        )
        self._db = ledger.db
        self._sending = KeyedLocks()  # one send or resolution of a message at a time
        self._acks_in_order = asyncio.Lock()  # FIFO: acks are recorded as they came
        self._ready_generation = 0  # counts READY transitions (a catch-up knows if it is stale)
        self._tasks = tasks

    # sending --------------------------------------------------------------------------

    def _operation(self) -> contextlib.AbstractAsyncContextManager[None]:
        """One unit of the send path, which a planned browser relaunch lets finish first; one
        that starts during the relaunch waits for the browser at most SEND_WAIT_SECONDS."""
        return self.session.gate.operation(self.session.settings.send_wait)

    async def send(
        self, chat_id: str, text: str, idempotency_key: str | None
    ) -> tuple[dict[str, Any], bool]:
        """(answer, replayed). An answer with `success: false` is WhatsApp's refusal."""
        async with self._operation():
            return await self._send(chat_id, text, idempotency_key)

    async def _send(
        self, chat_id: str, text: str, idempotency_key: str | None
    ) -> tuple[dict[str, Any], bool]:
        if idempotency_key is None:
            return await self._send_new(chat_id, text, None), False
        request_hash = hashlib.sha256(f"{chat_id}\n{text}".encode()).hexdigest()
        async with self.idempotency.claim(idempotency_key, request_hash) as claim:
            if claim.response is not None:
                return claim.response, True
            if claim.message_id is not None:
                return await self._answer_unfinished(claim.message_id), True
            return await self._send_new(chat_id, text, idempotency_key), False

    async def resend(self, record: MessageRecord) -> str | None:
        """The watchdog's resend of a message stuck short of RECEIVED, under a new id; a try
        that fails before it has an id still counts as an attempt."""
        async with self._operation():
            return await self._resend(record)

    async def _resend(self, record: MessageRecord) -> str | None:
        try:
            async with self.limiter:
                chat, wa_id = await self.session.prepare_send(record.chat or record.receiver)
        except (DriverError, NotReady):
            await self.ledger.record_attempt(record.id)
            raise
        updated = await self._db.run(lambda c: self.ledger.add_attempt_in(c, record.id, wa_id))
        async with self._sending.hold(record.id):
            # An unknown outcome is recorded under its id: resolved after the relaunch.
            with contextlib.suppress(SendOutcomeUnknown):
                await self._attempt(updated, wa_id, record.body or "", chat)
        return wa_id

    async def _send_new(self, chat_id: str, text: str, key: str | None) -> dict[str, Any]:
        async with self.limiter:
            wid = await self.session.check_number(chat_id)
            chat, wa_id = await self.session.prepare_send(wid)

            def begin(c: Any) -> MessageRecord:
                record = self.ledger.begin_in(
                    c, wa_id, wid, chat, text, must_deliver=key is not None, idempotency_key=key
                )
                if key is not None:
                    self.idempotency.bind_in(c, key, wa_id)
                return record

            record = await self._db.run(begin)
            async with self._sending.hold(record.id):
                return await self._attempt(record, wa_id, text, chat)

    async def _attempt(
        self, record: MessageRecord, wa_id: str, text: str, chat: str
    ) -> dict[str, Any]:
        """One send under `wa_id` (held: `_sending`). Raises SendOutcomeUnknown when the
        browser died or the call timed out: the outcome is then resolved, not guessed."""
        try:
            sent = await self.session.send_prepared(chat, wa_id, text)
        except (DriverError, NotReady) as exc:
            log.warning("send outcome unknown", message_id=wa_id, error=str(exc))
            self.session.metrics.send_outcomes.labels("unknown").inc()
            raise SendOutcomeUnknown(str(exc)) from exc
        return await self._conclude(record, wa_id, sent.result, sent.ack, text)

    async def _conclude(
        self,
        record: MessageRecord,
        wa_id: str,
        result: str | None,
        ack: int | None,
        text: str,
        found: bool = False,
    ) -> dict[str, Any]:
        """The attempt's outcome, the key's answer and the ledger in one transaction.
        `result` None: WhatsApp Web holds the message in its queue (offline). `found`: the
        outcome was looked up after a crash; its ack came with no event (the page that saw
        the receipts is gone), so its webhook is queued here."""
        ack_webhook: dict[str, Any] = {}
        if result not in (None, "OK"):
            log.warning("WhatsApp refused the message", message_id=wa_id, result=result)
            answer = failure(result, record.id)
        else:
            archived = await self.session.archive(record.chat or record.receiver)
            answer = self._success(record, text, ack, archived, queued=result is None)

        def finish(c: Any) -> None:
            if result is None:
                self.ledger.must_deliver_in(c, wa_id)
            else:
                self.ledger.finish_in(c, wa_id, "sent" if result == "OK" else "failed", ack, result)
            if found and ack is not None and ack >= 1:
                ack_webhook.update(self._ack_webhook_in(c, record.id, wa_id, ack, record.chat))
            key = self.idempotency.message_of(c, record.id)
            if key is not None:
                self.idempotency.complete_in(c, key, answer)

        await self._db.run(finish)
        if ack_webhook:
            self._announce_ack(ack_webhook)
        outcome = "queued" if result is None else "sent" if result == "OK" else "failed"
        self.session.metrics.send_outcomes.labels(outcome).inc()
        return answer

    def _success(
        self, record: MessageRecord, text: str, ack: int | None, archived: bool, queued: bool
    ) -> dict[str, Any]:
        answer = {
            "success": True,
            "message": text,
            "id": record.id,
            "ack": ack if ack is not None else 0,
            "chat_id": record.receiver,
            "archived": archived,
        }
        if queued:
            answer["queued"] = True
        return answer

    # resolving unknown outcomes ----------------------------------------------------------

    async def _answer_unfinished(self, message_id: str) -> dict[str, Any]:
        """A retry of a key whose send has no answer yet: resolve that one message."""
        record = await self.ledger.get(message_id)
        if record is None:
            raise OutcomePending(f"message {message_id} is not in the ledger")
        if self.session.state != SessionState.READY:
            raise OutcomePending(str(self.session.state))
        return await self._resolve(record.current_id, record.id, must_deliver=True)

    async def _resolve(self, wa_id: str, ledger_id: str, must_deliver: bool) -> dict[str, Any]:
        async with self._sending.hold(ledger_id):
            record = await self.ledger.get(ledger_id)
            if record is None:
                raise OutcomePending(f"message {ledger_id} is not in the ledger")
            if record.current_id != wa_id or record.current_outcome != "unknown":
                # Resolved meanwhile (an ack, another pass): answer from the ledger.
                return await self._conclude_known(record)
            try:
                found = await self.session.find_message(wa_id)
            except (DriverError, NotReady) as exc:
                raise OutcomePending(str(exc)) from exc
            if found is not None:
                log.info("unfinished send found in WhatsApp", message_id=wa_id)
                return await self._conclude(
                    record, wa_id, "OK", found.get("ack"), found.get("body") or "", found=True
                )
            if must_deliver and record.body is not None:
                log.info("unfinished send not in WhatsApp: sending it now", message_id=wa_id)
                return await self._attempt(record, wa_id, record.body or "", record.chat or "")
            log.warning("unfinished send without a key not in WhatsApp", message_id=wa_id)
            return await self._conclude(record, wa_id, "INTERRUPTED", None, record.body or "")

    async def _conclude_known(self, record: MessageRecord) -> dict[str, Any]:
        """The answer for a message whose outcome is known: its key's first answer, else this
        one, stored as the key's."""
        if record.status == "failed":
            answer = failure("FAILED", record.id)
        else:
            answer = self._success(record, record.body or "", record.ack, False, queued=False)

        key = record.idempotency_key
        if key is None:
            return answer
        return await self._db.run(lambda c: self.idempotency.first_answer_in(c, key, answer))

    async def resolve_unfinished(self) -> int:
        """Resolves every attempt whose outcome is unknown; stops when the session is not
        ready. Returns how many were resolved."""
        resolved = 0
        for attempt in await self.ledger.unresolved():
            try:
                await self._resolve(attempt.wa_id, attempt.message.id, attempt.must_deliver)
            except (OutcomePending, SendOutcomeUnknown) as exc:
                log.warning("unfinished sends left for later", error=str(exc))
                break
            resolved += 1
        return resolved

    # catching up ------------------------------------------------------------------------

    async def catch_up(self) -> tuple[int, int]:
        """(customer messages queued, acks recorded) that the events did not bring."""
        generation = self._ready_generation
        since = int(await self.inbox.since())  # WhatsApp's times are whole seconds
        marks = await self.inbox.high_waters()
        found: list[dict[str, Any]] = []
        read_to: dict[str, int] = {}
        for chat in await self.session.recent_chats(CATCH_UP_CHATS):
            mark = max(since, marks.get(chat["id"], 0))
            if chat["t"] < mark:
                continue
            messages = await self._messages_since(chat["id"], mark)
            found += [m for m in messages if (m.get("timestamp") or 0) >= since]
            read_to[chat["id"]] = max((m.get("timestamp") or 0 for m in messages), default=mark)
        queued = await self.inbox.accept_all(found)
        await self.inbox.caught_up(read_to)
        if generation == self._ready_generation and self.session.state == SessionState.READY:
            self.inbox.follow_live(True)  # no gap until the session next leaves ready
        acks = 0
        for record in await self.ledger.open_messages():
            message = await self.session.find_message(record.current_id)
            ack = None if message is None else message.get("ack")
            if ack is not None and ack >= 1 and (record.ack is None or ack > record.ack):
                await self._record_ack(record.current_id, ack, record.chat)
                acks += 1
        if queued or acks:
            log.info("caught up after a start", messages=queued, acks=acks)
        return queued, acks

    async def _messages_since(self, chat: str, mark: int) -> list[dict[str, Any]]:
        """The chat's newest messages, read back until one older than `mark` (whole seconds)
        or CATCH_UP_MAX_MESSAGES."""
        count = CATCH_UP_FIRST_PAGE
        while True:
            messages = await self.session.chat_messages(chat, count)
            oldest = min((m.get("timestamp") or 0 for m in messages), default=0)
            if len(messages) < count or oldest < mark or count >= CATCH_UP_MAX_MESSAGES:
                return messages
            count *= 2

    async def after_ready(self) -> None:
        """What every (re)start owes: unfinished sends resolved, missed messages caught up."""
        async with self._operation():
            await self.resolve_unfinished()
            await self.catch_up()

    def on_ack(self, wa_id: str, ack: int, chat: str | None) -> None:
        """An ack from the page: into the ledger (through the watchdog) and its `message_ack`
        webhook into the outbox in the same transaction (a crash cannot keep one without the
        other), under the id /send_message answered with, whichever way WhatsApp named the
        chat in the receipt; in the order the page reported them."""
        self._tasks.spawn("ack", self._record_ack(wa_id, ack, chat))

    async def _record_ack(self, wa_id: str, ack: int, chat: str | None) -> None:
        """The page's acks and those the catch-up finds (acks the events did not bring)."""
        data: dict[str, Any] = {}

        def queue_webhook(c: sqlite3.Connection, record: MessageRecord | None) -> None:
            data.update(self._ack_webhook_in(c, record.id if record else wa_id, wa_id, ack, chat))

        async with self._acks_in_order:  # a write that fails is a failed "ack" task
            await self.watchdog.on_ack(wa_id, ack, within=queue_webhook)
        self._announce_ack(data)

    def _ack_webhook_in(
        self, c: sqlite3.Connection, message_id: str, wa_id: str, ack: int, chat: str | None
    ) -> dict[str, Any]:
        """Queues the `message_ack` webhook in the caller's transaction (the one that records
        the ack: a crash cannot keep one without the other); returns its data."""
        data: dict[str, Any] = {"id": message_id, "ack": ack, "chat": chat}
        if message_id != wa_id:
            data["whatsapp_id"] = wa_id
        self.outbox.enqueue_in(c, EventType.MESSAGE_ACK, data)
        return data

    def _announce_ack(self, data: dict[str, Any]) -> None:
        self.outbox.notify()
        self.session.bus.publish(EventType.MESSAGE_ACK, data, durable=True)

    def on_event(self, event: SessionEvent) -> None:
        """Bus listener: a ready session resolves unfinished sends and catches up; one that
        leaves `ready` may have lost what the page took, until the next catch-up."""
        if event.type != EventType.STATE:
            return
        if event.data.get("state") == str(SessionState.READY):
            self._ready_generation += 1
            self._tasks.spawn_single("after-ready", self.after_ready)
        else:
            self.inbox.follow_live(False)
