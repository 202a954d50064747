"""Bearer-token authentication of every endpoint but the health probes."""

from __future__ import annotations

import hmac

from aiohttp import web

from whatsapp_common.answers import ApiError
from whatsapp_common.middleware import Handler, Middleware

OPEN_PATHS = frozenset({"/healthz", "/readyz"})


def bearer_auth(token: str) -> Middleware:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS:
            given = request.headers.get("Authorization", "").encode()
            # compare_digest: the time taken does not tell how much of the token matched.
            if not hmac.compare_digest(given, expected):
                error = ApiError(401, "A valid bearer token is required")
                error.headers["WWW-Authenticate"] = 'Bearer realm="whatsapp-router"'
                raise error
        return await handler(request)

    return check
