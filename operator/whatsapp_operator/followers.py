"""Who follows which session pod's /events, driven by watches only (no polling).

A location's follower runs while both are known: the resource that owns the location
(from reconcile) and its pod Running with an IP (from the pod watch). A new pod, a new IP
or a restarted container starts a new follower (the pod's event ids start again); a pod
that stops running stops it. All streams share one aiohttp connection pool."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from whatsapp_common.backoff import backoff_delay
from whatsapp_common.event_types import EventType
from whatsapp_common.logs import get_logger
from whatsapp_common.pod_auth import PodCredentials
from whatsapp_common.states import phase_of

from .config import OperatorConfig
from .hibernation import asleep
from .kube import Api
from .metrics import FOLLOWERS, STREAM_ERRORS
from .mirror import Mirror
from .notices import Notices
from .resource import Resource
from .sse import ServerEvent, read_events
from .status import (
    WARNINGS,
    backup_status,
    idle_status,
    pod_gone_status,
    state_status,
    unreachable_status,
)

log = get_logger(__name__)
# Failed attempts in a row before the pod's state counts as unknown (a starting pod refuses
# for a moment before its server listens).
UNREACHABLE_AFTER = 3


@dataclass(frozen=True)
class PodSeen:
    """A session pod that runs: what identifies one stream of its events."""

    name: str
    uid: str
    ip: str
    port: int
    restarts: int

    @classmethod
    def running(cls, pod: Any, default_port: int) -> PodSeen | None:
        """The pod if it is Running with an IP and not being deleted, else None."""
        meta, status = pod["metadata"], pod.get("status") or {}
        if meta.get("deletionTimestamp") or status.get("phase") != "Running":
            return None
        if not status.get("podIP"):
            return None
        ports = [p for c in pod["spec"].get("containers", []) for p in c.get("ports") or []]
        port = next((p["containerPort"] for p in ports if p.get("name") == "http"), default_port)
        restarts = sum(c.get("restartCount", 0) for c in status.get("containerStatuses") or [])
        return cls(meta["name"], meta["uid"], status["podIP"], port, restarts)


class Followers:
    def __init__(
        self, api: Api, config: OperatorConfig, notices: Notices, credentials: PodCredentials
    ) -> None:
        self._api, self._config, self._notices = api, config, notices
        self._owners: dict[str, Resource] = {}  # by location label
        self._mirrors: dict[str, Mirror] = {}  # by resource uid
        self._pods: dict[str, PodSeen] = {}  # by location label: running pods only
        self._tasks: dict[str, tuple[tuple[str, PodSeen], asyncio.Task[None]]] = {}
        self._http: aiohttp.ClientSession | None = None
        self._credentials = credentials
        # By resource uid: `idleSince` as the running follower's stream last said it (None:
        # busy, or not said yet). `on_idle(uid)` runs after each `idle` event it applies.
        self._idle: dict[str, str | None] = {}
        self.on_idle: Callable[[str], None] | None = None
        # By location label: (pod uid, phase) of the last state its followed pod reported.
        self._reported: dict[str, tuple[str, str]] = {}
        self.on_report: Callable[[str], None] = lambda namespace: None  # rollout.py's wake

    async def start(self) -> None:
        # One pool for every stream: a connection per followed pod, none idle for long.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=2, keepalive_timeout=5)
        self._http = aiohttp.ClientSession(connector=connector)

    async def close(self) -> None:
        for _, task in self._tasks.values():
            task.cancel()
        for mirror in self._mirrors.values():
            mirror.close()
        if self._http is not None:
            await self._http.close()

    def idle_since(self, uid: str) -> str | None:
        """What the resource's pod has said of its idleness on the stream followed now: an
        idle fact in the status is acted on only once the live stream says it too (after an
        operator restart the status may hold one the pod has taken back meanwhile)."""
        return self._idle.get(uid)

    def address(self, label: str) -> tuple[str, int] | None:
        """The location's running pod (IP, port), if the pod watch has seen one."""
        pod = self._pods.get(label)
        return (pod.ip, pod.port) if pod is not None else None

    def running_pod(self, label: str) -> str:
        """The uid of the location's running pod ("" when none runs)."""
        pod = self._pods.get(label)
        return pod.uid if pod is not None else ""

    def reported(self, label: str) -> tuple[str, str] | None:
        """(pod uid, phase) of the last state the location's followed pod reported."""
        return self._reported.get(label)

    def own(self, resource: Resource, status: dict[str, Any]) -> None:
        """`resource` owns its location; `status` is what its handler has just set."""
        mirror = self._mirrors.get(resource.uid)
        if mirror is None:
            mirror = self._mirrors[resource.uid] = Mirror(self._api, resource, resource.status)
        mirror.resource = resource
        mirror.wrote(status)
        self._owners[resource.label] = resource
        self._sync(resource.label)

    def wrote(self, resource: Resource, fields: dict[str, Any]) -> None:
        """Another writer (hibernation) set `fields` of `resource`, now as given."""
        if (owner := self._owners.get(resource.label)) and owner.uid == resource.uid:
            self._owners[resource.label] = resource
        if mirror := self._mirrors.get(resource.uid):
            mirror.resource = resource
            mirror.wrote(fields)

    def release(self, resource: Resource) -> None:
        """The resource is gone (or lost its location): stop following for it."""
        if (owner := self._owners.get(resource.label)) and owner.uid == resource.uid:
            del self._owners[resource.label]
            self._sync(resource.label)
        if mirror := self._mirrors.pop(resource.uid, None):
            mirror.close()
        self._idle.pop(resource.uid, None)

    def pod(self, label: str, pod: PodSeen | None) -> None:
        """What the pod watch says of the location's pod (None: none is running)."""
        was = self._pods.pop(label, None)
        if pod is not None:
            self._pods[label] = pod
        self._sync(label)
        owner = self._owners.get(label)
        # Paused or hibernating: gone on purpose, and the phase says so already.
        on_purpose = owner is not None and (owner.paused or asleep(owner))
        if pod is None and was is not None and owner is not None and not on_purpose:
            mirror = self._mirrors[owner.uid]
            mirror.update(pod_gone_status(mirror.conditions, f"pod {was.name} is not running"))

    def _sync(self, label: str) -> None:
        owner, pod = self._owners.get(label), self._pods.get(label)
        key = (owner.uid, pod) if owner is not None and pod is not None else None
        current = self._tasks.get(label)
        if current is not None and current[0] == key:
            return
        if current is not None:
            current[1].cancel()
            del self._tasks[label]
            self._reported.pop(label, None)
        if key is not None and owner is not None and pod is not None:
            self._idle.pop(owner.uid, None)  # a new stream says it again from its start
            task = asyncio.create_task(self._follow(owner, pod), name=f"follow {pod.name}")
            task.add_done_callback(lambda done: self._ended(label, key, done))
            self._tasks[label] = (key, task)
        FOLLOWERS.set(len(self._tasks))

    def _ended(self, label: str, key: tuple[str, PodSeen], task: asyncio.Task[None]) -> None:
        """A follower only ends when cancelled; one that crashed is said and started again."""
        if task.cancelled() or (error := task.exception()) is None:
            return
        STREAM_ERRORS.labels("crash").inc()
        log.error("follower crashed, starting again", pod=key[1].name, error=repr(error))
        if (current := self._tasks.get(label)) is not None and current[0] == key:
            del self._tasks[label]
            asyncio.get_running_loop().call_later(1, self._sync, label)

    async def _follow(self, owner: Resource, pod: PodSeen) -> None:
        """Applies each event of this pod's stream once, resuming with Last-Event-ID."""
        assert self._http is not None, "start() first"
        mirror = self._mirrors[owner.uid]
        read_timeout = self._config.events_read_timeout_seconds
        url = f"http://{pod.ip}:{pod.port}/events?heartbeat={max(1, int(read_timeout / 3))}"
        started, after, failures = time.time(), 0, 0
        state: dict[str, Any] | None = None  # the last state event's data
        while True:
            try:
                authorizations = self._credentials.for_location(owner.location)
                events = read_events(self._http, url, authorizations, after, read_timeout)
                async for event in events:
                    if event is None:  # connected (again): what was unknown is known
                        if failures >= UNREACHABLE_AFTER and state is not None:
                            mirror.update(state_status(state, mirror.conditions, time.time()))
                        failures = 0
                    elif event.id > after:
                        self._apply(mirror, event, live=event.at >= started)
                        after = event.id
                        if event.type == EventType.STATE:
                            state = event.data
                            self._report(owner, pod, state)
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
                STREAM_ERRORS.labels(kind).inc()
                log.warning(
                    "session pod events lost, reconnecting",
                    pod=pod.name,
                    kind=kind,
                    error=str(exc),
                    last_event=after,
                )
                if failures + 1 >= UNREACHABLE_AFTER:  # the pod's state is not known
                    mirror.update(unreachable_status(mirror.conditions, f"{pod.name}: {kind}"))
                failures += 1
                await asyncio.sleep(backoff_delay(failures, 0.2, 5.0))

    def _report(self, owner: Resource, pod: PodSeen, state: dict[str, Any]) -> None:
        if (phase := phase_of(state.get("state", ""))) is not None:
            self._reported[owner.label] = (pod.uid, phase)
            self.on_report(owner.namespace)

    def _apply(self, mirror: Mirror, event: ServerEvent, live: bool) -> None:
        """One event into the desired status (the mirror writes it)."""
        if event.type == EventType.STATE and asleep(mirror.resource):
            return  # the last words of a pod going to sleep: the phase stays Hibernating
        if event.type == EventType.STATE and phase_of(event.data.get("state", "")) is not None:
            fields = state_status(event.data, mirror.conditions, event.at)
            if fields["phase"] != mirror.phase and live:
                self._notices.info(
                    mirror.resource,
                    fields["phase"],
                    f"{mirror.phase or 'Pending'} -> {fields['phase']}: {fields['message']}",
                )
            mirror.update(fields)
        elif event.type == EventType.IDLE:
            fields = idle_status(event.data)
            self._idle[mirror.resource.uid] = fields["idleSince"]
            mirror.update(fields)
            if self.on_idle is not None:
                self.on_idle(mirror.resource.uid)
        elif event.type == EventType.REMOTE_SESSION_SAVED:
            mirror.update(backup_status(event.data, mirror.conditions, event.at))
        elif event.type in WARNINGS and live:
            self._notices.warn(mirror.resource, event.type, str(event.data))
