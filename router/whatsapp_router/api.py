"""The router's HTTP API: the seed's endpoints forwarded to the location's pod, plus
/sessions, health, metrics and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from whatsapp_common.answers import ApiError, success
from whatsapp_common.middleware import LOCATION, REQUEST_ID
from whatsapp_common.validation import idempotency_key, json_object, parse_location_identifier

from .answers import unavailable, unknown
from .config import RouterSettings
from .directory import Backend, Directory, Route, Verdict
from .metrics import RouterMetrics
from .openapi import document
from .upstream import Upstream
from .waking import Waker, waking

SETTINGS = web.AppKey("settings", RouterSettings)
DIRECTORY = web.AppKey("directory", Directory)
METRICS = web.AppKey("metrics", RouterMetrics)
UPSTREAM = web.AppKey("upstream", Upstream)
BACKEND = web.AppKey("backend", Backend)
WAKER = web.AppKey("waker", Waker)


def location_of(request: web.Request, source: Any) -> str:
    """The seed's `location_identifier`, parsed by the pod's own rules."""
    location = parse_location_identifier(source)
    request[LOCATION] = location
    return location


async def forward(
    request: web.Request,
    location: str,
    *,
    retry: bool = True,
    on_unknown: int = 400,
    wakes: bool = True,
) -> web.Response:
    """To the location's ready pod, or the router's answer when there is none. `wakes`: a
    hibernating location is woken and the request held until it is ready (waking.py)."""
    app = request.app
    directory = app[DIRECTORY]
    route = directory.route(location)
    if route.verdict is Verdict.UNKNOWN:
        raise unknown(location, on_unknown)
    if wakes and waking(route):
        route = await app[WAKER].until_awake(location, route)
    elif route.verdict is Verdict.ASLEEP:
        return asleep(request, location, route)
    if route.verdict is not Verdict.FORWARD or route.pod is None:
        raise unavailable(route, location, app[SETTINGS].retry_after)
    body = await request.read() if request.method == "POST" else None
    return await app[UPSTREAM].forward(
        request,
        route.pod,
        location,
        request[REQUEST_ID],
        body,
        retry,
        lambda: directory.route(location).pod,
    )


def asleep(request: web.Request, location: str, route: Route) -> web.Response:
    """/status and /qr of a hibernating location, from the resource: they wake nothing."""
    session = route.session
    assert session is not None, route
    if request.path == "/qr":
        message = f"No QR code is pending for location {location}"
        raise ApiError(404, message, state=route.state)
    return web.json_response(
        {
            "location_identifier": location,
            "state": "hibernating",
            "since": session.since,
            "reason": "idle",
            "phone": session.phone or None,
            "qr_pending": False,
            "next_wake": session.next_wake,
        }
    )


async def login(request: web.Request) -> web.Response:
    """The seed's "initialize when not found": an unknown location gets a WhatsAppSession;
    a hibernating one is woken."""
    location = location_of(request, await json_object(request))
    route = request.app[DIRECTORY].route(location)
    if route.verdict is Verdict.UNKNOWN:
        await request.app[BACKEND].create_session(location)
        request.app[METRICS].sessions_created.inc()
    if route.verdict is Verdict.ASLEEP and route.session is not None:
        await request.app[WAKER].ask(route.session)
    if route.verdict in (Verdict.UNKNOWN, Verdict.STARTING, Verdict.ASLEEP):
        return success(f"Initialization process started for {location}")
    return await forward(request, location)


async def logout(request: web.Request) -> web.Response:
    location = location_of(request, await json_object(request))
    if request.app[DIRECTORY].route(location).verdict is Verdict.UNKNOWN:
        return success(f"Logout process completed for {location}")  # nothing is linked
    return await forward(request, location)


async def send_message(request: web.Request) -> web.Response:
    body = await json_object(request)
    location = location_of(request, body)
    # Retrying a send the pod may have received could send it twice; a key makes it safe.
    keyed = idempotency_key(body, request.headers) is not None
    return await forward(request, location, retry=keyed)


async def pairing_code(request: web.Request) -> web.Response:
    """A linking code by phone number: 400 for an unknown location, like a send."""
    return await forward(request, location_of(request, await json_object(request)))


async def per_location_get(request: web.Request) -> web.Response:
    """GET /chats, /contacts: 400 for an unknown location, like a send."""
    return await forward(request, location_of(request, request.query))


async def per_location_view(request: web.Request) -> web.Response:
    """GET /status, /qr: 404 for an unknown location (nothing to show); they wake nothing."""
    location = location_of(request, request.query)
    return await forward(request, location, on_unknown=404, wakes=False)


async def sessions(request: web.Request) -> web.Response:
    directory = request.app[DIRECTORY]
    listed = []
    for record in sorted(directory.sessions.values(), key=lambda r: r.location):
        route = directory.route(record.location)
        chosen = directory.session(record.location) == record
        listed.append(
            {
                "location_identifier": record.location,
                "name": record.name,
                "phase": route.state if chosen else record.phase,
                "phone": record.phone,
                "routable": chosen and route.verdict is Verdict.FORWARD,
                "pod": route.pod.name if route.pod and chosen else None,
                "pod_ip": route.pod.ip if route.pod and chosen else None,
            }
        )
    return success(listed)


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    """Ready once pods and WhatsAppSessions are listed: before that every location looks
    unknown, and /login would create sessions that already exist."""
    synced = sorted(request.app[DIRECTORY].synced)
    ok = len(synced) == 2
    return web.json_response({"ok": ok, "synced": synced}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), content_type="text/plain")


async def openapi(_: web.Request) -> web.Response:
    return web.json_response(document())


def add_routes(app: web.Application) -> None:
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_post("/send_message", send_message)
    app.router.add_post("/pairing_code", pairing_code)
    app.router.add_get("/chats", per_location_get)
    app.router.add_get("/contacts", per_location_get)
    app.router.add_get("/status", per_location_view)
    app.router.add_get("/qr", per_location_view)
    app.router.add_get("/sessions", sessions)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
