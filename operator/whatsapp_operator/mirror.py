"""The status of one WhatsAppSession as the operator wants it and as it last wrote it.

One writer task per resource sends the difference, so at most one status patch per
resource is in flight, an unchanged status is never sent, and a burst of events (a replayed
history, a flapping session) becomes one patch."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes.client.exceptions import ApiException

from whatsapp_common.logs import get_logger

from .kube import Api, Unreachable
from .metrics import STATUS_PATCHES, STATUS_WRITER_CRASHES
from .resource import Resource

log = get_logger(__name__)
RETRY_SECONDS = (0.5, 1, 2, 5, 10)
# Events that arrive this close together are one patch: a replayed history comes in several
# reads, and its intermediate states are not worth writing.
COALESCE_SECONDS = 0.05


class Mirror:
    def __init__(self, api: Api, resource: Resource, written: dict[str, Any]) -> None:
        self.resource = resource
        self._api = api
        self.written = dict(written)  # what the resource's status is, as far as we know
        self.desired = dict(written)
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"status {resource.name}")
        self._task.add_done_callback(self._ended)

    @property
    def conditions(self) -> list[dict[str, Any]]:
        return list(self.desired.get("conditions") or [])

    @property
    def phase(self) -> str | None:
        return self.desired.get("phase")

    def update(self, fields: dict[str, Any]) -> None:
        self.desired.update(fields)
        self._wake.set()

    def wrote(self, fields: dict[str, Any]) -> None:
        """Fields another writer (kopf's handler patch) has set."""
        self.written.update(fields)
        self.desired.update(fields)

    def close(self) -> None:
        self._task.cancel()

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The writer only ends when closed; one that crashed is said and started again."""
        if task.cancelled() or (error := task.exception()) is None:
            return
        STATUS_WRITER_CRASHES.inc()
        log.error(
            "status writer crashed, starting again", resource=self.resource.name, error=repr(error)
        )
        self._task = asyncio.create_task(self._run(), name=f"status {self.resource.name}")
        self._task.add_done_callback(self._ended)
        self._wake.set()

    async def _run(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            await asyncio.sleep(COALESCE_SECONDS)
            self._wake.clear()
            diff = {k: v for k, v in self.desired.items() if self.written.get(k) != v}
            if not diff:
                continue
            try:
                await self._api.patch_status(self.resource.namespace, self.resource.name, diff)
            except (ApiException, Unreachable) as exc:
                if isinstance(exc, ApiException) and exc.status == 404:
                    continue  # the resource is gone; release() closes this mirror
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                log.warning(
                    "status patch failed, retrying",
                    resource=self.resource.name,
                    error=str(exc),
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                self._wake.set()
                continue
            failures = 0
            STATUS_PATCHES.inc()
            log.debug("status patched", resource=self.resource.name, fields=sorted(diff))
            self.written.update(diff)
