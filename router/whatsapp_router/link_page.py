"""Link pages: a URL that a location's staff opens on any device to link the location's
WhatsApp, with no login and without Rails' frontend.

`POST /link_url` (Rails, with the router's token) gives a URL carrying a signed token
(`whatsapp_common.link_tokens`); `/link/{token}` is the page: the live QR (server-sent
events from `/link/{token}/events`, the image from `/link/{token}/qr.png`), a pairing code by
phone number, "Linked" with the phone, or "expired". The token is the page's only
credential and opens that one location's link state, nothing else; it stops working when it
expires or once the location is linked. The page loads only the router's own script and
style, under a Content-Security-Policy that allows nothing else. Logs name the route pattern,
never the token; neither the QR nor the pairing code is ever logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import time
from pathlib import Path
from string import Template

from aiohttp import web

from whatsapp_common.answers import ApiError, success
from whatsapp_common.link_tokens import MAX_NAME_CHARS, InvalidLinkToken, LinkGrant, issue, verify
from whatsapp_common.middleware import LOCATION, REQUEST_ID
from whatsapp_common.validation import json_object

from .answers import unavailable, unknown
from .api import BACKEND, DIRECTORY, METRICS, SETTINGS, UPSTREAM, location_of
from .directory import Verdict
from .link_view import LinkStates, View

LINK_STATES = web.AppKey("link_states", LinkStates)
ASSETS = Path(__file__).with_name("link_assets")
PAGE = Template((ASSETS / "link.html").read_text())
STATIC = {
    "link.js": ((ASSETS / "link.js").read_bytes(), "text/javascript"),
    "link.css": ((ASSETS / "link.css").read_bytes(), "text/css"),
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# On every answer under /link/: the token is in the URL, so no referrer, no caching.
HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
EXPIRED: View = {"state": "expired"}
FINAL = ("linked", "expired")


async def link_url(request: web.Request) -> web.Response:
    """`{location_identifier, ttl_seconds?, location_name?}` -> `{url, expires_at}`."""
    app = request.app
    settings = app[SETTINGS]
    body = await json_object(request)
    location = location_of(request, body)
    ttl = _ttl(body, settings.link_ttl, settings.link_max_ttl)
    name = _name(body, location)
    if settings.link_masters is None:
        raise ApiError(503, "Link pages are not configured: the router has no LINK_MASTER_KEYS")
    if app[DIRECTORY].route(location).verdict is Verdict.UNKNOWN:
        raise unknown(location)
    expires_at = int(time.time()) + ttl
    token = issue(settings.link_masters(), LinkGrant(location, name, expires_at))
    base = settings.public_url or f"{request.scheme}://{request.host}"
    app[METRICS].link_urls.inc()
    return web.json_response({"url": f"{base}/link/{token}", "expires_at": expires_at})


async def page(request: web.Request) -> web.Response:
    try:
        grant = _grant(request)
    except InvalidLinkToken:
        return _page(None, "expired", 0, 410)
    try:
        link = await request.app[LINK_STATES].current(grant.location, request[REQUEST_ID])
    except ApiError:
        link = None  # the pod did not answer: the page waits for it
    if link is not None and link.linked:
        _refused(request, "linked")
        return _page(grant, "expired", grant.expires_at, 410)
    view = link.view() if link is not None else {"state": "waiting"}
    return _page(grant, view["state"], grant.expires_at, 200)


async def events(request: web.Request) -> web.StreamResponse:
    """The page's server-sent events: one `view` per change, until linked or expired."""
    response = web.StreamResponse(headers={**HEADERS, "Content-Type": "text/event-stream"})
    try:
        grant = _grant(request)
    except InvalidLinkToken:
        await response.prepare(request)
        await _send(response, EXPIRED)
        return response
    await response.prepare(request)
    await response.write(b"retry: 2000\n\n")
    stream = request.app[LINK_STATES].follow(grant.location, request[REQUEST_ID])
    sent: View | None = None
    seen_unlinked = False
    try:
        async with asyncio.timeout(grant.expires_at - time.time()):
            async for view in stream:
                if view is None:
                    await response.write(b": keepalive\n\n")
                    continue
                if view["state"] == "linked" and not seen_unlinked:
                    _refused(request, "linked")  # linked before this page saw it unlinked
                    view = EXPIRED
                seen_unlinked = seen_unlinked or view["state"] != "linked"
                if view != sent:
                    await _send(response, view)
                    sent = view
                if view["state"] in FINAL:
                    break
    except TimeoutError:
        _refused(request, "expired")
        with contextlib.suppress(ConnectionResetError):
            await _send(response, EXPIRED)
    except ConnectionResetError:
        pass  # the page went away
    finally:
        await stream.aclose()
    return response


async def qr_image(request: web.Request) -> web.Response:
    """The pending QR as a PNG, rendered by the pod (the code itself never reaches the page
    as text, nor any log)."""
    grant = _grant_or_gone(request)
    route = request.app[DIRECTORY].route(grant.location)
    if route.verdict is Verdict.FORWARD and route.pod is not None:
        answer = await request.app[UPSTREAM].call(
            route.pod, grant.location, "GET", "/qr?format=png", {}, request[REQUEST_ID]
        )
        if answer.status == 200:
            return web.Response(body=answer.body, content_type="image/png", headers=HEADERS)
    raise ApiError(404, "No QR code is pending")


async def pairing_code(request: web.Request) -> web.Response:
    """`{phone_number}`: the pod's answer to `POST /pairing_code` for the token's location."""
    grant = _grant_or_gone(request)
    body = await json_object(request)
    pod_body = {"location_identifier": grant.location, "phone_number": body.get("phone_number")}
    return await _to_pod(request, grant, "/pairing_code", pod_body)


async def login(request: web.Request) -> web.Response:
    """A new QR once it expired, or a stopped session started: the seed's /login."""
    grant = _grant_or_gone(request)
    app = request.app
    route = app[DIRECTORY].route(grant.location)
    if route.verdict is Verdict.UNKNOWN:
        await app[BACKEND].create_session(grant.location)
        app[METRICS].sessions_created.inc()
    if route.verdict in (Verdict.UNKNOWN, Verdict.STARTING):
        return success(f"Initialization process started for {grant.location}")
    pod_body = {"location_identifier": grant.location, "user_id": "link-page"}
    return await _to_pod(request, grant, "/login", pod_body)


async def asset(request: web.Request) -> web.Response:
    found = STATIC.get(request.match_info["name"])
    if found is None:
        raise ApiError(404, "Not found")
    body, content_type = found
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
    return web.Response(body=body, content_type=content_type, headers=headers)


def _grant(request: web.Request) -> LinkGrant:
    """The request's token, verified; InvalidLinkToken (counted) otherwise."""
    masters = request.app[SETTINGS].link_masters
    try:
        if masters is None:
            raise InvalidLinkToken("forged")  # no key: no token is ours
        grant = verify(masters(), request.match_info["token"], time.time())
    except InvalidLinkToken as exc:
        _refused(request, exc.reason)
        raise
    request[LOCATION] = grant.location
    return grant


def _grant_or_gone(request: web.Request) -> LinkGrant:
    try:
        return _grant(request)
    except InvalidLinkToken:
        error = ApiError(410, "This link has expired")
        error.headers.update(HEADERS)
        raise error from None


async def _to_pod(
    request: web.Request, grant: LinkGrant, path: str, body: dict[str, object]
) -> web.Response:
    app = request.app
    route = app[DIRECTORY].route(grant.location)
    if route.verdict is Verdict.UNKNOWN:
        raise unknown(grant.location)
    if route.verdict is not Verdict.FORWARD or route.pod is None:
        raise unavailable(route, grant.location, app[SETTINGS].retry_after)
    answer = await app[UPSTREAM].call(
        route.pod,
        grant.location,
        "POST",
        path,
        {"Content-Type": "application/json"},
        request[REQUEST_ID],
        json.dumps(body).encode(),
    )
    return web.Response(
        status=answer.status, body=answer.body, content_type="application/json", headers=HEADERS
    )


def _page(grant: LinkGrant | None, state: str, expires_at: int, status: int) -> web.Response:
    text = PAGE.substitute(
        name=html.escape(grant.name if grant else "WhatsApp"),
        state=state,
        expires_at=expires_at,
    )
    return web.Response(text=text, status=status, content_type="text/html", headers=HEADERS)


async def _send(response: web.StreamResponse, view: View) -> None:
    await response.write(f"event: view\ndata: {json.dumps(view)}\n\n".encode())


def _refused(request: web.Request, reason: str) -> None:
    request.app[METRICS].link_refusals.labels(reason).inc()


def _ttl(body: dict[str, object], default: int, longest: int) -> int:
    value = body.get("ttl_seconds", default)
    if isinstance(value, bool) or not isinstance(value, int) or not 60 <= value <= longest:
        raise ApiError(400, f"The field ttl_seconds must be a whole number from 60 to {longest}")
    return value


def _name(body: dict[str, object], location: str) -> str:
    value = body.get("location_name")
    if value is None:
        return f"Location {location}"
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_CHARS:
        raise ApiError(
            400, f"The field location_name must be a text of 1 to {MAX_NAME_CHARS} characters"
        )
    return value.strip()


def add_routes(app: web.Application) -> None:
    app.router.add_post("/link_url", link_url)
    app.router.add_get("/link/{token}", page)
    app.router.add_get("/link/{token}/events", events)
    app.router.add_get("/link/{token}/qr.png", qr_image)
    app.router.add_post("/link/{token}/pairing_code", pairing_code)
    app.router.add_post("/link/{token}/login", login)
    app.router.add_get("/link-assets/{name}", asset)
