"""session_pod.delivery against a real HTTP receiver standing in for Rails (aiohttp on
127.0.0.1) and a real SQLite file: outbox ordering, retries, dead letters, restarts (also
kill -9), signatures, broken databases, the message ledger, idempotency, the ack watchdog and
the rate limiter."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from session_pod.config import ConfigError
from session_pod.delivery import (
    AckWatchdog,
    DeliveryDatabaseError,
    IdempotencyMismatch,
    IdempotencyStore,
    MessageLedger,
    MessageRecord,
    Outbox,
    RateLimiter,
    WatchdogSettings,
    WebhookSettings,
    sign,
    verify,
)
from session_pod.delivery.store import Database
from session_pod.delivery.webhooks import rails_base_url
from tests.support.database_faults import REFUSE_INSERTS, REPAIR
from tests.support.processes import REPO, free_port

SECRET = "s3cret"


def run(coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(check: Callable[[], Awaitable[bool] | bool], within: float = 10) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = check()
        if await result if asyncio.iscoroutine(result) else result:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


class Receiver:
    """Rails stand-in: records every request; answers with the statuses in `script`, then 200;
    while `gate` is set to an unset Event, holds requests until it is set."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/whatsapp_js"
        self.seen: list[Seen] = []
        self.script: deque[int] = deque()
        self.gate: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def delivered(self) -> list[dict[str, Any]]:
        """Payloads answered 2xx, first copy of each event id, in arrival order."""
        out: dict[str, dict[str, Any]] = {}
        for seen in self.seen:
            if seen.status == 200:
                out.setdefault(seen.payload["event_id"], seen.payload)
        return list(out.values())

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.script.popleft() if self.script else 200
        seen = Seen(request.path, dict(request.headers), body, status)
        self.seen.append(seen)
        if self.gate is not None:
            await self.gate.wait()
        return web.Response(status=status)


def settings(receiver: Receiver, **overrides: Any) -> WebhookSettings:
    return WebhookSettings(
        base_url=receiver.url,
        secret=SECRET,
        retry_base=0.01,
        retry_max=0.05,
        timeout=5,
        **overrides,
    )


# --- settings -----------------------------------------------------------------------------


def test_base_url_follows_the_seed_concatenation() -> None:
    assert rails_base_url("http://localhost:", "3000", "/whatsapp_js") == (
        "http://localhost:3000/whatsapp_js"
    )
    assert rails_base_url("http://rails", "3000", "whatsapp_js/") == "http://rails:3000/whatsapp_js"
    assert rails_base_url("https://rails.example.com:8443/", "", "/wa") == (
        "https://rails.example.com:8443/wa"
    )
    assert rails_base_url("http://rails:3000", "3000", "") == "http://rails:3000"
    assert rails_base_url("", "3000", "/whatsapp_js") is None
    with pytest.raises(ConfigError):
        rails_base_url("http://rails:3000", "4000", "")
    with pytest.raises(ConfigError):
        rails_base_url("localhost:", "3000", "")


def test_settings_from_env() -> None:
    env = {
        "RAILS_APP_URL": "http://localhost:",
        "RAILS_APP_PORT": "3000",
        "RAILS_APP_ENDPOINT_SCOPE": "/whatsapp_js",
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_EVENTS": "qr, ready,message_ack",
        "WEBHOOK_RETRY_MAX_SECONDS": "60",
    }
    s = WebhookSettings.from_env(env)
    assert s.url_for("message_ack") == "http://localhost:3000/whatsapp_js/message_ack"
    assert s.secret == SECRET and s.retry_max == 60
    assert s.wants("qr") and not s.wants("message")
    disabled = WebhookSettings.from_env({})
    assert not disabled.enabled and not disabled.wants("qr")


def test_disabled_or_filtered_events_are_not_stored(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "d.db", "13", WebhookSettings.from_env({}))
    assert outbox.enqueue("qr", {"qr": "x"}) is None
    filtered = Outbox(
        tmp_path / "d.db", "13", WebhookSettings("http://127.0.0.1:9", events=frozenset({"ready"}))
    )
    assert filtered.enqueue("message", {}) is None
    assert filtered.enqueue("ready", {}) is not None
    assert run(filtered.stats()).pending == 1


# --- outbox delivery ----------------------------------------------------------------------


def test_receiver_down_then_back_every_event_arrives_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        receiver = Receiver()  # not listening yet
        outbox = Outbox(tmp_path / "pod.db", "13", settings(receiver))
        outbox.start()
        ids = [outbox.enqueue("message_ack", {"n": n, "ack": 2}) for n in range(20)]
        await asyncio.sleep(0.5)  # many refused connections, with backoff
        assert (await outbox.stats()).pending == 20
        receiver.script.extend([500, 429, 503, 408])  # still failing a little once it is up
        await receiver.up()
        await until(lambda: len(receiver.delivered()) == 20)
        delivered = receiver.delivered()
        assert [p["event_id"] for p in delivered] == ids
        assert [p["data"]["n"] for p in delivered] == list(range(20))
        # head of line: nothing overtook the failing head event
        assert [s.payload["data"]["n"] for s in receiver.seen[:5]] == [0] * 5
        first = receiver.seen[0]
        assert first.path == "/whatsapp_js/message_ack"
        assert first.headers["X-Webhook-Event-Id"] == ids[0]
        assert set(first.payload) == {
            "event",
            "event_id",
            "location_identifier",
            "timestamp",
            "data",
        }
        assert first.payload["location_identifier"] == "13"
        assert first.payload["timestamp"].endswith("Z")
        assert (await outbox.stats()).pending == 0
        await outbox.stop()
        await receiver.down()

    run(scenario())


def test_events_handed_to_the_writer_arrive_in_order_and_a_failed_write_is_said(
    tmp_path: Path,
) -> None:
    """enqueue_soon: the loop goes on while the writer thread commits, in the order asked;
    stop() first finishes what was handed over; a write SQLite refuses reaches on_error on the
    loop (the pod turns it into `failed`), never silence."""

    async def scenario() -> None:
        receiver = Receiver()
        await receiver.up()
        outbox = Outbox(tmp_path / "pod.db", "13", settings(receiver))
        outbox.start()
        errors: list[tuple[DeliveryDatabaseError, bool]] = []
        loop_thread = threading.get_ident()

        def failed(error: DeliveryDatabaseError) -> None:
            errors.append((error, threading.get_ident() == loop_thread))

        for n in range(200):
            outbox.enqueue_soon("message_ack", {"n": n, "ack": 2}, failed)
        await until(lambda: len(receiver.delivered()) == 200)
        assert [p["data"]["n"] for p in receiver.delivered()] == list(range(200))

        # SQLite refuses the next inserts (as a full disk would): each is said, none is lost
        # without a word, and the ones after the repair are stored again.
        Database.of(tmp_path / "pod.db", REFUSE_INSERTS).close()
        for n in range(3):
            outbox.enqueue_soon("message_ack", {"n": 200 + n}, failed)
        await until(lambda: len(errors) == 3)
        assert all(on_loop and "disk full" in str(e) for e, on_loop in errors)
        Database.of(tmp_path / "pod.db", REPAIR).close()
        outbox.enqueue_soon("ready", {"phone": "5491100000000"}, failed)
        await outbox.stop(drain_timeout=5)
        assert receiver.delivered()[-1]["event"] == "ready" and len(errors) == 3
        await receiver.down()

    run(scenario())


def test_a_new_outbox_on_the_same_file_delivers_what_the_old_one_left(tmp_path: Path) -> None:
    async def scenario() -> None:
        receiver = Receiver()
        first = Outbox(tmp_path / "pod.db", "13", settings(receiver))
        first.start()
        ids = [first.enqueue("message", {"n": n}) for n in range(5)]
        await asyncio.sleep(0.2)
        await first.stop()
        first.close()

        await receiver.up()
        second = Outbox(tmp_path / "pod.db", "13", settings(receiver))
        second.start()
        await until(lambda: len(receiver.delivered()) == 5)
        assert [p["event_id"] for p in receiver.delivered()] == ids
        await second.stop()
        await receiver.down()

    run(scenario())


def test_stop_drains_the_queue_first(tmp_path: Path) -> None:
    async def scenario() -> None:
        receiver = Receiver()
        await receiver.up()
        receiver.script.extend([500, 500])
        outbox = Outbox(tmp_path / "pod.db", "13", settings(receiver))
        outbox.start()
        for n in range(3):
            outbox.enqueue("disconnected", {"n": n})
        await outbox.stop(drain_timeout=5)
        assert len(receiver.delivered()) == 3
        await receiver.down()

    run(scenario())


def test_4xx_goes_to_dead_letters_and_replay_delivers_it_last(tmp_path: Path) -> None:
    async def scenario() -> None:
        receiver = Receiver()
        await receiver.up()
        receiver.script.append(400)
        outbox = Outbox(tmp_path / "pod.db", "13", settings(receiver))
        outbox.start()
        bad, *rest = [outbox.enqueue("message", {"n": n}) for n in range(3)]
        await until(lambda: len(receiver.delivered()) == 2)
        assert [p["event_id"] for p in receiver.delivered()] == rest
        assert len(receiver.seen) == 3  # the 400 was not retried

        [dead] = await outbox.failed()
        assert (dead.event_id, dead.status, dead.attempts) == (bad, 400, 1)
        assert dead.as_dict()["payload"]["data"] == {"n": 0}
        assert await outbox.replay(["no-such-id"]) == []
        assert await outbox.replay("all") == [bad]
        await until(lambda: len(receiver.delivered()) == 3)
        assert [p["event_id"] for p in receiver.delivered()] == [*rest, bad]
        assert await outbox.failed() == []
        assert (await outbox.stats()).dead_letters == 0
        await outbox.stop()
        await receiver.down()

    run(scenario())


def test_kill_9_mid_delivery_then_a_new_process_delivers_everything(tmp_path: Path) -> None:
    async def scenario() -> None:
        receiver = Receiver()
        receiver.gate = asyncio.Event()  # hold the first request: the worker is mid-delivery
        await receiver.up()
        db = tmp_path / "pod.db"
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.outbox_worker",
            str(db),
            receiver.url,
            "10",
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
        )
        assert worker.stdout is not None
        assert await worker.stdout.readline() == b"queued\n"
        await until(lambda: len(receiver.seen) == 1)
        os.kill(worker.pid, signal.SIGKILL)
        await worker.wait()
        receiver.gate.set()
        receiver.gate = None

        outbox = Outbox(db, "13", settings(receiver))
        outbox.start()
        await until(lambda: len(receiver.delivered()) == 10)
        assert [p["data"]["n"] for p in receiver.delivered()] == list(range(10))
        # at least once: the event in flight at the kill may arrive twice, with the same id
        assert receiver.seen[0].payload["event_id"] == receiver.delivered()[0]["event_id"]
        await outbox.stop()
        await receiver.down()

    run(scenario())


# --- signatures and secrets -----------------------------------------------------------------


async def one_delivery(tmp_path: Path, settings_for: Callable[[Receiver], WebhookSettings]) -> Seen:
    """One `ready` event through a real outbox to a receiver: the request as it arrived."""
    receiver = Receiver()
    await receiver.up()
    outbox = Outbox(tmp_path / "pod.db", "13", settings_for(receiver))
    outbox.start()
    outbox.enqueue("ready", {"phone": "5491100000000"})
    await until(lambda: len(receiver.seen) == 1)
    await outbox.stop()
    await receiver.down()
    return receiver.seen[0]


def test_requests_are_signed_and_verify(tmp_path: Path) -> None:
    seen = run(one_delivery(tmp_path, lambda receiver: settings(receiver)))
    ts, sig = seen.headers["X-Webhook-Timestamp"], seen.headers["X-Webhook-Signature"]
    assert sig.startswith("sha256=")
    assert verify(SECRET, ts, seen.body, sig)
    assert not verify("other", ts, seen.body, sig)
    assert not verify(SECRET, ts, seen.body.replace(b"5491", b"5492"), sig)
    assert not verify(SECRET, ts, seen.body, "sha256=" + "0" * 64)
    assert not verify(SECRET, "not-a-number", seen.body, sig)


def test_during_a_secret_rotation_both_signatures_are_sent(tmp_path: Path) -> None:
    """WEBHOOK_SECRET = the new secret, WEBHOOK_SECRET_PREVIOUS = the old: a receiver that
    still has the old one and one that already has the new one both accept every request."""
    new = "new-webhook-secret"

    seen = run(
        one_delivery(
            tmp_path,
            lambda receiver: replace(settings(receiver, previous_secret=SECRET), secret=new),
        )
    )
    ts, sig = seen.headers["X-Webhook-Timestamp"], seen.headers["X-Webhook-Signature"]
    assert sig == f"{sign(new, int(ts), seen.body)},{sign(SECRET, int(ts), seen.body)}"
    assert verify(new, ts, seen.body, sig) and verify(SECRET, ts, seen.body, sig)
    assert not verify("a-third-secret", ts, seen.body, sig)
    env = {"RAILS_APP_URL": "http://r", "WEBHOOK_SECRET": new, "WEBHOOK_SECRET_PREVIOUS": "old"}
    assert WebhookSettings.from_env(env).previous_secret == "old"


def test_stale_or_future_timestamps_are_rejected() -> None:
    body = b'{"event":"qr"}'
    signature = sign(SECRET, 1_000_000, body)
    assert verify(SECRET, 1_000_000, body, signature, now=1_000_299)
    assert not verify(SECRET, 1_000_000, body, signature, now=1_000_301)
    assert not verify(SECRET, 1_000_000, body, signature, now=999_000)
    assert not verify(SECRET, 1_000_000, body, signature, tolerance_seconds=10, now=1_000_011)


def test_the_qr_string_reaches_rails_but_never_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    qr = "2@SECRET-QR-PAYLOAD,abc,def"

    async def scenario() -> Receiver:
        receiver = Receiver()
        receiver.script.extend([500, 400])
        await receiver.up()
        outbox = Outbox(tmp_path / "pod.db", "13", settings(receiver))
        outbox.start()
        outbox.enqueue("qr", {"qr": qr})
        await until(lambda: len(receiver.seen) == 2)
        await outbox.replay("all")
        await until(lambda: len(receiver.seen) == 3)
        await outbox.stop()
        await receiver.down()
        return receiver

    caplog.set_level(logging.DEBUG)
    receiver = run(scenario())
    assert receiver.delivered()[0]["data"]["qr"] == qr
    assert caplog.records  # queued, failed, dead-lettered, replayed, delivered were logged
    for record in caplog.records:
        assert qr not in record.getMessage()
        assert qr not in json.dumps(getattr(record, "fields", {}), default=str)


# --- broken databases ---------------------------------------------------------------------


def test_a_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "pod.db"
    db.write_bytes(os.urandom(8192))
    for open_store in (
        lambda: Outbox(db, "13", WebhookSettings("http://127.0.0.1:9")),
        lambda: MessageLedger(db),
        lambda: IdempotencyStore(db),
    ):
        with pytest.raises(DeliveryDatabaseError, match=r"pod\.db"):
            open_store()


def test_a_database_corrupted_after_use_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "pod.db"
    outbox = Outbox(db, "13", WebhookSettings("http://127.0.0.1:9"))
    for n in range(200):
        outbox.enqueue("message", {"n": n, "pad": "x" * 200})
    outbox.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    with db.open("r+b") as f:  # keep the header, trash the pages
        f.seek(4096)
        f.write(os.urandom(db.stat().st_size - 4096))
    with pytest.raises(DeliveryDatabaseError):
        Outbox(db, "13", WebhookSettings("http://127.0.0.1:9"))


def test_an_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a regular file")  # fails for root too, unlike chmod
    with pytest.raises(DeliveryDatabaseError, match="cannot open"):
        Outbox(blocker / "pod.db", "13", WebhookSettings("http://127.0.0.1:9"))
    with pytest.raises(DeliveryDatabaseError):
        MessageLedger(blocker / "pod.db")


DISK_FULL = """
import json, resource, signal, sys
from session_pod.delivery import Outbox, DeliveryDatabaseError, WebhookSettings
outbox = Outbox(sys.argv[1], "13", WebhookSettings("http://127.0.0.1:9"))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
accepted = 0
try:
    while accepted < 1000:
        outbox.enqueue("message", {"n": accepted, "pad": "x" * 2000})
        accepted += 1
except DeliveryDatabaseError as exc:
    print(json.dumps({"accepted": accepted, "error": str(exc)}))
"""


def test_a_failing_write_raises_at_enqueue_and_loses_nothing_accepted(tmp_path: Path) -> None:
    """A file size limit (EFBIG, like a full volume; it binds root too) hits mid-run."""
    db = tmp_path / "pod.db"
    out = subprocess.run(
        [sys.executable, "-c", DISK_FULL, str(db)],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    )
    result = json.loads(out.stdout)
    assert 0 < result["accepted"] < 1000 and "failed" in result["error"]
    assert (
        run(Outbox(db, "13", WebhookSettings("http://127.0.0.1:9")).stats()).pending
        == (result["accepted"])
    )


# --- message ledger -----------------------------------------------------------------------


async def sent(
    ledger: MessageLedger, wa_id: str, receiver: str, body: str, ack: int | None = None
) -> MessageRecord:
    """A message the pod sent and WhatsApp took: its id written first, then the outcome."""

    def work(c: Any) -> MessageRecord:
        ledger.begin_in(c, wa_id, receiver, receiver, body, must_deliver=False)
        return ledger.finish_in(c, wa_id, "sent", ack)

    return await ledger.db.run(work)


def test_an_ack_and_its_webhook_are_stored_together_or_not_at_all(tmp_path: Path) -> None:
    """The ack's webhook is queued in the ack's own transaction: a crash (here, the queueing
    raising) cannot leave the ledger with an ack whose webhook Rails will never get."""

    async def scenario() -> None:
        db = Database.open(tmp_path / "pod.db", "")
        ledger, outbox = MessageLedger(db), Outbox(db, "13", settings(Receiver()))
        await sent(ledger, "m1", "5491100000000@c.us", "hello", ack=0)

        def queue(c: Any, record: MessageRecord | None) -> None:
            outbox.enqueue_in(c, "message_ack", {"id": record.id if record else "", "ack": 2})

        def crash(c: Any, record: MessageRecord | None) -> None:
            queue(c, record)
            raise OSError("killed between the two writes")

        with pytest.raises(OSError):
            await ledger.record_ack("m1", 2, within=crash)
        assert (await ledger.get("m1")).status == "pending"
        assert (await outbox.stats()).pending == 0
        assert (await ledger.record_ack("m1", 2, within=queue)).status == "received"
        assert (await outbox.stats()).pending == 1

    run(scenario())


def test_ledger_statuses_follow_acks(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger = MessageLedger(tmp_path / "pod.db")
        record = await sent(ledger, "m1", "5491100000000@c.us", "hello", ack=0)
        assert record.status == "pending" and record.body == "hello"
        assert record.body_sha256 == (
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        )
        assert (await ledger.record_ack("m1", 1)).status == "sent"
        received = await ledger.record_ack("m1", 2)
        assert received.status == "received" and received.body is None
        assert (await ledger.record_ack("m1", 1)).status == "received"  # never backwards
        assert (await ledger.record_ack("m1", -1)).status == "received"
        assert (await ledger.record_ack("m1", 4)).status == "read"
        assert [a.ack for a in (await ledger.get("m1")).acks] == [0, 1, 2, 1, -1, 4]
        assert await ledger.record_ack("unknown", 2) is None

        await sent(ledger, "m2", "5491100000001@c.us", "bye", ack=1)
        assert (await ledger.record_ack("m2", -1)).status == "failed"
        assert [r.id for r in await ledger.list(status="read")] == ["m1"]
        assert [r.id for r in await ledger.list(status="failed")] == ["m2"]
        assert [r.id for r in await ledger.list()] == ["m2", "m1"]
        assert "body" not in (await ledger.get("m1")).as_dict()
        with pytest.raises(ValueError):
            await ledger.list(status="lost")

    run(scenario())


def test_a_resend_is_linked_to_the_first_message(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger = MessageLedger(tmp_path / "pod.db")
        await sent(ledger, "m1", "chat@c.us", "hello", ack=1)
        resent = await ledger.db.run(lambda c: ledger.add_attempt_in(c, "m1", "m1-b"))
        assert (resent.attempts, resent.current_id, resent.message_ids) == (
            2,
            "m1-b",
            ("m1", "m1-b"),
        )
        assert resent.current_outcome == "unknown"
        assert [a.wa_id for a in await ledger.unresolved()] == ["m1-b"]
        assert (await ledger.get("m1-b")).id == "m1"
        assert (await ledger.record_ack("m1", -1)).status == "sent"  # an old attempt's failure
        assert (await ledger.record_ack("m1-b", 2)).status == "received"
        assert await ledger.unresolved() == []  # an ack proves the resend reached WhatsApp

    run(scenario())


def test_acks_find_the_message_whichever_way_whatsapp_names_the_chat(tmp_path: Path) -> None:
    """Receipts may name a LID chat where the message went to a phone number (wa-js
    registerAckMessageEvent.ts L47-68): the key id matches them."""

    async def scenario() -> None:
        ledger = MessageLedger(tmp_path / "pod.db")
        await sent(ledger, "true_5491100000000@c.us_3EB0AA", "5491100000000@c.us", "hi", ack=1)
        record = await ledger.record_ack("true_123456789012345@lid_3EB0AA", 2)
        assert record is not None and record.id == "true_5491100000000@c.us_3EB0AA"
        assert record.status == "received"
        assert await ledger.record_ack("true_123456789012345@lid_3EB0BB", 2) is None

    run(scenario())


def test_an_attempt_ends_sent_or_failed_and_unknown_ones_are_listed(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger = MessageLedger(tmp_path / "pod.db")

        def begin(wa_id: str, must: bool) -> Callable[[Any], MessageRecord]:
            return lambda c: ledger.begin_in(c, wa_id, "r@c.us", "r@lid", "x", must_deliver=must)

        first = await ledger.db.run(begin("a", True))
        await ledger.db.run(begin("b", False))
        assert (first.status, first.current_outcome, first.chat) == ("pending", "unknown", "r@lid")
        assert [(a.wa_id, a.must_deliver) for a in await ledger.unresolved()] == [
            ("a", True),
            ("b", False),
        ]
        refused = await ledger.db.run(lambda c: ledger.finish_in(c, "b", "failed", None, "E"))
        assert refused.status == "failed" and refused.body is None
        assert [a.wa_id for a in await ledger.unresolved()] == ["a"]
        with pytest.raises(ValueError):
            await ledger.db.run(lambda c: ledger.finish_in(c, "a", "unknown"))

    run(scenario())


# --- idempotency --------------------------------------------------------------------------


def test_the_same_key_sends_once_also_across_reopening(tmp_path: Path) -> None:
    sends: list[str] = []

    async def send_message(store: IdempotencyStore, key: str) -> dict[str, Any]:
        async with store.claim(key, "hash-of-request") as claim:
            if claim.response is not None:
                return claim.response
            await asyncio.sleep(0.05)  # the send
            sends.append(key)
            response = {"success": True, "message_id": f"wa-{len(sends)}"}
            await claim.complete(response)
            return response

    async def first_process() -> list[dict[str, Any]]:
        store = IdempotencyStore(tmp_path / "pod.db")
        answers = await asyncio.gather(*(send_message(store, "k1") for _ in range(5)))
        store.close()
        return answers

    async def second_process() -> tuple[dict[str, Any], dict[str, Any] | None]:
        store = IdempotencyStore(tmp_path / "pod.db")
        return await send_message(store, "k1"), await store.get("k1")

    answers = run(first_process())
    again, stored = run(second_process())
    assert sends == ["k1"]
    assert all(a == answers[0] for a in answers) and again == answers[0] == stored


def test_a_key_is_released_before_its_message_id_and_held_after(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = IdempotencyStore(tmp_path / "pod.db")
        with pytest.raises(RuntimeError):
            async with store.claim("k1"):
                raise RuntimeError("not ready: nothing was sent")
        async with store.claim("k1") as claim:  # released: the client may retry
            assert (claim.response, claim.message_id) == (None, None)
            await store._db.run(lambda c: store.bind_in(c, "k1", "true_x@c.us_3EB0"))
        # A crash after the id was bound: the next claim gets that message to resolve.
        restarted = IdempotencyStore(tmp_path / "pod.db")
        async with restarted.claim("k1") as claim:
            assert (claim.response, claim.message_id) == (None, "true_x@c.us_3EB0")
            assert restarted._db.transact(lambda c: restarted.message_of(c, "true_x@c.us_3EB0"))
            await restarted._db.run(lambda c: restarted.complete_in(c, "k1", {"ok": 1}))
        async with restarted.claim("k1") as claim:
            assert claim.response == {"ok": 1}
        # An earlier process's reservation without an id sent nothing: it is taken over.
        await restarted._db.run(
            lambda c: c.execute(
                "INSERT INTO idempotency_keys (key, request_hash, created_at) VALUES ('k2', '', ?)",
                (time.time(),),
            )
        )
        async with restarted.claim("k2") as claim:
            assert (claim.response, claim.message_id) == (None, None)

    run(scenario())


def test_idempotency_mismatches_and_expiry(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = IdempotencyStore(tmp_path / "pod.db")
        with pytest.raises(IdempotencyMismatch):
            async with store.claim("k2", "a") as claim:
                await claim.complete({"ok": 2})
            async with store.claim("k2", "b"):
                pass
        short = IdempotencyStore(tmp_path / "pod.db", ttl_seconds=0.1)
        await short.put("k4", {"ok": 4})
        assert await short.get("k4") == {"ok": 4}
        await asyncio.sleep(0.15)
        assert await short.get("k4") is None

    run(scenario())


# --- ack watchdog -------------------------------------------------------------------------


class FakePod:
    """The messenger's side of a resend, with WhatsApp taking every message at once."""

    def __init__(self, ledger: MessageLedger) -> None:
        self.ledger = ledger
        self.resent: list[MessageRecord] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.fail_resend = False

    async def resend(self, record: MessageRecord) -> str | None:
        if self.fail_resend:
            await self.ledger.record_attempt(record.id)
            raise RuntimeError("page crashed")
        self.resent.append(record)
        wa_id = f"{record.id}-{record.attempts + 1}"

        def work(c: Any) -> None:
            self.ledger.add_attempt_in(c, record.id, wa_id)
            self.ledger.finish_in(c, wa_id, "sent", 1)

        await self.ledger.db.run(work)
        return wa_id

    def emit(self, type_: str, data: dict[str, Any]) -> None:
        self.events.append((type_, data))


def test_watchdog_resends_a_stalled_message_then_gives_up(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger = MessageLedger(tmp_path / "pod.db")
        pod = FakePod(ledger)
        dog = AckWatchdog(
            ledger, WatchdogSettings(deadline=60, max_attempts=3), pod.resend, pod.emit
        )
        await sent(ledger, "m1", "chat@c.us", "hello", ack=1)
        await sent(ledger, "ok", "chat@c.us", "fine", ack=1)
        await dog.on_ack("ok", 2)
        t = time.time()

        await dog.check(now=t + 30)  # within the deadline
        assert pod.resent == [] and pod.events == []

        await dog.check(now=t + 61)
        assert [r.body for r in pod.resent] == ["hello"]
        [(kind, data)] = pod.events
        assert kind == "message_stuck" and data["action"] == "resent"
        assert data["message_ids"] == ["m1", "m1-2"] and data["attempts"] == 2

        pod.fail_resend = True
        await dog.check(now=t + 200)
        assert pod.events[-1][1]["action"] == "resend_failed"
        assert (await ledger.get("m1")).attempts == 3

        await dog.check(now=t + 400)  # max attempts reached: give up
        assert pod.events[-1][0] == "message_stuck" and pod.events[-1][1]["action"] == "gave_up"
        assert (await ledger.get("m1")).status == "stuck"
        assert (await ledger.get("m1")).body is None
        count = len(pod.events)
        await dog.check(now=t + 10_000)
        assert len(pod.events) == count and len(pod.resent) == 1

    run(scenario())


def test_watchdog_does_not_resend_once_the_resend_is_received(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger = MessageLedger(tmp_path / "pod.db")
        pod = FakePod(ledger)
        dog = AckWatchdog(
            ledger, WatchdogSettings(deadline=60, max_attempts=5), pod.resend, pod.emit
        )
        await sent(ledger, "m1", "chat@c.us", "hello", ack=1)
        await dog.check(now=time.time() + 61)
        await dog.on_ack("m1-2", 2)
        await dog.check(now=time.time() + 1000)
        assert len(pod.resent) == 1 and (await ledger.get("m1")).status == "received"

    run(scenario())


def test_watchdog_emits_message_failed_once_on_ack_minus_1(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger = MessageLedger(tmp_path / "pod.db")
        pod = FakePod(ledger)
        dog = AckWatchdog(ledger, WatchdogSettings(deadline=1), pod.resend, pod.emit)
        await sent(ledger, "m1", "chat@c.us", "hello", ack=0)
        await dog.on_ack("m1", -1)
        await dog.on_ack("m1", -1)
        assert [kind for kind, _ in pod.events] == ["message_failed"]
        assert pod.events[0][1]["status"] == "failed" and pod.events[0][1]["failed_id"] == "m1"
        await dog.check(now=time.time() + 100)
        assert pod.resent == []  # failed messages are not resent

    run(scenario())


def test_watchdog_loop_runs_every_interval(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger = MessageLedger(tmp_path / "pod.db")
        pod = FakePod(ledger)
        await sent(ledger, "m1", "chat@c.us", "hello", ack=1)
        off = AckWatchdog(ledger, WatchdogSettings(enabled=False), pod.resend, pod.emit)
        off.start()
        dog = AckWatchdog(
            ledger,
            WatchdogSettings(deadline=1, max_attempts=2, interval=0.05),
            pod.resend,
            pod.emit,
        )
        dog.start()
        await until(lambda: len(pod.resent) == 1, within=5)
        await dog.stop()
        await off.stop()

    run(scenario())


def test_watchdog_settings_from_env() -> None:
    s = WatchdogSettings.from_env(
        {"ACK_WATCHDOG_ENABLED": "false", "ACK_DEADLINE_SECONDS": "120", "ACK_MAX_ATTEMPTS": "2"}
    )
    assert (s.enabled, s.deadline, s.max_attempts, s.interval) == (False, 120, 2, 30)


# --- rate limiter -------------------------------------------------------------------------


def test_rate_limiter_queues_instead_of_dropping() -> None:
    async def scenario() -> list[tuple[int, float]]:
        limiter = RateLimiter(per_minute=600)  # one every 0.1 s
        start = time.monotonic()
        done: list[tuple[int, float]] = []

        async def send(n: int) -> None:
            async with limiter:
                done.append((n, time.monotonic() - start))

        await asyncio.gather(*(send(n) for n in range(5)))
        return done

    done = run(scenario())
    assert [n for n, _ in done] == [0, 1, 2, 3, 4]  # all of them, first come first served
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(done)]
    assert all(gap >= 0.09 for gap in gaps), gaps
    assert done[0][1] < 0.05


def test_rate_limiter_burst_and_disabled() -> None:
    async def timed(limiter: RateLimiter, count: int) -> float:
        start = time.monotonic()
        for _ in range(count):
            await limiter.acquire()
        return time.monotonic() - start

    assert run(timed(RateLimiter(per_minute=0), 100)) < 0.05
    assert run(timed(RateLimiter(per_minute=600, burst=3), 3)) < 0.05
    assert run(timed(RateLimiter(per_minute=600, burst=3), 4)) >= 0.09
