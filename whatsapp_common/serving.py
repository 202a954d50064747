"""Running an aiohttp app as a service (the session pod, the router): the access log, listen,
and on SIGTERM or SIGINT finish the requests in flight, then run the app's cleanup."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from .logs import FieldsAdapter
from .middleware import AccessLog
from .middleware import log as access_log


def app_runner(app: web.Application, shutdown_timeout: float) -> web.AppRunner:
    return web.AppRunner(
        app,
        access_log_class=AccessLog,
        access_log=access_log.logger,
        shutdown_timeout=shutdown_timeout,
    )


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    log: FieldsAdapter,
    shutdown_timeout: float,
    stopping: str = "stopping",
    **fields: object,
) -> None:
    """Serve until a stop signal. `stopping` says what the cleanup will do; `fields` go on the
    "listening" line."""
    runner = app_runner(app, shutdown_timeout)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("listening", host=host, port=port, **fields)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info(stopping)
    await runner.cleanup()
    log.info("stopped")
