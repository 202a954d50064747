"""The router's own answers for a location it cannot forward to, in the seed's shapes."""

from __future__ import annotations

from whatsapp_common.answers import ApiError, being_initialized
from whatsapp_common.states import NO_SESSION

from .directory import Route, Verdict


def unknown(location: str, status: int = 400) -> ApiError:
    """No WhatsAppSession: only POST /login creates one (a typo must not start a browser)."""
    hint = ": POST /login first" if status == 400 else ""
    return ApiError(
        status, f"No WhatsApp session exists for location {location}{hint}", state=NO_SESSION
    )


def unavailable(route: Route, location: str, retry_after: int) -> ApiError:
    """Starting (or waking): the seed's 400 "being initialized"; down (paused, failed, shutting
    down): 503."""
    if route.verdict in (Verdict.STARTING, Verdict.ASLEEP):
        return being_initialized(location, route.state, retry_after)
    assert route.verdict is Verdict.DOWN, route
    error = ApiError(
        503,
        f"The session of location {location} is not running ({route.state})",
        state=route.state,
    )
    error.headers["Retry-After"] = str(retry_after)
    return error
