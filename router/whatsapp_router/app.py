"""The router's aiohttp application and its lifecycle: the watch threads and the pooled
upstream client start with the app and stop with it."""

from __future__ import annotations

import asyncio

from aiohttp import web

from session_pod.middleware import seed_errors
from session_pod.validation import MAX_BODY_BYTES
from whatsapp_operator.kube import Kube

from .api import DIRECTORY, KUBE, METRICS, SETTINGS, UPSTREAM, add_routes
from .auth import bearer_auth
from .config import RouterSettings
from .directory import Directory
from .metrics import RouterMetrics
from .upstream import Upstream
from .watch import Watcher, sources


def create_app(settings: RouterSettings, kube: Kube) -> web.Application:
    directory = Directory()
    metrics = RouterMetrics(directory)
    upstream = Upstream(settings.upstream_timeout, settings.connect_timeout, metrics)
    watcher = Watcher(directory, sources(kube, settings.namespace, settings.session_port))

    app = web.Application(
        middlewares=[seed_errors(metrics), bearer_auth(settings.token)],
        client_max_size=MAX_BODY_BYTES,
    )
    app[SETTINGS] = settings
    app[DIRECTORY] = directory
    app[METRICS] = metrics
    app[UPSTREAM] = upstream
    app[KUBE] = kube
    add_routes(app)

    async def start(_: web.Application) -> None:
        await upstream.start()
        watcher.start(asyncio.get_running_loop())

    async def stop(_: web.Application) -> None:
        watcher.stop()
        await upstream.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app
