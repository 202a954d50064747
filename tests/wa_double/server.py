"""The WhatsApp Web double: web.whatsapp.com, WhatsApp's servers and the user's phone in one
small aiohttp app.

The page (static/index.html + static/wpp.js) exposes a subset of wa-js's `window.WPP` and
talks to this server over the WebSocket `/ws`; the server is the source of truth for
devices, chats, messages, contacts and acks. Tests drive it through `/control/...`.

What it models of WhatsApp (wa-js 4.6.0 paths in static/wpp.js): a send taken by the server
is acked SENT before the send call returns; a user may live under a LID (`<digits>@lid`):
their chat is found under it and their receipts (acks >= RECEIVED) name it; an incoming
message is kept for the device until the page says it took it, and pushed again after a
reconnect; a refused send is a result (`ERROR_NETWORK`), not an error; a message id sent
twice is counted as delivered twice (`deliveries`), so a double send is visible; a linking code
asked for a phone number (genLinkDeviceCodeForPhoneNumber) links the page when the phone with
that number types it in (`/control/pair`), as a scan does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web

STATIC = Path(__file__).with_name("static")
NO_STORE = {"Cache-Control": "no-store"}
LOG = logging.getLogger(__name__)

Json = dict[str, Any]
T = TypeVar("T")

UNKNOWN_COMPANION = "unknown_companion"  # the wa-js LogoutReason of a revoked device
STORE_LOGIN_SECONDS = 10
CLOSE_SECONDS = 2  # a hung ("crashed") page never answers a close frame


PAGE_FAULTS = ("hang_before_send", "hang_after_taking_incoming")
SERVER_FAULTS = ("crash_after_taking_send",)
INCOMING_KINDS = ("chat", "notification", "status", "ciphertext")
# The characters of a linking code (WhatsApp shows it as ABCD-EFGH on the page and the phone).
LINK_CODE_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"


@dataclass(frozen=True)
class Settings:
    qr_rotate_seconds: float = 20.0
    qr_max_rotations: int = 5
    sync_seconds: float = 0.5
    ack_delay_seconds: float = 0.2


class ControlError(Exception):
    """A refused control request, answered as JSON `{error}` with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class PageError(Exception):
    """A refused page request: the WPP call rejects with an Error carrying this message (a
    WPPError when `code` is set, as wa-js throws)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class CrashPage(Exception):
    """The request was taken; the page hangs instead of getting the answer."""


def _number(value: str) -> str:
    """The digits of a phone number, from `+54 9 11...`, `549...@c.us` or `549...:12@c.us`."""
    return re.sub(r"\D", "", value.split("@")[0].split(":")[0])


def _chat_id(value: str) -> str:
    if value.endswith(("@g.us", "@lid")):
        return value
    return f"{_number(value)}@c.us"


def _b64(size: int) -> str:
    return base64.b64encode(secrets.token_bytes(size)).decode()


def _auth_code() -> Json:
    """An AuthCodeMultiDevice: fullCode is `ref,staticKey,identityKey,secretKey`."""
    code = {
        "type": "multidevice",
        "ref": f"2@{_b64(45)}",
        "staticKeyPair": _b64(32),
        "identityKeyPair": _b64(32),
        "secretKey": _b64(32),
    }
    keys = ("ref", "staticKeyPair", "identityKeyPair", "secretKey")
    return {**code, "fullCode": ",".join(code[key] for key in keys)}


@dataclass
class Message:
    chat: str
    key_id: str
    from_me: bool
    sender: str
    to: str
    body: str
    t: int
    ack: int
    notify_name: str | None
    kind: str = "chat"
    deliveries: int = 1

    @property
    def in_group(self) -> bool:
        return self.chat.endswith("@g.us")

    @property
    def id(self) -> str:
        participant = f"_{self.sender}" if self.in_group and not self.from_me else ""
        return f"{str(self.from_me).lower()}_{self.chat}_{self.key_id}{participant}"

    def key(self) -> Json:
        """A MsgKey, wids as strings (the page turns them into Wid objects)."""
        return {
            "fromMe": self.from_me,
            "remote": self.chat,
            "id": self.key_id,
            "_serialized": self.id,
        }

    def raw(self) -> Json:
        """A RawMessage, wids as strings."""
        incoming_in_group = self.in_group and not self.from_me
        raw: Json = {
            "id": self.key(),
            "from": self.chat if incoming_in_group else self.sender,
            "to": self.to,
            "body": self.body,
            "type": {"notification": "notification_template"}.get(self.kind, "chat"),
            "t": self.t,
            "ack": self.ack,
        }
        if self.kind == "notification":
            raw["isNotification"] = True
        if self.kind == "status":
            raw["isStatusV3"] = True
        if incoming_in_group:
            raw["author"] = self.sender
        if self.notify_name:
            raw["notifyName"] = self.notify_name
        return raw

    def control(self) -> Json:
        raw = self.raw()
        return {
            "id": self.id,
            "chat": self.chat,
            "from": raw["from"],
            "to": self.to,
            "body": self.body,
            "ack": self.ack,
            "fromMe": self.from_me,
            "deliveries": self.deliveries,
        }


@dataclass
class Chat:
    id: str
    group_name: str | None
    activity: int
    members: list[str] = field(default_factory=list)
    t: int = field(default_factory=lambda: int(time.time()))
    archived: bool = False
    messages: list[Message] = field(default_factory=list)

    @property
    def is_group(self) -> bool:
        return self.id.endswith("@g.us")


class Connection:
    """One page's WebSocket."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.phone: Phone | None = None
        self.main = False  # past SYNCING: pushes go out instead of waiting
        self.code: Json | None = None
        self.link_code: tuple[str, str] | None = None  # (code, the number it was asked for)
        self.qr_task: asyncio.Task[None] | None = None
        self.rotations_left = 0
        self.stored: asyncio.Future[None] | None = None
        self.keep_alive = False  # WPP.conn.setKeepAlive(true) was called in the page

    async def send(self, payload: Json) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.ws.send_json(payload)


def _event(is_set: bool) -> asyncio.Event:
    event = asyncio.Event()
    if is_set:
        event.set()
    return event


@dataclass
class Phone:
    """A user's phone, and the one WhatsApp Web device it may have linked."""

    number: str
    token: str | None = None
    connection: Connection | None = None
    contacts: dict[str, str] = field(default_factory=dict)
    chats: dict[str, Chat] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    undelivered: list[Json] = field(default_factory=list)
    held: dict[str, Json] = field(default_factory=dict)  # incoming, until the page took it
    auto_acks: bool = True
    fail_sends: int = 0
    fail_queries: int = 0
    fault: str | None = None
    sync_progress: int | None = 100
    offline_until: float = 0.0
    sends_released: asyncio.Event = field(default_factory=lambda: _event(is_set=True))

    @property
    def wid(self) -> str:
        return f"{self.number}@c.us"


def _required(body: Json, key: str, kind: type[T]) -> T:
    value = body.get(key)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ControlError(400, f"{key!r} must be a {kind.__name__}")
    return value


def _optional(body: Json, key: str, kind: type[T]) -> T | None:
    return None if body.get(key) is None else _required(body, key, kind)


def _phone_number(value: str) -> str:
    number = _number(value)
    if not number:
        raise ControlError(400, f"{value!r} is not a phone number")
    return number


async def _body(request: web.Request) -> Json:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        raise ControlError(400, "the body must be JSON") from None
    if not isinstance(body, dict):
        raise ControlError(400, "the body must be a JSON object")
    return body


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ControlError as error:
        return web.json_response({"error": str(error)}, status=error.status)
    except web.HTTPException as error:
        if request.path.startswith("/control") and error.status >= 400:
            return web.json_response({"error": error.reason}, status=error.status)
        raise


class Double:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._connections: list[Connection] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._activity = itertools.count()
        self._users: dict[str, str | None] = {}  # registered number -> pushname
        self._lids: dict[str, str] = {}  # registered number -> its LID digits
        self._pn_chats: set[str] = set()  # LID users whose chat stays under the phone number
        self._phones: dict[str, Phone] = {}
        self._messages: dict[str, tuple[Phone, Message]] = {}
        self._issued_codes: set[str] = set()
        self._issued_link_codes: set[str] = set()
        self._requests: dict[str, Callable[[Connection, Json], Awaitable[Any]]] = {
            "find_chat": self._find_chat_request,
            "send_text": self._send_text,
            "get_message": self._get_message,
            "reload_qr": self._reload_qr,
            "link_code": self._link_code,
            "archive": self._archive,
            "chat_list": self._chat_list,
            "get_messages": self._get_messages,
            "contact_list": self._contact_list,
            "query_wid": self._query_wid,
            "logout": self._logout,
        }

    def routes(self) -> list[web.RouteDef]:
        phone = "/control/phones/{phone}"
        return [
            web.get("/", self._index),
            web.get("/wpp.js", self._script),
            web.get("/ws", self._page_socket),
            web.get("/control/qr", self._qr_codes),
            web.post("/control/qr/rotate", self._rotate_codes),
            web.post("/control/qr/expire", self._expire_codes),
            web.post("/control/scan", self._scan),
            web.get("/control/link_codes", self._link_codes),
            web.post("/control/pair", self._pair),
            web.post("/control/numbers", self._register_numbers),
            web.get(phone, self._phone_state),
            web.post(f"{phone}/contacts", self._save_contacts),
            web.post(f"{phone}/groups", self._create_group),
            web.post(f"{phone}/incoming", self._incoming),
            web.post(f"{phone}/acks", self._auto_acks),
            web.post(f"{phone}/fail_sends", self._fail_sends),
            web.post(f"{phone}/fail_queries", self._fail_queries),
            web.post(f"{phone}/hold_sends", self._hold_sends),
            web.post(f"{phone}/fault", self._set_fault),
            web.post(f"{phone}/sync", self._set_sync),
            web.post(f"{phone}/drop", self._drop),
            web.post(f"{phone}/logout", self._remote_logout),
            web.post(f"{phone}/crash", self._crash),
            web.post("/control/messages/{msg_id}/ack", self._set_ack_control),
            web.post("/control/reset", self._reset),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(
            *(c.ws.close(code=WSCloseCode.GOING_AWAY) for c in list(self._connections))
        )

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOG.error("background task failed", exc_info=task.exception())

    # ---- the page ------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.FileResponse:
        # Like WhatsApp: headless Chromium's user agent gets "update Google Chrome", no WPP.
        headless = "HeadlessChrome" in request.headers.get("User-Agent", "")
        return web.FileResponse(
            STATIC / ("update.html" if headless else "index.html"), headers=NO_STORE
        )

    async def _script(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "wpp.js", headers=NO_STORE)

    async def _page_socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(timeout=CLOSE_SECONDS)
        await ws.prepare(request)
        connection = Connection(ws)
        self._connections.append(connection)
        try:
            async for frame in ws:
                if frame.type is WSMsgType.TEXT:
                    await self._on_page_message(connection, json.loads(frame.data))
        finally:
            self._connections.remove(connection)
            self._cancel_qr(connection)
            if connection.phone and connection.phone.connection is connection:
                connection.phone.connection = None
        return ws

    async def _on_page_message(self, connection: Connection, message: Json) -> None:
        kind = message.get("type")
        if kind == "hello":
            connection.keep_alive = bool(message.get("keepAlive"))
            await self._hello(connection, message.get("token"))
        elif kind == "stored" and connection.stored and not connection.stored.done():
            connection.stored.set_result(None)
        elif kind == "request":  # answered concurrently, as WhatsApp's servers do
            self._spawn(self._answer(connection, message))
        elif kind == "took" and connection.phone:
            connection.phone.held.pop(str(message.get("id")), None)
        elif kind == "keep_alive":
            connection.keep_alive = bool(message.get("enable"))

    async def _hello(self, connection: Connection, token: str | None) -> None:
        phone = next((p for p in self._phones.values() if token and p.token == token), None)
        if phone and phone.offline_until > time.monotonic():
            await connection.ws.close()  # "dropped": refused until offline_until
        elif phone:
            self._attach(connection, phone)
            await connection.send({"type": "resume", "syncProgress": phone.sync_progress})
            self._spawn(self._sync(connection, phone))
        else:
            if token:  # revoked while the page was away
                await connection.send({"type": "invalid", "reason": UNKNOWN_COMPANION})
            await self._start_qr(connection)

    async def _answer(self, connection: Connection, request: Json) -> None:
        handler = self._requests.get(request.get("method", ""))
        try:
            if handler is None:
                raise PageError(f"unknown method {request.get('method')!r}")
            answer = {"result": await handler(connection, request.get("params") or {})}
        except CrashPage:
            await connection.send({"type": "crash"})
            return
        except PageError as error:
            answer = {"error": str(error), **({"code": error.code} if error.code else {})}
        except Exception as error:
            LOG.exception("page request %s failed", request.get("method"))
            answer = {"error": f"internal error of the double: {error!r}"}
        await connection.send({"type": "response", "id": request.get("id"), **answer})

    def _attach(self, connection: Connection, phone: Phone) -> None:
        connection.phone, connection.main, phone.connection = phone, False, connection

    def _unlink(self, phone: Phone) -> Connection | None:
        """Revokes the phone's device; returns its connection if it is online."""
        connection, phone.connection = phone.connection, None
        phone.token = None
        phone.undelivered.clear()
        phone.held.clear()
        if connection:
            connection.phone, connection.main = None, False
        return connection

    async def _sync(self, connection: Connection, phone: Phone) -> None:
        """SYNCING for sync_seconds, then MAIN and whatever arrived while away."""
        await asyncio.sleep(self.settings.sync_seconds)
        if phone.connection is not connection:
            return
        await connection.send({"type": "main", "syncProgress": phone.sync_progress})
        if phone.fault in PAGE_FAULTS:
            await connection.send({"type": "fault", "fault": phone.fault})
            phone.fault = None  # one crash, not one per relaunch
        for payload in list(phone.held.values()):
            await connection.send(payload)
        while phone.undelivered:
            await connection.send(phone.undelivered.pop(0))
        connection.main = True

    async def _push(self, phone: Phone, payload: Json, hold: bool = True) -> None:
        """Now to the online page, or later; `hold=False` for what `phone.held` keeps."""
        if phone.connection and phone.connection.main:
            await phone.connection.send(payload)
        elif phone.token and hold:
            phone.undelivered.append(payload)

    # ---- QR codes --------------------------------------------------------------------------

    async def _start_qr(self, connection: Connection) -> None:
        connection.rotations_left = self.settings.qr_max_rotations
        await self._show_code(connection)

    async def _show_code(self, connection: Connection) -> None:
        self._cancel_qr(connection)
        connection.code = _auth_code()
        self._issued_codes.add(connection.code["fullCode"])
        connection.qr_task = self._spawn(self._code_expires(connection))
        await connection.send({"type": "qr", "code": connection.code})

    async def _code_expires(self, connection: Connection) -> None:
        await asyncio.sleep(self.settings.qr_rotate_seconds)
        connection.qr_task = None
        if connection.rotations_left > 0:
            connection.rotations_left -= 1
            await self._show_code(connection)
        else:
            await self._idle(connection)

    async def _idle(self, connection: Connection) -> None:
        self._cancel_qr(connection)
        connection.code = None
        await connection.send({"type": "qr_idle"})

    def _cancel_qr(self, connection: Connection) -> None:
        if connection.qr_task:
            connection.qr_task.cancel()
            connection.qr_task = None

    def _pending_codes(self) -> list[Connection]:
        return [c for c in self._connections if c.code]

    # ---- page requests (WPP calls) ---------------------------------------------------------

    def _linked(self, connection: Connection) -> Phone:
        if connection.phone is None:
            raise PageError("not logged in")
        return connection.phone

    def _find_chat(self, phone: Phone, chat_id: str) -> Chat:
        """A chat by its exact id: one that lives under a LID is not found by phone number
        (wa-js assertGetChat: chat_not_found)."""
        chat = phone.chats.get(_chat_id(chat_id))
        if chat is None:
            raise PageError(f"Chat not found for {_chat_id(chat_id)}", "chat_not_found")
        return chat

    def _user_wid(self, number: str) -> str:
        """Where WhatsApp addresses a user: the LID once they have one (chat.find may resolve
        a phone number to a @lid chat), unless their chat predates it."""
        if number in self._lids and number not in self._pn_chats:
            return f"{self._lids[number]}@lid"
        return f"{number}@c.us"

    def _number_of(self, chat_or_wid: str) -> str:
        """The phone number behind a chat id or wid, LIDs included."""
        digits = _number(chat_or_wid)
        if chat_or_wid.endswith("@lid"):
            return next((n for n, lid in self._lids.items() if lid == digits), digits)
        return digits

    def _chat_with(self, phone: Phone, number: str) -> Chat:
        wid = self._user_wid(number)
        if wid not in phone.chats:
            phone.chats[wid] = Chat(wid, None, next(self._activity))
        return phone.chats[wid]

    def _add_message(
        self,
        phone: Phone,
        chat: Chat,
        sender: str,
        body: str,
        notify_name: str | None = None,
        key_id: str | None = None,
        kind: str = "chat",
    ) -> Message:
        from_me = sender == phone.wid
        message = Message(
            chat=chat.id,
            key_id=key_id or "3EB0" + secrets.token_hex(10).upper(),
            from_me=from_me,
            sender=sender,
            to=chat.id if from_me else phone.wid,
            body=body,
            t=int(time.time()),
            ack=1,
            notify_name=notify_name,
            kind=kind,
        )
        if kind != "status":
            chat.messages.append(message)
            chat.t, chat.activity = message.t, next(self._activity)
        phone.messages.append(message)
        self._messages[message.id] = (phone, message)
        return message

    async def _find_chat_request(self, connection: Connection, params: Json) -> Json:
        phone = self._linked(connection)
        chat_id = _chat_id(str(params["chatId"]))
        if chat_id.endswith("@g.us"):
            chat = self._find_chat(phone, chat_id)
        elif self._number_of(chat_id) in self._users:
            chat = self._chat_with(phone, self._number_of(chat_id))
        else:
            raise PageError(f"Failed to find or create chat for {chat_id}")
        return {"id": chat.id, "name": chat.group_name, "formattedTitle": self._title(phone, chat)}

    async def _send_text(self, connection: Connection, params: Json) -> Json:
        """The server takes the message (ack SENT, pushed before the answer), or refuses it
        with a send result: wa-js resolves `sendMsgResult`, it does not throw."""
        phone = self._linked(connection)
        chat = self._find_chat(phone, str(params["chatId"]))
        await phone.sends_released.wait()  # the server may be slow to take it
        if phone.fail_sends > 0:
            phone.fail_sends -= 1
            return {"messageSendResult": "ERROR_NETWORK", "ack": -1, "t": int(time.time())}
        key_id = str(params["id"])
        known = self._messages.get(f"true_{chat.id}_{key_id}")
        if known is not None:
            message = known[1]
            message.deliveries += 1
        else:
            message = self._add_message(
                phone, chat, phone.wid, str(params["content"]), key_id=key_id
            )
        await connection.send({"type": "ack", "ack": 1, "chat": message.to, "ids": [message.key()]})
        if phone.fault == "crash_after_taking_send":
            phone.fault = None
            raise CrashPage
        self._spawn(self._deliver_later(phone, message))
        return {"messageSendResult": "OK", "ack": message.ack, "t": message.t}

    async def _deliver_later(self, phone: Phone, message: Message) -> None:
        await asyncio.sleep(self.settings.ack_delay_seconds)
        if phone.auto_acks and message.ack == 1:
            await self._set_ack(phone, message, 2)

    async def _set_ack(self, phone: Phone, message: Message, ack: int) -> None:
        """Receipts (ack >= RECEIVED) name the receiver as WhatsApp addresses them, a LID
        included (wa-js src/chat/events/registerAckMessageEvent.ts L47-68)."""
        message.ack = ack
        key = message.key()
        lid = self._lids.get(self._number_of(message.chat))
        if ack >= 2 and lid and not message.in_group:
            remote = f"{lid}@lid"
            key = {**key, "remote": remote, "_serialized": f"true_{remote}_{message.key_id}"}
        await self._push(phone, {"type": "ack", "ack": ack, "chat": key["remote"], "ids": [key]})

    async def _get_message(self, connection: Connection, params: Json) -> Json:
        phone = self._linked(connection)
        wanted = str(params["id"])
        parts = wanted.split("_")
        if len(parts) < 3:
            raise PageError(f"Message {wanted} not found", "msg_not_found")
        chat = self._find_chat(phone, parts[1])
        for message in chat.messages:
            if message.key_id == parts[2] and str(message.from_me).lower() == parts[0]:
                return message.raw()
        raise PageError(f"Message {wanted} not found", "msg_not_found")

    async def _archive(self, connection: Connection, params: Json) -> Json:
        chat = self._find_chat(self._linked(connection), str(params["chatId"]))
        archive = bool(params.get("archive", True))
        if chat.archived == archive:
            state = "archived" if archive else "unarchived"
            raise PageError(f"The chat {chat.id} is already {state}")
        chat.archived = archive
        return {"wid": chat.id, "archive": archive}

    def _recent_chats(self, phone: Phone) -> list[Chat]:
        return sorted(phone.chats.values(), key=lambda chat: chat.activity, reverse=True)

    def _title(self, phone: Phone, chat: Chat) -> str:
        number = self._number_of(chat.id)
        return (
            chat.group_name or phone.contacts.get(number) or self._users.get(number) or f"+{number}"
        )

    async def _chat_list(self, connection: Connection, params: Json) -> list[Json]:
        phone = self._linked(connection)
        count = params.get("count")
        chats = self._recent_chats(phone)[: count if isinstance(count, int) else None]
        return [
            {
                "id": chat.id,
                "name": chat.group_name or phone.contacts.get(self._number_of(chat.id)),
                "formattedTitle": self._title(phone, chat),
                "isGroup": chat.is_group,
                "archive": chat.archived,
                "t": chat.t,
            }
            for chat in chats
        ]

    async def _get_messages(self, connection: Connection, params: Json) -> list[Json]:
        chat = self._find_chat(self._linked(connection), str(params["chatId"]))
        count = params.get("count") or 20
        messages = chat.messages if count == -1 else chat.messages[-count:]
        return [message.raw() for message in messages]

    async def _contact_list(self, connection: Connection, params: Json) -> list[Json]:
        """Every ContactStore model: phone-number contacts and, for users WhatsApp addresses
        by LID, a @lid contact whose "number" is no phone number (wa-js contact.list)."""
        phone = self._linked(connection)
        partners = [c.id for c in phone.chats.values() if not c.is_group]
        ids = dict.fromkeys([phone.wid, *(f"{n}@c.us" for n in phone.contacts), *partners])
        contacts = []
        for wid in ids:
            number = self._number_of(wid)
            contacts.append(
                {
                    "id": wid,
                    "name": phone.contacts.get(number),
                    "pushname": self._users.get(number),
                    "shortName": phone.contacts.get(number),
                    "isMe": number == phone.number,
                    "isMyContact": number in phone.contacts,
                    "isWAContact": number in self._users,
                }
            )
        return contacts

    async def _query_wid(self, connection: Connection, params: Json) -> Json | None:
        phone = self._linked(connection)
        if phone.fail_queries > 0:
            phone.fail_queries -= 1
            raise PageError("server error 500 on the usync query")
        number = self._number_of(str(params["id"]))
        registered = number in self._users and not str(params["id"]).endswith("@g.us")
        if not registered:
            return None
        lid = self._lids.get(number)
        return {"wid": f"{number}@c.us", "biz": False, "lid": lid and f"{lid}@lid"}

    async def _link_code(self, connection: Connection, params: Json) -> str:
        """WhatsApp's alternative device linking: a code for the phone with that number to
        type in (wa-js genLinkDeviceCodeForPhoneNumber; the page already refused it once
        authenticated). A new code replaces the page's previous one."""
        if connection.phone is not None:
            raise PageError("this device is already linked")
        number = _number(str(params.get("phone", "")))
        if not 7 <= len(number) <= 15:
            raise PageError(f"{params.get('phone')!r} is not a phone number")
        code = "".join(secrets.choice(LINK_CODE_ALPHABET) for _ in range(8))
        connection.link_code = (code, number)
        self._issued_link_codes.add(code)
        return code

    async def _reload_qr(self, connection: Connection, params: Json) -> bool:
        """The QR's reload button: a new round of codes for a page that is not linked."""
        if connection.phone is None and connection.code is None:
            await self._start_qr(connection)
        return True

    async def _logout(self, connection: Connection, params: Json) -> bool:
        self._unlink(self._linked(connection))
        return True

    # ---- control API -----------------------------------------------------------------------

    def _phone(self, request: web.Request) -> Phone:
        number = _phone_number(request.match_info["phone"])
        return self._phones.setdefault(number, Phone(number))

    def _linked_phone(self, request: web.Request) -> Phone:
        phone = self._phone(request)
        if phone.token is None:
            raise ControlError(409, f"phone {phone.number} has no linked device")
        return phone

    async def _qr_codes(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"codes": [c.code["fullCode"] for c in self._pending_codes() if c.code]}
        )

    async def _rotate_codes(self, request: web.Request) -> web.Response:
        for connection in self._pending_codes():
            await self._show_code(connection)
        return await self._qr_codes(request)

    async def _expire_codes(self, request: web.Request) -> web.Response:
        for connection in self._pending_codes():
            await self._idle(connection)
        return await self._qr_codes(request)

    async def _scan(self, request: web.Request) -> web.Response:
        body = await _body(request)
        code = _required(body, "code", str)
        number = _phone_number(_required(body, "phone", str))
        connection = next(
            (c for c in self._pending_codes() if c.code and c.code["fullCode"] == code), None
        )
        if connection is None:
            if code in self._issued_codes:
                raise ControlError(409, "this QR code has expired")
            raise ControlError(404, "no page shows this QR code")
        return await self._link(connection, number, _optional(body, "pushname", str))

    async def _link_codes(self, request: web.Request) -> web.Response:
        """The linking codes pages wait for, each with the number it was asked for."""
        codes = [c.link_code for c in self._connections if c.link_code]
        return web.json_response({"codes": [{"code": c, "phone": n} for c, n in codes]})

    async def _pair(self, request: web.Request) -> web.Response:
        """The phone's owner types the code in (WhatsApp → Linked devices → Link with phone
        number instead): only the phone whose number the code was asked for can use it."""
        body = await _body(request)
        code = _required(body, "code", str).replace("-", "").strip().upper()
        number = _phone_number(_required(body, "phone", str))
        connection = next(
            (c for c in self._connections if c.link_code and c.link_code[0] == code), None
        )
        if connection is None or connection.link_code is None:
            if code in self._issued_link_codes:
                raise ControlError(409, "this linking code is no longer valid")
            raise ControlError(404, "no page waits for this linking code")
        if connection.link_code[1] != number:
            raise ControlError(409, "this linking code was asked for another phone number")
        return await self._link(connection, number, _optional(body, "pushname", str))

    async def _link(
        self, connection: Connection, number: str, pushname: str | None
    ) -> web.Response:
        """The phone links the page's device (a scan or a typed-in code)."""
        self._users[number] = pushname or self._users.get(number)
        phone = self._phones.setdefault(number, Phone(number))
        replaced = self._unlink(phone)  # the same phone linked again replaces its old device
        if replaced:
            await replaced.send({"type": "logout", "reason": UNKNOWN_COMPANION})
        self._cancel_qr(connection)
        connection.code, connection.link_code = None, None
        phone.token = secrets.token_hex(16)
        self._attach(connection, phone)
        connection.stored = asyncio.get_running_loop().create_future()
        wid = f"{number}:{secrets.randbelow(90) + 10}@c.us"
        await connection.send({"type": "authenticated", "wid": wid, "token": phone.token})
        try:
            await asyncio.wait_for(connection.stored, STORE_LOGIN_SECONDS)
        except TimeoutError:
            raise ControlError(504, "the page did not store its login") from None
        self._spawn(self._sync(connection, phone))
        return web.json_response({"phone": number, "wid": phone.wid})

    async def _register_numbers(self, request: web.Request) -> web.Response:
        for entry in _required(await _body(request), "numbers", list):
            if not isinstance(entry, dict):
                raise ControlError(400, "each of 'numbers' must be an object")
            number = _phone_number(_required(entry, "number", str))
            self._users[number] = (
                _optional(entry, "pushname", str)
                or _optional(entry, "name", str)
                or self._users.get(number)
            )
            if _optional(entry, "lid", bool):
                self._lids.setdefault(number, f"{secrets.randbelow(10**14) + 10**14}")
            if _optional(entry, "pn_chat", bool):
                self._pn_chats.add(number)
        return web.json_response({"numbers": list(self._users)})

    async def _phone_state(self, request: web.Request) -> web.Response:
        phone = self._phones.get(_phone_number(request.match_info["phone"]))
        if phone is None:
            raise ControlError(404, "unknown phone")
        return web.json_response(
            {
                "linked": phone.token is not None,
                "online": phone.connection is not None,
                "keep_alive": bool(phone.connection and phone.connection.keep_alive),
                "held": list(phone.held),
                "pushname": self._users.get(phone.number),
                "messages": [message.control() for message in phone.messages],
                "chats": [
                    {
                        "id": chat.id,
                        "name": self._title(phone, chat),
                        "archived": chat.archived,
                        "isGroup": chat.is_group,
                    }
                    for chat in self._recent_chats(phone)
                ],
            }
        )

    async def _save_contacts(self, request: web.Request) -> web.Response:
        phone = self._phone(request)
        for entry in _required(await _body(request), "contacts", list):
            if not isinstance(entry, dict):
                raise ControlError(400, "each of 'contacts' must be an object")
            number = _phone_number(_required(entry, "number", str))
            phone.contacts[number] = _required(entry, "name", str)
        return web.json_response({"contacts": phone.contacts})

    async def _create_group(self, request: web.Request) -> web.Response:
        phone = self._phone(request)
        body = await _body(request)
        name = _required(body, "name", str)
        members = [_phone_number(str(m)) for m in _required(body, "members", list)]
        group_id = f"120363{secrets.randbelow(10**12):012d}@g.us"
        phone.chats[group_id] = Chat(group_id, name, next(self._activity), members)
        return web.json_response({"id": group_id})

    async def _incoming(self, request: web.Request) -> web.Response:
        """A message to the linked phone. `kind`: a customer's `chat` message, a
        `notification` (isNotification), a `status` (isStatusV3, from status@broadcast), or a
        `ciphertext` one (pushed first as an empty `ciphertext` placeholder, then decrypted,
        under the same id: wa-js src/chat/events/registerNewMessageEvent.ts L30-38)."""
        phone = self._linked_phone(request)
        body = await _body(request)
        sender = _phone_number(_required(body, "from", str))
        pushname = _optional(body, "pushname", str)
        kind = _optional(body, "kind", str) or "chat"
        if kind not in INCOMING_KINDS:
            raise ControlError(400, f"'kind' must be one of {', '.join(INCOMING_KINDS)}")
        self._users[sender] = pushname or self._users.get(sender)
        group = _optional(body, "group", str)
        if kind == "status":
            chat = Chat("status@broadcast", None, next(self._activity))
        elif group is None:
            chat = self._chat_with(phone, sender)
        elif group not in phone.chats:
            raise ControlError(404, f"phone {phone.number} has no group {group}")
        elif sender not in phone.chats[group].members:
            raise ControlError(409, f"{sender} is not a member of {group}")
        else:
            chat = phone.chats[group]
        chat.archived = False  # a new message brings an archived chat back
        message = self._add_message(
            phone,
            chat,
            self._user_wid(sender),
            _required(body, "body", str) if kind != "notification" else "",
            self._users[sender],
            kind=kind,
        )
        payload = {"type": "message", "message": message.raw()}
        if kind == "ciphertext":
            placeholder = {**message.raw(), "type": "ciphertext", "body": ""}
            await self._push(phone, {"type": "message", "message": placeholder})
        phone.held[message.id] = payload
        await self._push(phone, payload, hold=False)
        return web.json_response({"id": message.id})

    async def _auto_acks(self, request: web.Request) -> web.Response:
        phone = self._phone(request)
        phone.auto_acks = _required(await _body(request), "auto", bool)
        if phone.auto_acks:  # the stalled ones arrive now
            for message in phone.messages:
                if message.from_me and message.ack == 1:
                    await self._set_ack(phone, message, 2)
        return web.json_response({"auto": phone.auto_acks})

    async def _set_ack_control(self, request: web.Request) -> web.Response:
        found = self._messages.get(request.match_info["msg_id"])
        if found is None:
            raise ControlError(404, "unknown message")
        ack = _required(await _body(request), "ack", int)
        if not -1 <= ack <= 4:
            raise ControlError(400, "'ack' must be between -1 and 4")
        phone, message = found
        await self._set_ack(phone, message, ack)
        return web.json_response({"id": message.id, "ack": ack})

    async def _fail_sends(self, request: web.Request) -> web.Response:
        phone = self._phone(request)
        phone.fail_sends = _required(await _body(request), "count", int)
        return web.json_response({"fail_sends": phone.fail_sends})

    async def _hold_sends(self, request: web.Request) -> web.Response:
        """`hold: true`: the server takes no message (the page's send waits) until released."""
        phone = self._phone(request)
        if _required(await _body(request), "hold", bool):
            phone.sends_released.clear()
        else:
            phone.sends_released.set()
        return web.json_response({"hold": not phone.sends_released.is_set()})

    async def _fail_queries(self, request: web.Request) -> web.Response:
        """The next `count` number checks fail on WhatsApp's side (wa-js answers null)."""
        phone = self._phone(request)
        phone.fail_queries = _required(await _body(request), "count", int)
        return web.json_response({"fail_queries": phone.fail_queries})

    async def _set_fault(self, request: web.Request) -> web.Response:
        """One crash at a precise moment: `hang_before_send` (the page hangs before the
        message leaves), `crash_after_taking_send` (the server took it, the page hangs instead
        of getting the answer), `hang_after_taking_incoming` (the page tells the server it took
        a message, then hangs before any listener saw it)."""
        phone = self._linked_phone(request)
        fault = _optional(await _body(request), "fault", str)
        if fault is not None and fault not in PAGE_FAULTS + SERVER_FAULTS:
            raise ControlError(400, f"unknown fault {fault!r}")
        phone.fault = fault
        if fault in PAGE_FAULTS and phone.connection and phone.connection.main:
            await phone.connection.send({"type": "fault", "fault": fault})
            phone.fault = None
        return web.json_response({"fault": fault})

    async def _set_sync(self, request: web.Request) -> web.Response:
        """What getHistorySyncProgress reports once in MAIN: 100, or null (never ends)."""
        phone = self._phone(request)
        progress = _optional(await _body(request), "progress", int)
        phone.sync_progress = progress
        return web.json_response({"progress": progress})

    async def _drop(self, request: web.Request) -> web.Response:
        phone = self._linked_phone(request)
        seconds = _required(await _body(request), "seconds", float)
        phone.offline_until = time.monotonic() + seconds
        connection = phone.connection
        if connection:
            await connection.ws.close()
        return web.json_response({"dropped": connection is not None, "seconds": seconds})

    async def _remote_logout(self, request: web.Request) -> web.Response:
        connection = self._unlink(self._linked_phone(request))
        if connection:
            await connection.send({"type": "logout", "reason": UNKNOWN_COMPANION})
        return web.json_response({"linked": False, "notified": connection is not None})

    async def _crash(self, request: web.Request) -> web.Response:
        phone = self._linked_phone(request)
        if phone.connection is None:
            raise ControlError(409, f"phone {phone.number} has no page online")
        await phone.connection.send({"type": "crash"})
        return web.json_response({"crashed": True})

    async def _reset(self, request: web.Request) -> web.Response:
        await self.close()
        self._users.clear()
        self._phones.clear()
        self._messages.clear()
        self._issued_codes.clear()
        self._issued_link_codes.clear()
        return web.json_response({})


def create_app(settings: Settings | None = None) -> web.Application:
    double = Double(settings or Settings())
    app = web.Application(middlewares=[_json_errors])
    app.add_routes(double.routes())

    async def close(_: web.Application) -> None:
        await double.close()

    app.on_shutdown.append(close)
    return app
