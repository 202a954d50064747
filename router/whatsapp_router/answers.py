"""The router's own answers for a location it cannot forward to, in the seed's shapes."""

from __future__ import annotations

from aiohttp import web

from session_pod.validation import ApiError

from .directory import Route, Verdict


def success(body: object) -> web.Response:
    """The seed's success shape."""
    return web.json_response({"code": 200, "status": "success", "body": body})


def unknown(location: str, status: int = 400) -> ApiError:
    """No WhatsAppSession: only POST /login creates one (a typo must not start a browser)."""
    hint = ": POST /login first" if status == 400 else ""
    return ApiError(
        status, f"No WhatsApp session exists for location {location}{hint}", state="Unknown"
    )


def unavailable(route: Route, location: str, retry_after: int) -> ApiError:
    """Starting: the seed's 400 "being initialized"; down (paused, failed, shutting down): 503."""
    if route.verdict is Verdict.STARTING:
        error = ApiError(
            400,
            f"The WhatsApp client of location {location} is being initialized, try again later",
            state=route.state,
        )
    else:
        assert route.verdict is Verdict.DOWN, route
        error = ApiError(
            503,
            f"The session of location {location} is not running ({route.state})",
            state=route.state,
        )
    error.headers["Retry-After"] = str(retry_after)
    return error
