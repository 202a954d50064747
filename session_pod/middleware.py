"""The HTTP middleware of every service (session pod, router): exactly one answer per request,
always in the seed's error shape; a request id (kept when the caller sends one); one
structured access log line; request metrics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from .logs import get_logger
from .validation import ApiError

log = get_logger("access")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
REQUEST_ID = "request_id"  # request key: handlers pass it on (the router to the pod)
LOCATION = "location"  # request key: set by handlers that learn it (the router), for the log


class RequestMetrics(Protocol):
    requests: Any  # Counter labelled (route, status)
    request_seconds: Any  # Histogram labelled (route)


def seed_errors(metrics: RequestMetrics) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
        request[REQUEST_ID] = request_id
        started = time.perf_counter()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        try:
            response = await handler(request)
        except ApiError as exc:
            response = exc.response()
        except web.HTTPException as exc:
            response = ApiError(exc.status, exc.reason).response()
        except Exception:
            log.exception("unhandled error", route=route, request_id=request_id)
            response = ApiError(500, "Internal error").response()
        if not response.prepared:  # a stream (/events) has sent its headers already
            response.headers["X-Request-ID"] = request_id
        elapsed = time.perf_counter() - started
        metrics.requests.labels(route, str(response.status)).inc()
        metrics.request_seconds.labels(route).observe(elapsed)
        fields = {"location": request[LOCATION]} if LOCATION in request else {}
        log.info(
            "request",
            method=request.method,
            route=route,
            status=response.status,
            ms=round(elapsed * 1000, 2),
            request_id=request_id,
            **fields,
        )
        return response

    return middleware
