"""`python -m whatsapp_router`: serve until SIGTERM, then finish the requests in flight."""

from __future__ import annotations

import asyncio
import sys

from session_pod import logs, serving
from whatsapp_operator.kube import Kube

from .app import KubeBackend, create_app
from .config import ConfigError, RouterSettings
from .directory import Backend

log = logs.get_logger("whatsapp_router")


async def serve(settings: RouterSettings, backend: Backend) -> None:
    app = create_app(settings, backend)
    await serving.serve(
        app,
        settings.host,
        settings.port,
        log=log,
        shutdown_timeout=10,
        namespace=settings.namespace,
    )


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
