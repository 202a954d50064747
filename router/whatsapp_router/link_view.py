"""What a link page shows of its one location, and how the router keeps it current.

The router asks the location's pod for `/status`, then follows the pod's `/events` (only
`state`, `qr`, `qr_idle` and `pairing_code`, from the event the status was read at), with the
pod's own token, as it forwards any call. Each change is reduced to a `view`: the page's
state, a QR version (the image itself is fetched from the router, never put in the stream),
the phone once linked, the pairing code. Nothing else of the pod reaches the page.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from whatsapp_common.answers import ApiError
from whatsapp_common.event_types import EventType
from whatsapp_common.logs import get_logger
from whatsapp_common.pod_auth import PodCredentials, first_accepted
from whatsapp_common.states import AUTHENTICATED, SessionState

from .directory import Directory, PodRecord, Verdict
from .upstream import Upstream

log = get_logger(__name__)

FOLLOWED = (EventType.STATE, EventType.QR, EventType.QR_IDLE, EventType.PAIRING_CODE)
HEARTBEAT_SECONDS = 10
RETRY_SECONDS = 1.0
View = dict[str, Any]


@dataclass
class LinkState:
    """The location's link state as far as a page may know it."""

    session_state: str
    qr_pending: bool = False
    qr_version: int = 0  # changes with each QR: the page loads the image again
    phone: str | None = None
    pairing_code: str | None = None
    pairing_expires_at: float | None = None

    @classmethod
    def from_status(cls, status: dict[str, Any]) -> LinkState:
        return cls(
            session_state=status["state"],
            qr_pending=bool(status.get("qr_pending")),
            qr_version=int(status.get("last_event_id") or 0),
            phone=status.get("phone"),
        )

    @property
    def linked(self) -> bool:
        return self.session_state in AUTHENTICATED

    def apply(self, kind: str, event_id: int, data: dict[str, Any]) -> None:
        if kind == EventType.STATE:
            self.session_state, self.phone = data["state"], data.get("phone")
            if self.session_state != SessionState.QR_REQUIRED:
                self.qr_pending, self.pairing_code, self.pairing_expires_at = False, None, None
        elif kind == EventType.QR:
            self.qr_pending, self.qr_version = True, event_id
        elif kind == EventType.QR_IDLE:
            self.qr_pending = False
        elif kind == EventType.PAIRING_CODE:
            self.pairing_code = data["pairing_code"]
            self.pairing_expires_at = data["expires_at"]

    def view(self) -> View:
        state = self.session_state
        if self.linked:
            return {"state": "linked", "phone": self.phone}
        if state == SessionState.QR_REQUIRED:
            if not self.qr_pending:
                return {"state": "qr_expired"}
            return {
                "state": "qr",
                "qr": self.qr_version,
                "pairing_code": self.pairing_code,
                "pairing_expires_at": self.pairing_expires_at,
            }
        if state in (SessionState.LOGGED_OUT, SessionState.FAILED):
            return {"state": "stopped"}
        return {"state": "waiting"}


def no_pod_view(verdict: Verdict) -> View:
    """A location with no pod to ask: starting, or stopped (paused, failed, no session)."""
    return {"state": "waiting" if verdict is Verdict.STARTING else "stopped"}


class LinkStates:
    """Reads locations' link states from their pods."""

    def __init__(
        self,
        directory: Directory,
        upstream: Upstream,
        credentials: PodCredentials,
        http: aiohttp.ClientSession,
        on_error: Callable[[], None],
    ) -> None:
        """`on_error()`: a follow of a pod's events broke (counted)."""
        self._directory = directory
        self._upstream = upstream
        self._credentials = credentials
        self._http = http
        self._on_error = on_error

    async def close(self) -> None:
        await self._http.close()

    async def current(self, location: str, request_id: str) -> LinkState | None:
        """The state now; None when no pod can be asked. Raises ApiError (pod unreachable)."""
        route = self._directory.route(location)
        if route.verdict is not Verdict.FORWARD or route.pod is None:
            return None
        return LinkState.from_status(await self._status(route.pod, location, request_id))

    async def follow(self, location: str, request_id: str) -> AsyncIterator[View | None]:
        """The location's view, again after each change; None as a heartbeat (at least every
        HEARTBEAT_SECONDS). A pod that goes away is asked again: never ends by itself."""
        while True:
            route = self._directory.route(location)
            if route.verdict is not Verdict.FORWARD or route.pod is None:
                yield no_pod_view(route.verdict)
                await asyncio.sleep(RETRY_SECONDS)
                yield None  # a write that fails tells a page that went away
                continue
            try:
                status = await self._status(route.pod, location, request_id)
                link = LinkState.from_status(status)
                yield link.view()
                after = int(status.get("last_event_id") or 0)
                async for kind, event_id, data in self._events(route.pod, location, after):
                    if kind is None:
                        yield None
                        continue
                    link.apply(kind, event_id, data)
                    yield link.view()
            except (ApiError, aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                self._on_error()
                log.warning(
                    "a link page lost its pod's events; asking again",
                    location=location,
                    error=f"{type(exc).__name__}: {exc}",
                )
            yield None
            await asyncio.sleep(RETRY_SECONDS)

    async def _status(self, pod: PodRecord, location: str, request_id: str) -> dict[str, Any]:
        answer = await self._upstream.call(pod, location, "GET", "/status", {}, request_id)
        if answer.status != 200:
            raise ApiError(answer.status, f"/status of {location} answered {answer.status}")
        status: dict[str, Any] = json.loads(answer.body)
        return status

    async def _events(
        self, pod: PodRecord, location: str, after: int
    ) -> AsyncIterator[tuple[str | None, int, dict[str, Any]]]:
        """(type, id, data) of each followed event; (None, 0, {}) for a heartbeat."""
        ip, port = pod.address
        types = ",".join(FOLLOWED)
        url = f"http://{ip}:{port}/events?heartbeat={HEARTBEAT_SECONDS}&types={types}"

        async def open_stream(authorization: str) -> aiohttp.ClientResponse:
            headers = {"Authorization": authorization, "Last-Event-ID": str(after)}
            response = await self._http.get(url, headers=headers)
            if response.status == 401:
                response.release()
            return response

        response = await first_accepted(
            self._credentials.for_location(location), open_stream, _status
        )
        async with response:
            if response.status != 200:
                raise ValueError(f"/events of location {location} answered {response.status}")
            kind, event_id = None, 0
            async for raw in response.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith(":"):
                    yield None, 0, {}
                elif line.startswith("id: "):
                    event_id = int(line[4:])
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind is not None:
                    yield kind, event_id, json.loads(line[6:])["data"]
                    kind = None


def _status(response: aiohttp.ClientResponse) -> int:
    return response.status
