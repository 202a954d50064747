"""The HTTP middleware of every service (session pod, router): exactly one answer per request,
always in the seed's error shape; a request id (kept when the caller sends one). Then, once
the answer is out, one structured access log line and the request metrics (`AccessLog`,
which `serving.app_runner` installs)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .answers import ApiError
from .logs import get_logger

log = get_logger("access")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
# Handlers pass the request id on (the router to the pod); the router sets the location.
REQUEST_ID = web.RequestKey("request_id", str)
LOCATION = web.RequestKey("location", str)


class RequestMetrics(Protocol):
    requests: Any  # Counter labelled (route, status)
    request_seconds: Any  # Histogram labelled (route)


REQUEST_METRICS = web.AppKey("request_metrics", RequestMetrics)


@web.middleware
async def errors_in_api_shape(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    try:
        response = await handler(request)
    except ApiError as exc:
        response = exc.response()
    except web.HTTPException as exc:
        response = ApiError(exc.status, exc.reason).response()
    except Exception:
        log.exception("unhandled error", route=route_of(request), request_id=request_id)
        response = ApiError(500, "Internal error").response()
    if not response.prepared:  # a stream (/events) has sent its headers already
        response.headers["X-Request-ID"] = request_id
    return response


def route_of(request: web.Request) -> str:
    """The matched route's pattern (`/status`), never the raw path: a bounded label."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


class AccessLog(AbstractAccessLogger):
    """The access log line and the request metrics. aiohttp calls it once the answer has
    been sent, so neither delays the caller."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if not isinstance(request, web.Request) or REQUEST_ID not in request:
            # Refused by aiohttp's HTTP parser before any routing (a malformed request).
            log.info("request refused", status=response.status, ms=round(time * 1000, 2))
            return
        route = route_of(request)
        metrics = request.app[REQUEST_METRICS]
        metrics.requests.labels(route, str(response.status)).inc()
        metrics.request_seconds.labels(route).observe(time)
        fields = {"location": request[LOCATION]} if LOCATION in request else {}
        log.info(
            "request",
            method=request.method,
            route=route,
            status=response.status,
            ms=round(time * 1000, 2),
            request_id=request[REQUEST_ID],
            **fields,
        )
