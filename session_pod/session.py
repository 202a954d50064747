"""One location's WhatsApp session: supervises the browser and turns page signals into state.

The supervisor launches the browser, watches it (crash, close, or a page that stops
answering), and relaunches it on the same profile with a bounded exponential backoff, so
a linked session comes back without a new QR. It gives up (state `failed`, liveness
fails, Kubernetes restarts the pod) only after several launches in a row that never
reached a healthy page. A ready browser whose process tree grew past
BROWSER_MEMORY_LIMIT_MB is recycled: a planned relaunch, once the sends in flight are over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from whatsapp_common.backoff import backoff_delay
from whatsapp_common.event_types import EventType
from whatsapp_common.logs import get_logger
from whatsapp_common.states import AUTHENTICATED, SessionState
from whatsapp_common.tasks import cancel_and_wait

from .backup_schedule import BackupSchedule
from .browser_memory import browser_tree_bytes
from .config import Settings
from .driver import BridgeMessage, DriverError, WhatsAppWebDriver
from .events import EventBus
from .gate import OperationGate
from .links import QrLinks
from .metrics import Metrics
from .state_machine import StateMachine
from .storage import StoreError

log = get_logger(__name__)
S = SessionState
# How long WhatsApp keeps a linking code before wa-js asks for a new one (LINK_CODE_TTL_MS in
# src/conn/functions/linkDeviceCodeLifecycle.ts).
PAIRING_CODE_TTL_SECONDS = 3.25 * 60


class NotReady(RuntimeError):
    """The session cannot send yet (no login, still syncing, browser restarting)."""


class UnknownNumber(ValueError):
    """The receiver is not registered on WhatsApp."""


class AlreadyLinked(RuntimeError):
    """A phone is linked already: WhatsApp gives no linking code then."""


class NumberUnchecked(RuntimeError):
    """WhatsApp could not be asked whether the receiver is registered (offline, server error):
    not a reason to drop the customer."""


@dataclass(frozen=True)
class SendResult:
    """What WhatsApp Web said of one send: `result` is wa-js's messageSendResult (`OK`,
    `ERROR_NETWORK`, ...), or None while the message waits in WhatsApp Web's queue."""

    id: str
    ack: int
    result: str | None


@dataclass(frozen=True)
class RunEnd:
    """Why a browser run ended; `planned`: the pod relaunches it by choice (its memory)."""

    reason: str
    planned: bool = False


@dataclass(frozen=True)
class QrCode:
    code: str
    issued_at: float
    expires_at: float


@dataclass(frozen=True)
class PairingCode:
    """A code the phone whose number it was asked for types in, instead of scanning the QR."""

    code: str  # as WhatsApp shows it: ABCD-EFGH
    phone: str
    issued_at: float
    expires_at: float


def shown_code(code: str) -> str:
    """'ABCD1234' -> 'ABCD-1234', the way WhatsApp shows a linking code."""
    return f"{code[:4]}-{code[4:]}" if len(code) == 8 and code.isalnum() else code


def derive_state(snapshot: dict[str, Any]) -> SessionState:
    """Where the page says the session is. Ready = authenticated and stream mode MAIN."""
    mode, authenticated = snapshot.get("mode"), bool(snapshot.get("authenticated"))
    if mode == "MAIN" and authenticated:
        return S.READY
    if mode == "SYNCING":
        return S.SYNCING if authenticated else S.AUTHENTICATING
    if mode == "QR" or (mode == "MAIN" and not authenticated):
        return S.AUTHENTICATING if authenticated else S.QR_REQUIRED
    return S.DISCONNECTED


def phone_of(wid: str) -> str:
    """'5491100000001:12@c.us' -> '5491100000001'."""
    return wid.split("@", 1)[0].split(":", 1)[0]


class Session:
    def __init__(
        self,
        settings: Settings,
        bus: EventBus,
        metrics: Metrics,
        backups: BackupSchedule,
        on_message: Callable[[dict[str, Any]], object],
        on_ack: Callable[[str, int, str | None], object],
    ) -> None:
        """`on_message` gets every message the page reports (the inbox keeps the customers'),
        `on_ack(message id, ack, chat)` every ack of every message."""
        self.settings = settings
        self._on_message = on_message
        self._on_ack = on_ack
        self.bus = bus
        self.metrics = metrics
        self.backups = backups
        self.machine = StateMachine(self._on_state_change)
        self.driver = WhatsAppWebDriver(settings, self._on_bridge, self._on_browser_dead)
        self.gate = OperationGate()  # what a recycle lets finish first (the send path)
        self.phone: str | None = None
        self.qr: QrCode | None = None
        self.pairing: PairingCode | None = None
        self._links = QrLinks(settings.location_id, settings.links)
        self._pairing_phone = ""
        self._idle_code: str | None = None  # a code that went idle is never shown again
        self.last_error: str | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._browser_dead = asyncio.Event()
        self._dead_reason = ""
        self._healthy_since_launch = False
        self._logging_out = False
        self._linked = False  # the profile holds a login worth backing up
        self._lifecycle = asyncio.Lock()
        metrics.set_state(self.machine.state)

    @property
    def state(self) -> SessionState:
        return self.machine.state

    # lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Starts the supervisor (browser) unless it runs already."""
        if self._supervisor is not None and not self._supervisor.done():
            return
        self._move(S.STARTING, "starting", force=True)
        self._supervisor = asyncio.create_task(self._supervise(), name="browser-supervisor")

    async def close(self) -> None:
        """SIGTERM: closes the browser cleanly, then backs up the closed (consistent) profile."""
        async with self._lifecycle:
            self.backups.session_not_ready()
            await self._stop_supervisor()
            if self._linked:
                await self.backups.backup("shutdown")

    async def login(self) -> None:
        """The seed's /login: (re)initializes a stopped session, refreshes an expired QR."""
        async with self._lifecycle:
            if self.state in (S.LOGGED_OUT, S.FAILED):
                await self.start()
            elif self.state == S.QR_REQUIRED and self.qr is None:
                with contextlib.suppress(DriverError):
                    await self.driver.reload_qr()

    async def logout(self) -> None:
        """Unlinks the device, closes the browser, forgets the login here and in the backups."""
        async with self._lifecycle:
            if self.driver.running and self.state in (S.READY, S.SYNCING, S.DISCONNECTED):
                self._logging_out = True
                try:
                    await self.driver.call("logout")
                except DriverError as exc:
                    log.warning("WhatsApp logout call failed; wiping the profile", error=str(exc))
            await self._stop_supervisor()
            self._logging_out, self._linked = False, False
            await asyncio.to_thread(shutil.rmtree, self.settings.profile_dir, True)
            self.phone, self.qr, self.pairing = None, None, None
            self._move(S.LOGGED_OUT, "logout requested", force=True)
            await self.backups.delete_all()

    def fail(self, reason: str) -> None:
        """Something the session cannot work without broke: report it (liveness fails)."""
        log.error("session failed", reason=reason)
        self.last_error = reason
        self._move(S.FAILED, reason, force=True)

    async def healthy(self) -> tuple[bool, str]:
        """Liveness: the browser answers, or is being (re)started. `failed` is not live."""
        if self.state == S.FAILED:
            return False, self.last_error or "failed"
        if self.driver.running and not await self.driver.ping():
            return False, "the browser did not answer in time"
        return True, str(self.state)

    # WhatsApp operations ---------------------------------------------------------------

    async def pairing_code(self, phone: str) -> PairingCode:
        """A linking code for `phone` (digits), while the QR is shown; the same number gets
        the code it has while that one lives. AlreadyLinked, NotReady otherwise."""
        if self.state in AUTHENTICATED:
            raise AlreadyLinked(str(self.state))
        if self.state != S.QR_REQUIRED:
            raise NotReady(str(self.state))
        self._pairing_phone = phone
        answer = await self.driver.call("pairingCode", phone)
        if answer.get("linked"):
            raise AlreadyLinked(str(self.state))
        return self._pairing_code_changed(answer["code"])

    def require_ready(self) -> None:
        if self.state != S.READY:
            raise NotReady(str(self.state))

    async def check_number(self, chat_id: str) -> str:
        """The receiver's WhatsApp id; UnknownNumber or NumberUnchecked otherwise."""
        self.require_ready()
        found = await self.driver.call("checkNumber", chat_id)
        if found is None:
            raise UnknownNumber(chat_id)
        if found.get("unchecked"):
            raise NumberUnchecked(chat_id)
        return found["wid"]

    async def prepare_send(self, wid: str) -> tuple[str, str]:
        """(the chat WhatsApp Web sends to, maybe a @lid one; the id chosen for the message)."""
        self.require_ready()
        prepared = await self.driver.call("prepareSend", wid)
        return prepared["chat"], prepared["id"]

    async def send_prepared(self, chat: str, message_id: str, text: str) -> SendResult:
        """Sends under the chosen id, waiting for WhatsApp's answer at most SEND_WAIT_SECONDS."""
        self.require_ready()
        started = time.perf_counter()
        sent = await self.driver.call(
            "sendText",
            chat,
            text,
            message_id,
            self.settings.send_options(),
            int(self.settings.send_wait * 1000),
        )
        self.metrics.messages_sent.inc()
        self.metrics.send_seconds.observe(time.perf_counter() - started)
        return SendResult(sent["id"], sent["ack"], sent["result"])

    async def find_message(self, message_id: str) -> dict[str, Any] | None:
        """The message as WhatsApp Web has it, or None when WhatsApp does not have it."""
        self.require_ready()
        return await self.driver.call("findMessage", message_id)

    async def recent_chats(self, count: int) -> list[dict[str, Any]]:
        self.require_ready()
        return await self.driver.call("recentChats", count)

    async def chat_messages(self, chat: str, count: int) -> list[dict[str, Any]]:
        self.require_ready()
        return await self.driver.call("chatMessages", chat, count)

    async def archive(self, chat_id: str) -> bool:
        """The seed archived each chat after sending; a failure here is not a failed send."""
        if not self.settings.archive_after_send:
            return False
        try:
            return await self.driver.call("archive", chat_id)
        except DriverError as exc:
            log.warning("chat not archived after send", chat=chat_id, error=str(exc))
            return False

    async def chats(self, count: int, messages_per_chat: int) -> list[dict[str, Any]]:
        self.require_ready()
        return await self.driver.call("chats", count, messages_per_chat)

    async def contacts(self) -> list[dict[str, Any]]:
        self.require_ready()
        return await self.driver.call("contacts")

    # the supervisor ----------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Runs the browser for as long as the session lives. Whatever it did not expect
        (a full disk while restoring, Playwright failing to stop) fails the session with the
        reason, so liveness fails too: it never ends unobserved."""
        try:
            await self._run_browser()
        except asyncio.CancelledError:
            raise
        except StoreError as exc:
            self.fail(f"backup storage error: {exc}")
        except Exception as exc:
            log.exception("session supervisor failed")
            self.metrics.task_failures.labels("browser-supervisor").inc()
            self.fail(f"unexpected error: {type(exc).__name__}: {exc}")

    async def _run_browser(self) -> None:
        await self.backups.restore()
        failures = 0
        while True:
            self._browser_dead.clear()
            self._healthy_since_launch = False
            try:
                await self.driver.launch()
                end = await self._watch()
            except (DriverError, OSError) as exc:
                end = RunEnd(str(exc))
            if end.planned:
                await self._recycle(end.reason)
                failures = 0
                continue
            reason = end.reason
            self.metrics.browser_restarts.inc()
            await self.driver.close()
            failures = 0 if self._healthy_since_launch else failures + 1
            self.last_error = reason
            if failures >= self.settings.relaunch_max_attempts:
                self._move(S.FAILED, reason)
                return
            self._move(S.DISCONNECTED, reason)
            delay = backoff_delay(failures, 1.0, self.settings.relaunch_backoff_max)
            log.warning("relaunching the browser", reason=reason, delay=delay, failures=failures)
            await asyncio.sleep(delay)
            self._move(S.STARTING, "relaunching the browser")

    async def _watch(self) -> RunEnd:
        """Returns why the browser has to be relaunched: it died, stopped answering, or (a
        planned relaunch) its memory grew past the limit while ready."""
        memory_check_at = time.monotonic() + self.settings.browser_memory_check_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._browser_dead.wait(), self.settings.health_check_interval
                )
                return RunEnd(self._dead_reason)
            if not await self.driver.ping():
                return RunEnd("the page stopped answering")
            if time.monotonic() >= memory_check_at:
                memory_check_at = time.monotonic() + self.settings.browser_memory_check_interval
                if over := await self._memory_over_limit():
                    return RunEnd(over, planned=True)

    async def _memory_over_limit(self) -> str | None:
        """Measures the browser's process tree (the gauge); says why a ready session's
        browser is to be recycled, if it is."""
        used = await asyncio.to_thread(browser_tree_bytes, os.getpid())
        self.metrics.browser_memory.set(used)
        limit = self.settings.browser_memory_limit_mb
        if limit and self.state == S.READY and used > limit * 2**20:
            return f"browser memory {used / 2**20:.0f} MB over the {limit:g} MB limit"
        return None

    async def _recycle(self, reason: str) -> None:
        """A planned relaunch on the same profile. Operations in flight (sends, the
        catch-up) finish first; sends that arrive meanwhile wait at the gate until the
        browser is back (it opens at the next state that is not on the way to ready). No
        QR (the profile is closed cleanly), and what the page missed is caught up after
        READY as after any start."""
        log.info("recycling the browser", reason=reason)
        self.metrics.browser_recycles.inc()
        # A send makes a few calls, each bounded by CALL_TIMEOUT_SECONDS; one cut after
        # that is resolved as after a crash (its outcome is looked up).
        still_running = await self.gate.close(2 * self.settings.call_timeout)
        if still_running:
            log.warning("recycling with operations still running", operations=still_running)
        self._move(S.STARTING, f"recycling the browser: {reason}")
        await self.driver.close()

    async def _stop_supervisor(self) -> None:
        task, self._supervisor = self._supervisor, None
        await cancel_and_wait(task)
        await self.driver.close()
        self.gate.open()

    async def _sync_finished(self) -> bool:
        """WhatsApp's initial history sync is over (the login data has settled)."""
        try:
            return await self.driver.call("syncFinished")
        except DriverError:
            return False

    def _on_browser_dead(self, reason: str) -> None:
        self._dead_reason = reason
        self._browser_dead.set()

    # page signals -> state -----------------------------------------------------------------

    def _on_bridge(self, message: BridgeMessage) -> None:
        kind, data = message.type, message.data or {}
        if kind == "conn.qrcode_idle":
            self._idle_code = self.qr.code if self.qr else self._idle_code
            self.qr = None
            self.bus.publish(EventType.QR_IDLE, {})
        elif kind == "conn.logout_reason":
            self.last_error = f"logged out: {data.get('reason')}"
        elif kind == "conn.logout" and not self._logging_out:
            self.phone, self.qr, self.pairing, self._linked = None, None, None, False
            self._move(S.QR_REQUIRED, "logged out remotely")
            self.bus.publish(EventType.DISCONNECTED, {"reason": "logout"})
        elif kind == "conn.link_code_change" and self.state == S.QR_REQUIRED:
            self._pairing_code_changed(data["code"])
        elif kind in ("conn.link_code_expired", "conn.link_code_error") and self.pairing:
            log.warning("the linking code ended", reason=kind, error=data.get("error"))
            self.pairing = None
        elif kind == "chat.new_message":
            self._on_message(data)
        elif kind == "chat.msg_ack_change":
            for message_id in data.get("ids", []):
                self._on_ack(message_id, data.get("ack"), data.get("chat"))
        if message.snapshot is not None and kind != "conn.logout":
            self._apply(message.snapshot)

    def _apply(self, snapshot: dict[str, Any]) -> None:
        if snapshot.get("me"):
            self.phone = phone_of(snapshot["me"])
        code = snapshot.get("qr")
        if code == self._idle_code:
            code = None
        if code and (self.qr is None or self.qr.code != code):
            now = time.time()
            self.qr = QrCode(code, now, now + self.settings.qr_ttl)
            link = self._links.current()  # the link page's URL, for Rails to send on
            self.bus.publish(EventType.QR, {"qr": code, "expires_at": self.qr.expires_at, **link})
        target = derive_state(snapshot)
        if self.state == S.STARTING and snapshot.get("mode") == "OFFLINE":
            return  # a page that has not connected since it loaded is still starting
        if target == S.QR_REQUIRED and self.state == S.AUTHENTICATING and not code:
            return  # scanned: the page has not switched to SYNCING yet
        if target in (S.READY, S.QR_REQUIRED):
            self._healthy_since_launch = True
        if target != S.QR_REQUIRED:
            self.qr, self.pairing = None, None
        self._move(target, f"stream mode {snapshot.get('mode')}")

    def _pairing_code_changed(self, code: str) -> PairingCode:
        """The page's current linking code; a new one is published (event `pairing_code`)."""
        shown = shown_code(code)
        if self.pairing is not None and self.pairing.code == shown:
            return self.pairing
        now = time.time()
        self.pairing = PairingCode(shown, self._pairing_phone, now, now + PAIRING_CODE_TTL_SECONDS)
        data = {"pairing_code": shown, "phone": self._pairing_phone}
        self.bus.publish(EventType.PAIRING_CODE, {**data, "expires_at": self.pairing.expires_at})
        return self.pairing

    def _move(self, target: SessionState, reason: str, force: bool = False) -> None:
        """State changes from page signals are ignored once the session is stopped."""
        if not force and self.state in (S.LOGGED_OUT, S.FAILED):
            return
        self.machine.move(target, reason)

    def _on_state_change(self, old: SessionState, new: SessionState, reason: str) -> None:
        self.metrics.set_state(new)
        if new not in (S.STARTING, S.SYNCING, S.AUTHENTICATING):
            self.gate.open()  # a recycle is over: back to ready, or somewhere it cannot send
        if new == S.READY:
            self._linked = True
            self.backups.session_ready(self._sync_finished)
        elif old == S.READY:
            self.backups.session_not_ready()
        self.bus.publish(
            EventType.STATE,
            {"state": str(new), "previous": str(old), "reason": reason, "phone": self.phone},
        )
        if old == S.QR_REQUIRED and new in (S.AUTHENTICATING, S.SYNCING, S.READY):
            # The seed's `authenticated`: the QR was scanned. Not wa-js's conn.authenticated,
            # which fires at main_loaded, maybe after MAIN (and never for a restored session).
            self.bus.publish(EventType.AUTHENTICATED, {"phone": self.phone})
        if new == S.READY:
            self.bus.publish(EventType.READY, {"phone": self.phone})
        elif new == S.DISCONNECTED:
            self.bus.publish(EventType.DISCONNECTED, {"reason": reason})
        elif new == S.QR_REQUIRED and old == S.AUTHENTICATING:
            self.bus.publish(EventType.AUTH_FAILURE, {"reason": reason})
