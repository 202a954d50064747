"""The session pod's HTTP API: the seed's endpoints plus status, QR, events, health, metrics."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from whatsapp_common.answers import ApiError, being_initialized, success
from whatsapp_common.event_types import EventType
from whatsapp_common.logs import get_logger
from whatsapp_common.states import SessionState
from whatsapp_common.validation import (
    choice_param,
    idempotency_key,
    int_param,
    json_object,
    location_identifier,
    receiver_chat_id,
    text_field,
)

from .delivery import STATUSES, IdempotencyMismatch, Outbox
from .driver import DriverError
from .messenger import Messenger, OutcomePending, SendOutcomeUnknown
from .metrics import Metrics
from .qr import qr_png
from .session import (
    AlreadyLinked,
    NotReady,
    NumberUnchecked,
    Session,
    UnknownNumber,
    phone_of,
)

log = get_logger(__name__)
SESSION = web.AppKey("session", Session)
METRICS = web.AppKey("metrics", Metrics)
MESSENGER = web.AppKey("messenger", Messenger)
OUTBOX = web.AppKey("outbox", Outbox)


def not_ready(session: Session) -> ApiError:
    return being_initialized(session.settings.location_id, str(session.state), retry_after=5)


def failed(message: str, exc: Exception) -> ApiError:
    return ApiError(500, message, error=str(exc))


def retry_later(status: int, message: str) -> ApiError:
    error = ApiError(status, message)
    error.headers["Retry-After"] = "5"
    return error


async def login(request: web.Request) -> web.Response:
    session = request.app[SESSION]
    location = location_identifier(await json_object(request), session.settings.location_id)
    try:
        await session.login()
    except Exception as exc:
        raise failed("Error during login process", exc) from exc
    return success(f"Initialization process started for {location}")


async def logout(request: web.Request) -> web.Response:
    session = request.app[SESSION]
    location = location_identifier(await json_object(request), session.settings.location_id)
    try:
        await session.logout()
    except Exception as exc:
        raise failed("Error during logout process", exc) from exc
    return success(f"Logout process completed for {location}")


async def pairing_code(request: web.Request) -> web.Response:
    """A linking code for the phone with `phone_number`, instead of the QR (wa-js
    conn.startLinkDeviceCodeForPhoneNumber): only while the QR is shown."""
    session = request.app[SESSION]
    body = await json_object(request)
    location = location_identifier(body, session.settings.location_id)
    phone = phone_of(receiver_chat_id(body, "phone_number"))
    try:
        code = await session.pairing_code(phone)
    except AlreadyLinked:
        raise ApiError(
            409, f"Location {location} is already linked to a phone", state=str(session.state)
        ) from None
    except NotReady:
        await session.login()  # a stopped session starts again: its QR comes first
        raise not_ready(session) from None
    except DriverError as exc:
        raise failed("Error getting the pairing code", exc) from exc
    return success({"pairing_code": code.code, "expires_at": code.expires_at})


async def send_message(request: web.Request) -> web.Response:
    session = request.app[SESSION]
    body = await json_object(request)
    location_identifier(body, session.settings.location_id)
    chat_id = receiver_chat_id(body)
    text = text_field(body, "message")
    key = idempotency_key(body, request.headers)
    try:
        answer, replayed = await request.app[MESSENGER].send(chat_id, text, key)
    except OutcomePending:
        await session.login()  # a stopped session must start again to check it
        raise retry_later(
            409,
            "The message sent with this idempotency key is being checked in WhatsApp, "
            "retry later with the same key",
        ) from None
    except SendOutcomeUnknown as exc:
        if key is None:
            raise failed("Error sending message", exc) from exc
        raise retry_later(
            503,
            "WhatsApp Web stopped answering during the send; it is being checked, "
            "retry with the same idempotency key",
        ) from exc
    except NumberUnchecked:
        raise retry_later(
            503,
            f"Could not check whether the number {phone_of(chat_id)} is on WhatsApp, "
            "try again later",
        ) from None
    except IdempotencyMismatch:
        raise ApiError(422, "This idempotency key was used for a different message") from None
    except NotReady:
        await session.login()
        raise not_ready(session) from None
    except UnknownNumber:
        raise ApiError(
            400, f"The number {phone_of(chat_id)} is not registered on WhatsApp"
        ) from None
    except DriverError as exc:
        raise failed("Error sending message", exc) from exc
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return web.json_response(answer, status=200 if answer["success"] else 500, headers=headers)


async def chats(request: web.Request) -> web.Response:
    session = request.app[SESSION]
    location_identifier(request.query, session.settings.location_id)
    count = int_param(request.query, "chats_to_get", 10, 1, 100)
    per_chat = int_param(request.query, "messages_to_get", count, 1, 100)
    try:
        found = await session.chats(count, per_chat)
    except NotReady:
        raise not_ready(session) from None
    except DriverError as exc:
        raise failed("Error getting chats", exc) from exc
    body: dict[str, object] = {}
    for chat in found:
        key = chat["name"] if chat["name"] not in body else f"{chat['name']} ({chat['id']})"
        body[key] = {
            "groupChat": chat["isGroup"],
            "messages": [
                {"from": phone_of(m["from"] or ""), "fromMe": m["fromMe"], "body": m["body"]}
                for m in chat["messages"]
            ],
        }
    return success(body)


async def contacts(request: web.Request) -> web.Response:
    session = request.app[SESSION]
    location_identifier(request.query, session.settings.location_id)
    try:
        found = await session.contacts()
    except NotReady:
        raise not_ready(session) from None
    except DriverError as exc:
        raise failed("Error getting contacts", exc) from exc
    return success(found)


async def status(request: web.Request) -> web.Response:
    session = request.app[SESSION]
    return web.json_response(
        {
            "location_identifier": session.settings.location_id,
            "state": str(session.state),
            "since": session.machine.since,
            "reason": session.machine.reason,
            "phone": session.phone,
            "qr_pending": session.qr is not None,
            "pairing_code_pending": session.pairing is not None,
            "pairing_code_expires_at": session.pairing and session.pairing.expires_at,
            "last_event_id": session.bus.last_id,
            "last_error": session.last_error,
            "last_backup": session.backups.last,
            "storage_error": session.backups.store_error,
        }
    )


async def qr(request: web.Request) -> web.Response:
    session = request.app[SESSION]
    fmt = choice_param(request.query, "format", "json", ("json", "png"))
    code = session.qr
    if code is None or session.state != SessionState.QR_REQUIRED:
        raise ApiError(
            404,
            f"No QR code is pending for location {session.settings.location_id}",
            state=str(session.state),
        )
    if fmt == "png":
        return web.Response(body=qr_png(code.code), content_type="image/png")
    return web.json_response(
        {"qr": code.code, "issued_at": code.issued_at, "expires_at": code.expires_at}
    )


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: every state change and WhatsApp event, resumable by Last-Event-ID."""
    session = request.app[SESSION]
    after = int_param(
        {"after": request.headers.get("Last-Event-ID") or request.query.get("after")},
        "after",
        0,
        0,
        2**62,
    )
    # A comment line this often while nothing happens: a client with a read timeout tells a
    # quiet session from a dead connection (a half-open one never says it is closed).
    heartbeat = int_param(request.query, "heartbeat", 15, 1, 300)
    # `types=qr,state`: only those (the router's link page needs four kinds, not messages).
    wanted = event_types(request.query.get("types"))
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    stream = aiter(session.bus.subscribe(after))
    pending = asyncio.ensure_future(anext(stream))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=heartbeat)
            if not done:
                await response.write(b": heartbeat\n\n")
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                break
            pending = asyncio.ensure_future(anext(stream))
            if wanted is not None and event.type not in wanted:
                continue
            payload = json.dumps(event.as_dict())
            await response.write(
                f"id: {event.id}\nevent: {event.type}\ndata: {payload}\n\n".encode()
            )
    except ConnectionResetError:
        pass
    finally:
        pending.cancel()
        await asyncio.wait({pending})  # the generator must be idle before it is closed
        await stream.aclose()
    return response


def event_types(listed: str | None) -> frozenset[str] | None:
    """The event types of a comma-separated list (None: all)."""
    if not listed:
        return None
    types = frozenset(t.strip() for t in listed.split(",") if t.strip())
    unknown = sorted(types - set(EventType))
    if unknown:
        raise ApiError(400, f"Unknown event types: {', '.join(unknown)}")
    return types


async def message(request: web.Request) -> web.Response:
    record = await request.app[MESSENGER].ledger.get(request.match_info["id"])
    if record is None:
        raise ApiError(404, f"No message {request.match_info['id']} was sent from this session")
    return web.json_response(record.as_dict())


async def messages(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status is not None:
        status = choice_param(request.query, "status", "", tuple(STATUSES))
    limit = int_param(request.query, "limit", 100, 1, 1000)
    records = await request.app[MESSENGER].ledger.list(status=status, limit=limit)
    return web.json_response({"messages": [r.as_dict() for r in records]})


async def failed_webhooks(request: web.Request) -> web.Response:
    dead = await request.app[OUTBOX].failed()
    return web.json_response({"failed": [d.as_dict() for d in dead]})


async def replay_webhooks(request: web.Request) -> web.Response:
    """Body `{"ids": [...]}` replays those dead letters; `{}` replays all of them."""
    body = await json_object(request)
    ids = body.get("ids", "all")
    if ids != "all" and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        raise ApiError(400, "The field ids must be a list of event ids")
    replayed = await request.app[OUTBOX].replay(ids)
    return web.json_response({"replayed": replayed})


async def healthz(request: web.Request) -> web.Response:
    ok, detail = await request.app[SESSION].healthy()
    return web.json_response({"ok": ok, "detail": detail}, status=200 if ok else 503)


async def readyz(request: web.Request) -> web.Response:
    """Serving requests: every state but `failed` (a QR page must stay reachable)."""
    state = request.app[SESSION].state
    ok = state != SessionState.FAILED
    return web.json_response({"ok": ok, "state": str(state)}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), content_type="text/plain")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_post("/send_message", send_message)
    app.router.add_post("/pairing_code", pairing_code)
    app.router.add_get("/chats", chats)
    app.router.add_get("/contacts", contacts)
    app.router.add_get("/status", status)
    app.router.add_get("/qr", qr)
    app.router.add_get("/events", events)
    app.router.add_get("/messages", messages)
    app.router.add_get("/messages/{id}", message)
    app.router.add_get("/webhooks/failed", failed_webhooks)
    app.router.add_post("/webhooks/replay", replay_webhooks)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
