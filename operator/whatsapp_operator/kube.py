"""How the operator calls the Kubernetes API (`Kube`'s synchronous clients): on its own
bounded executor, each call with a timeout, counted, and its failures turned into kopf's
error types by handlers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from whatsapp_common.crd import GROUP, PLURAL, VERSION
from whatsapp_common.kube_clients import Kube

from .metrics import API_CALLS

FIELD_MANAGER = "whatsapp-operator"
# Worth retrying: conflicts of concurrent writers, throttling, the server's own failures.
TEMPORARY_STATUSES = {409, 429, 500, 502, 503, 504}


class Unreachable(Exception):
    """The API server did not answer in time (or the connection failed)."""


class Api:
    """Each call runs on one of `workers` threads and gives up after `timeout` seconds, so
    a slow API server delays calls but never holds the event loop or every thread."""

    def __init__(self, kube: Kube, workers: int, timeout: float) -> None:
        self.kube = kube
        self.timeout = timeout
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, "kube-api")

    async def call(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Raises ApiException for an HTTP error answer, Unreachable for no answer."""
        call = functools.partial(fn, *args, _request_timeout=self.timeout, **kwargs)
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except ApiException as exc:
            API_CALLS.labels(name, str(exc.status)).inc()
            raise
        except (HTTPError, OSError) as exc:
            API_CALLS.labels(name, "unreachable").inc()
            raise Unreachable(f"{name}: {exc}") from exc
        API_CALLS.labels(name, "ok").inc()
        return result

    async def patch_status(self, namespace: str, name: str, fields: dict[str, Any]) -> Any:
        """One patch of a WhatsAppSession's status subresource; returns the resource."""
        return await self.call(
            "patch status",
            self.kube.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": fields},
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def handler_error(
    exc: ApiException | Unreachable, what: str
) -> kopf.TemporaryError | kopf.PermanentError:
    """kopf's error for a failed call inside a handler: retried later when it may pass,
    permanent when the API refused the request itself (forbidden, invalid)."""
    if isinstance(exc, Unreachable) or exc.status in TEMPORARY_STATUSES:
        return kopf.TemporaryError(f"{what}: {exc}", delay=5)
    return kopf.PermanentError(f"{what}: {exc.status} {exc.reason}")


# Server-side apply that owns every field it sets (only ever sent to an object this
# resource already owns: see ownership.py).
APPLY = {
    "field_manager": FIELD_MANAGER,
    "force": True,
    "_content_type": "application/apply-patch+yaml",
}
