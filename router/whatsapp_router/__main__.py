"""`python -m whatsapp_router`: serve until SIGTERM, then finish the requests in flight."""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web

from session_pod import logs
from session_pod.middleware import app_runner
from whatsapp_operator.kube import Kube

from .app import KubeBackend, create_app
from .config import ConfigError, RouterSettings
from .directory import Backend

log = logs.get_logger("whatsapp_router")


async def serve(settings: RouterSettings, backend: Backend) -> None:
    runner = app_runner(create_app(settings, backend), shutdown_timeout=10)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    log.info("listening", host=settings.host, port=settings.port, namespace=settings.namespace)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("stopping")
    await runner.cleanup()
    log.info("stopped")


def main() -> None:
    try:
        settings = RouterSettings.from_env()
    except ConfigError as exc:
        sys.exit(f"configuration error: {exc}")
    logs.configure({"service": "whatsapp-router"}, settings.log_level)
    kube = Kube()  # in-cluster config, else KUBECONFIG
    asyncio.run(serve(settings, KubeBackend(kube, settings)))


if __name__ == "__main__":
    main()
