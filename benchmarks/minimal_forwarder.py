"""The floor the router is compared with: one aiohttp handler that forwards every GET to one
upstream through aiohttp's client, with no routing, auth, logs or metrics (the caller's
Authorization header is passed on: the pod asks for its token).
    python -m benchmarks.minimal_forwarder PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web

CLIENT = web.AppKey("client", aiohttp.ClientSession)


def create_app(upstream: str) -> web.Application:
    async def forward(request: web.Request) -> web.Response:
        headers = {"Authorization": request.headers.get("Authorization", "")}
        async with request.app[CLIENT].get(upstream + request.path_qs, headers=headers) as answer:
            body = await answer.read()
            return web.Response(status=answer.status, body=body, content_type=answer.content_type)

    async def client(app: web.Application):  # type: ignore[no-untyped-def]
        app[CLIENT] = aiohttp.ClientSession()
        yield
        await app[CLIENT].close()

    app = web.Application()
    app.cleanup_ctx.append(client)
    app.router.add_get("/{path:.*}", forward)
    return app


if __name__ == "__main__":
    port, upstream = int(sys.argv[1]), sys.argv[2]
    web.run_app(create_app(upstream), host="127.0.0.1", port=port, access_log=None, print=None)
