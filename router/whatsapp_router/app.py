"""The router's aiohttp application and its lifecycle: the backend (Kubernetes watches in
cluster.py, or local processes in local.py) and the pooled upstream client start with the
app and stop with it."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from whatsapp_common import logs, serving
from whatsapp_common.bearer import bearer_auth
from whatsapp_common.middleware import REQUEST_METRICS, errors_in_api_shape
from whatsapp_common.pod_auth import PodCredentials
from whatsapp_common.validation import MAX_BODY_BYTES

from . import link_page
from .api import BACKEND, DIRECTORY, METRICS, SETTINGS, UPSTREAM, WAKER, add_routes
from .config import RouterSettings
from .directory import Backend, Directory
from .link_view import HEARTBEAT_SECONDS, LinkStates
from .metrics import RouterMetrics
from .upstream import Upstream
from .waking import Waker

log = logs.get_logger("whatsapp_router")


def create_app(settings: RouterSettings, backend: Backend) -> web.Application:
    directory = Directory()
    metrics = RouterMetrics(directory)
    credentials = PodCredentials(settings.pod_auth_masters)
    upstream = Upstream(settings.upstream_timeout, settings.connect_timeout, metrics, credentials)

    app = web.Application(
        middlewares=[
            errors_in_api_shape,
            bearer_auth(
                lambda _: settings.tokens.current(),
                "whatsapp-router",
                metrics.requests_by_token,
                metrics.auth_refused,
                open_prefixes=("/link/", "/link-assets/"),  # the link token is their credential
            ),
        ],
        client_max_size=MAX_BODY_BYTES,
    )
    app[SETTINGS] = settings
    app[DIRECTORY] = directory
    app[METRICS] = metrics
    app[REQUEST_METRICS] = metrics
    app[UPSTREAM] = upstream
    app[BACKEND] = backend
    app[WAKER] = Waker(backend, directory, metrics, settings.wake_hold, settings.retry_after)
    add_routes(app)
    link_page.add_routes(app)

    async def start(_: web.Application) -> None:
        # Link pages follow pods' /events: a stream per open page, heartbeats every 10 s.
        timeout = aiohttp.ClientTimeout(
            sock_connect=settings.connect_timeout, sock_read=3 * HEARTBEAT_SECONDS
        )
        http = aiohttp.ClientSession(timeout=timeout)
        app[link_page.LINK_STATES] = LinkStates(
            directory, upstream, credentials, http, metrics.link_stream_errors.inc
        )
        await backend.start(directory, metrics)

    async def stop(_: web.Application) -> None:
        await backend.stop()
        upstream.close()
        await app[link_page.LINK_STATES].close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


async def serve(settings: RouterSettings, backend: Backend) -> None:
    """Serve until SIGTERM, then finish the requests in flight."""
    await serving.serve(
        create_app(settings, backend),
        settings.host,
        settings.port,
        log=log,
        shutdown_timeout=10,
        namespace=settings.namespace,
    )
