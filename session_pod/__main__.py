"""`python -m session_pod`: serve one location until SIGTERM, then close the browser and exit."""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web

from . import logs
from .app import create_app
from .config import Settings
from .delivery import OutboxError
from .middleware import app_runner

log = logs.get_logger("session_pod")


async def serve(settings: Settings) -> None:
    try:
        app = create_app(settings)
    except OutboxError as exc:
        log.critical("the delivery database cannot be used", error=str(exc))
        sys.exit(f"delivery database error: {exc}")
    runner = app_runner(app, shutdown_timeout=5)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    log.info("listening", host=settings.host, port=settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("stopping: closing the browser")
    await runner.cleanup()
    log.info("stopped")


def main() -> None:
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        sys.exit(f"configuration error: {exc}")
    logs.configure({"location": settings.location_id})
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
