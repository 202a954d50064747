"""The router's aiohttp application and its lifecycle: the backend (Kubernetes watches, or
local processes) and the pooled upstream client start with the app and stop with it."""

from __future__ import annotations

import asyncio

from aiohttp import web

from session_pod.middleware import REQUEST_METRICS, seed_errors
from session_pod.validation import MAX_BODY_BYTES
from whatsapp_operator.kube import Kube

from .api import BACKEND, DIRECTORY, METRICS, SETTINGS, UPSTREAM, add_routes
from .auth import bearer_auth
from .config import RouterSettings
from .directory import Backend, Directory
from .metrics import RouterMetrics
from .provisioning import create_session
from .upstream import Upstream
from .watch import Watcher, sources


class KubeBackend:
    """The cluster: watches feed the directory, /login creates a WhatsAppSession."""

    def __init__(self, kube: Kube, settings: RouterSettings) -> None:
        self._kube = kube
        self._namespace = settings.namespace
        self._session_port = settings.session_port
        self._watcher: Watcher | None = None

    async def start(self, directory: Directory) -> None:
        self._watcher = Watcher(directory, sources(self._kube, self._namespace, self._session_port))
        self._watcher.start(asyncio.get_running_loop())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()

    async def create_session(self, location: str) -> None:
        await create_session(self._kube, self._namespace, location)


def create_app(settings: RouterSettings, backend: Backend) -> web.Application:
    directory = Directory()
    metrics = RouterMetrics(directory)
    upstream = Upstream(settings.upstream_timeout, settings.connect_timeout, metrics)

    app = web.Application(
        middlewares=[
            seed_errors,
            bearer_auth(settings.tokens, metrics.requests_by_token, metrics.auth_refused),
        ],
        client_max_size=MAX_BODY_BYTES,
    )
    app[SETTINGS] = settings
    app[DIRECTORY] = directory
    app[METRICS] = metrics
    app[REQUEST_METRICS] = metrics
    app[UPSTREAM] = upstream
    app[BACKEND] = backend
    add_routes(app)

    async def start(_: web.Application) -> None:
        await backend.start(directory)

    async def stop(_: web.Application) -> None:
        await backend.stop()
        upstream.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app
