"""Forwarding one request to a session pod: one pooled aiohttp client, a timeout on every
call, at most one retry, and an answer in the seed's shape when the pod cannot be reached."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import aiohttp
from aiohttp import web

from session_pod.validation import ApiError

from .directory import PodRecord
from .metrics import RouterMetrics

# Request headers the pod honours; the router's Authorization is never passed on.
FORWARDED_REQUEST = ("Content-Type", "Accept", "Idempotency-Key")
FORWARDED_RESPONSE = ("Content-Type", "Retry-After", "Idempotent-Replayed")
# The pod is gone or dropped the connection: refused, disconnected, or reset (a killed pod
# first shows as a reset of a kept-alive connection). Retried once where a repeat is safe.
NOT_DELIVERED = (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)


class Upstream:
    def __init__(self, timeout: float, connect_timeout: float, metrics: RouterMetrics) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self._metrics = metrics
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=64, keepalive_timeout=30)
        self._http = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=False
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def forward(
        self,
        request: web.Request,
        pod: PodRecord,
        location: str,
        request_id: str,
        body: bytes | None,
        retry: bool,
        current_pod: Callable[[], PodRecord | None],
    ) -> web.Response:
        """`current_pod` re-reads the cache before the retry: the pod may have moved."""
        headers = _pick(request.headers, FORWARDED_REQUEST)
        headers["X-Request-ID"] = request_id  # the pod logs it: one id in both logs
        try:
            return await self._call(request, pod, body, headers)
        except NOT_DELIVERED as exc:
            if not retry:
                raise self._down(location, pod, exc) from None
            self._metrics.retries.inc()
            pod = current_pod() or pod
            try:
                return await self._call(request, pod, body, headers)
            except NOT_DELIVERED as again:
                raise self._down(location, pod, again) from None
            except (aiohttp.ClientError, TimeoutError) as again:
                raise self._failed(location, pod, again) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._failed(location, pod, exc) from None

    async def _call(
        self, request: web.Request, pod: PodRecord, body: bytes | None, headers: dict[str, str]
    ) -> web.Response:
        assert self._http is not None, "Upstream.start() was not awaited"
        async with self._http.request(
            request.method, pod.base_url + request.path_qs, data=body, headers=headers
        ) as answer:
            payload = await answer.read()
            return web.Response(
                status=answer.status,
                body=payload,
                headers=_pick(answer.headers, FORWARDED_RESPONSE),
            )

    def _down(self, location: str, pod: PodRecord, exc: Exception) -> ApiError:
        self._metrics.upstream_errors.labels("unreachable").inc()
        error = ApiError(
            503,
            f"The session pod of location {location} is not reachable, try again later",
            error=f"{pod.name}: {type(exc).__name__}",
        )
        error.headers["Retry-After"] = "1"
        return error

    def _failed(self, location: str, pod: PodRecord, exc: Exception) -> ApiError:
        timeout = isinstance(exc, TimeoutError | asyncio.TimeoutError)
        self._metrics.upstream_errors.labels("timeout" if timeout else "broken").inc()
        what = "did not answer in time" if timeout else "broke the connection"
        return ApiError(
            504 if timeout else 502,
            f"The session pod of location {location} {what}",
            error=f"{pod.name}: {type(exc).__name__}",
        )


def _pick(headers: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    return {name: headers[name] for name in names if name in headers}
