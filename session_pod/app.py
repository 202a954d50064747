"""The session pod's aiohttp application and its lifecycle."""

from __future__ import annotations

from aiohttp import web

from .api import METRICS, SESSION, add_routes, seed_errors
from .config import Settings
from .events import EventBus
from .metrics import Metrics
from .session import Session
from .validation import MAX_BODY_BYTES


def create_app(settings: Settings) -> web.Application:
    """Startup launches the browser in the background; cleanup closes it (after SIGTERM)."""
    metrics = Metrics(settings.location_id)
    bus = EventBus()
    bus.add_listener(lambda event: metrics.events.labels(event.type).inc())
    session = Session(settings, bus, metrics)

    app = web.Application(middlewares=[seed_errors], client_max_size=MAX_BODY_BYTES)
    app[SESSION] = session
    app[METRICS] = metrics
    add_routes(app)

    async def start_session(_: web.Application) -> None:
        await session.start()

    async def end_streams(_: web.Application) -> None:
        bus.close()

    async def close_browser(_: web.Application) -> None:
        await session.close()

    app.on_startup.append(start_session)
    app.on_shutdown.append(end_streams)
    app.on_cleanup.append(close_browser)
    return app
