"""A real HTTP server standing in for the Rails app's webhook endpoints."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .processes import free_port, wait_until


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


class RailsReceiver:
    """Records every webhook; `stop()` takes it off the network, `start()` brings it back on
    the same port (as a Rails deploy would)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        """`host`: where it listens (a real node's pods reach the test bridge's gateway)."""
        self.host = host
        self.port = free_port(host)
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self._runner: web.AppRunner | None = None

    def env(self, secret: str) -> dict[str, str]:
        """The session pod's configuration, in the seed's three variables."""
        return {
            "RAILS_APP_URL": f"http://{self.host}:",
            "RAILS_APP_PORT": str(self.port),
            "RAILS_APP_ENDPOINT_SCOPE": "/whatsapp_js",
            "WEBHOOK_SECRET": secret,
            "WEBHOOK_RETRY_BASE_SECONDS": "0.2",
            "WEBHOOK_RETRY_MAX_SECONDS": "1",
        }

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            bodies = [r.json for r in self.received]
        return [b for b in bodies if type_ is None or b["event"] == type_]

    def wait_for(self, type_: str, timeout: float = 30) -> dict[str, Any]:
        return wait_until(
            lambda: (found := self.events(type_)) and found[-1], timeout, f"a {type_} webhook"
        )

    async def _receive(self, request: web.Request) -> web.Response:
        received = Received(request.path, dict(request.headers), await request.read())
        with self._lock:
            self.received.append(received)
        return web.json_response({"ok": True})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/whatsapp_js/{event}", self._receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
