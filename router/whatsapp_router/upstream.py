"""Forwarding one request to a session pod: kept-alive connections, a timeout on every call,
at most one retry, and an answer in the seed's shape when the pod cannot be reached."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from whatsapp_common.answers import ApiError
from whatsapp_common.pod_auth import PodCredentials, first_accepted

from .directory import PodRecord
from .metrics import RouterMetrics
from .pod_client import PodAnswer, PodBrokeConnection, PodClient, PodUnreachable

# Request headers the pod honours; the caller's Authorization is never passed on (the pod
# gets the router's own token for that location instead).
FORWARDED_REQUEST = ("Content-Type", "Accept", "Idempotency-Key")
FORWARDED_RESPONSE = ("Content-Type", "Retry-After", "Idempotent-Replayed")


class Upstream:
    def __init__(
        self,
        timeout: float,
        connect_timeout: float,
        metrics: RouterMetrics,
        credentials: PodCredentials,
    ) -> None:
        self._client = PodClient(timeout, connect_timeout)
        self._metrics = metrics
        self._credentials = credentials

    def close(self) -> None:
        self._client.close()

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
        """The caller's request, passed on to the pod; the pod's answer."""
        # HEAD is asked as GET: aiohttp drops the body on the way out, the parser needs it.
        method = "GET" if request.method == "HEAD" else request.method
        headers = _pick(request.headers, FORWARDED_REQUEST)
        target = request.rel_url.raw_path_qs
        answer = await self.call(
            pod, location, method, target, headers, request_id, body, retry, current_pod
        )
        return _response(answer)

    async def call(
        self,
        pod: PodRecord,
        location: str,
        method: str,
        target: str,
        headers: Mapping[str, str],
        request_id: str,
        body: bytes | None = None,
        retry: bool = True,
        current_pod: Callable[[], PodRecord | None] | None = None,
    ) -> PodAnswer:
        """One call to the location's pod with its pod token. `current_pod` re-reads the cache
        before the retry: the pod may have moved. Only a call that got nothing back
        (PodUnreachable) is retried, and only when `retry`. Raises ApiError (503, 502, 504)."""
        headers = {**headers, "X-Request-ID": request_id}  # the pod logs it: one id in both logs
        authorizations = self._credentials.for_location(location)

        async def call(pod: PodRecord) -> PodAnswer:
            def with_token(authorization: str) -> Awaitable[PodAnswer]:
                signed = {**headers, "Authorization": authorization}
                return self._client.request(method, pod.address, target, signed, body)

            return await first_accepted(
                authorizations, with_token, _status, self._metrics.pod_token_fallbacks.inc
            )

        try:
            try:
                return await call(pod)
            except PodUnreachable:
                if not retry:
                    raise
                self._metrics.retries.inc()
                pod = (current_pod and current_pod()) or pod
                return await call(pod)
        except PodUnreachable as exc:
            raise self._down(location, pod, exc) from None
        except (PodBrokeConnection, TimeoutError) as exc:
            raise self._failed(location, pod, exc) from None

    def _down(self, location: str, pod: PodRecord, exc: Exception) -> ApiError:
        self._metrics.upstream_errors.labels("unreachable").inc()
        error = ApiError(
            503,
            f"The session pod of location {location} is not reachable, try again later",
            error=f"{pod.name}: {exc}",
        )
        error.headers["Retry-After"] = "1"
        return error

    def _failed(self, location: str, pod: PodRecord, exc: Exception) -> ApiError:
        timeout = isinstance(exc, TimeoutError)
        self._metrics.upstream_errors.labels("timeout" if timeout else "broken").inc()
        what = "did not answer in time" if timeout else "broke the connection"
        return ApiError(
            504 if timeout else 502,
            f"The session pod of location {location} {what}",
            error=f"{pod.name}: {exc or type(exc).__name__}",
        )


def _status(answer: PodAnswer) -> int:
    return answer.status


def _response(answer: PodAnswer) -> web.Response:
    return web.Response(
        status=answer.status, body=answer.body, headers=_pick(answer.headers, FORWARDED_RESPONSE)
    )


def _pick(headers: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """By name in any case (the pod's answer has lower-case names), in the usual spelling."""
    return {name: headers[name.lower()] for name in names if name.lower() in headers}
