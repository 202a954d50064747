"""When a session pod calls itself idle (session_pod/idleness.py), on its real delivery
database: ready and caught up, nothing owed (a message the watchdog may resend, a webhook
waiting), no send nor request for the idle time; each change said once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from session_pod.delivery import Inbox, MessageLedger, Outbox, WatchdogSettings, WebhookSettings
from session_pod.delivery.store import Database
from session_pod.idleness import Idleness, owed_horizon
from session_pod.metrics import Metrics
from whatsapp_common.states import SessionState

IDLE_AFTER = 60.0


class Pod:
    """The parts idleness reads, on one database file."""

    def __init__(self, path: Path, webhooks: WebhookSettings) -> None:
        db = Database.open(path, "")
        self.outbox = Outbox(db, "13", webhooks)
        self.ledger = MessageLedger(db)
        self.inbox = Inbox(db, self.outbox, lambda message: None)
        self.state = SessionState.READY
        self.said: list[dict[str, Any]] = []
        self.idleness = Idleness(
            IDLE_AFTER,
            1.0,
            lambda: self.state,
            self.inbox,
            self.ledger,
            self.outbox,
            WatchdogSettings(),
            lambda type_, data: self.said.append({"type": type_, **data}),
            Metrics("13"),
        )

    def sent(self, wa_id: str, ack: int | None) -> None:
        def work(c: Any) -> None:
            self.ledger.begin_in(c, wa_id, "5491100000001@c.us", "", "hola", must_deliver=False)
            self.ledger.finish_in(c, wa_id, "sent", ack)

        self.ledger.db.transact(work)


def test_idle_only_when_ready_caught_up_and_quiet_for_the_idle_time(tmp_path: Path) -> None:
    pod = Pod(tmp_path / "d.db", WebhookSettings(base_url=None))
    now = time.time()

    async def idle(at: float) -> bool:
        return await pod.idleness.is_idle(at)

    async def scenario() -> None:
        assert not await idle(now)  # ready, but the catch-up has not run
        pod.inbox.follow_live(True)
        assert await idle(now)  # nothing ever sent: idle at once
        pod.state = SessionState.SYNCING
        assert not await idle(now)
        pod.state = SessionState.READY
        pod.sent("true_5491100000001@c.us_A1", 2)  # received: owed nothing, but recent
        assert not await idle(now + 1)
        assert await idle(now + IDLE_AFTER + 1)
        pod.sent("true_5491100000001@c.us_A2", 1)  # short of RECEIVED: the watchdog's
        assert not await idle(now + IDLE_AFTER + 1)
        assert await idle(now + owed_horizon(WatchdogSettings()) + 1)  # given up by then

    asyncio.run(scenario())


def test_a_waiting_webhook_or_a_request_keeps_it_busy_and_changes_are_said_once(
    tmp_path: Path,
) -> None:
    pod = Pod(tmp_path / "d.db", WebhookSettings(base_url="http://127.0.0.1:9/whatsapp_js"))
    pod.inbox.follow_live(True)

    async def scenario() -> None:
        await pod.idleness.check()
        await pod.idleness.check()
        assert [s["idle"] for s in pod.said] == [True]
        pod.outbox.enqueue("ready", {"phone": "5491100000001"})  # Rails has not taken it
        await pod.idleness.check()
        assert [s["idle"] for s in pod.said] == [True, False]
        assert all(s["type"] == "idle" and s["since"] > 0 for s in pod.said)

    asyncio.run(scenario())


def test_a_location_request_in_flight_or_just_served_keeps_it_busy(tmp_path: Path) -> None:
    pod = Pod(tmp_path / "d.db", WebhookSettings(base_url=None))
    pod.inbox.follow_live(True)
    release = asyncio.Event()

    async def slow(_: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({})

    async def quick(_: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application(middlewares=[pod.idleness.middleware])
    app.router.add_get("/chats", slow)
    app.router.add_get("/status", quick)

    async def scenario() -> None:
        async with TestClient(TestServer(app)) as client:
            await client.get("/status")  # looking is not activity
            assert await pod.idleness.is_idle()
            pending = asyncio.create_task(client.get("/chats"))
            await asyncio.sleep(0.1)
            assert not await pod.idleness.is_idle(time.time() + IDLE_AFTER + 1)  # in flight
            release.set()
            await pending
            assert not await pod.idleness.is_idle()  # just served
            assert await pod.idleness.is_idle(time.time() + IDLE_AFTER + 1)

    asyncio.run(scenario())
