"""Hibernation (`spec.hibernation`): an idle location is scaled to zero, a request or its
schedule wakes it.

Who decides what, and where it is kept (README, Hibernation):
- the session pod says it is idle (its `idle` event, mirrored into `status.idleSince` by its
  follower);
- the router asks for a wake by writing `status.wakeRequest` (a time; its Role may patch the
  status, not the spec);
- this module decides, from the resource alone (spec and status) and the time,
  and writes its decision into `status.hibernation` BEFORE the StatefulSet is scaled; the
  reconcile derives the replicas from that record. A restarted operator reads the record and
  carries on (a wake that fell due meanwhile happens at once); a crash between the record and
  the scale is repaired by the next reconcile.

Going to sleep is the StatefulSet's scale to zero: the pod's SIGTERM closes the browser and
takes the final backup. Timers (one per resource at most: its next wake, or the end of a
request wake's minimum awake time) come from the watch events; nothing polls."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from whatsapp_common.logs import get_logger
from whatsapp_common.states import Phase

from .config import with_defaults
from .kube import Unreachable
from .metrics import HIBERNATION_STEPS
from .notices import Notices
from .resource import Resource
from .status import condition, timestamp

log = get_logger(__name__)
ASLEEP, AWAKE = "Hibernating", "Awake"
RETRY_SECONDS = 5.0  # a step the API server did not take is tried again this much later


@dataclass(frozen=True)
class HibernationSpec:
    enabled: bool = False
    idle_seconds: int = 900
    wake_interval_seconds: int = 86400

    @classmethod
    def of(cls, defaults: dict[str, Any], spec: dict[str, Any]) -> HibernationSpec:
        """From a resource's spec over the operator's SESSION_DEFAULTS."""
        given = with_defaults(defaults, spec).get("hibernation") or {}
        return cls(
            enabled=bool(given.get("enabled", cls.enabled)),
            idle_seconds=int(given.get("idleSeconds", cls.idle_seconds)),
            wake_interval_seconds=int(given.get("wakeIntervalSeconds", cls.wake_interval_seconds)),
        )


def asleep(resource: Resource) -> bool:
    """The operator's recorded decision: no session pod runs until a wake."""
    return (resource.status.get("hibernation") or {}).get("state") == ASLEEP


def parse_time(value: str | None) -> float | None:
    """Epoch seconds of an RFC 3339 time (`status.timestamp`'s or `instant`'s)."""
    if not value:
        return None
    return datetime.datetime.fromisoformat(value).timestamp()


def instant(at: float) -> str:
    """RFC 3339 with microseconds: a step's `since`, which orders the steps of a resource."""
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def newer(resource: Resource, than: Resource) -> bool:
    """`resource` holds a later hibernation step than `than` (a watch event may be older than
    the step this operator has just written)."""

    def since(r: Resource) -> float:
        return parse_time((r.status.get("hibernation") or {}).get("since")) or 0.0

    return since(resource) > since(than)


@dataclass(frozen=True)
class Step:
    """`status`: fields to write now, then the StatefulSet is applied again if `rescale`;
    `at`: when to look again (epoch seconds), if nothing happens before."""

    status: dict[str, Any] | None = None
    at: float | None = None
    why: str = ""
    rescale: bool = False


def plan(resource: Resource, spec: HibernationSpec, now: float, live_idle: str | None) -> Step:
    """What hibernation wants of `resource` now: a pure function of the resource and of what
    its pod's live stream says of idleness (`live_idle`, which must confirm the status's)."""
    record = dict(resource.status.get("hibernation") or {})
    request = resource.status.get("wakeRequest")
    new_request = request is not None and request != record.get("answered")
    conflict = resource.status.get("phase") == Phase.CONFLICT
    if resource.deleting or conflict:
        return Step()
    if not spec.enabled or resource.paused:
        if asleep(resource):
            return _wake(record, now, "disabled" if not spec.enabled else "paused", None)
        return Step()
    if asleep(resource):
        if new_request:
            return _wake(record, now, "request", now + spec.idle_seconds, request)
        slept = parse_time(record.get("since")) or now
        due = slept + spec.wake_interval_seconds  # the spec's interval now, if it changed since
        if now >= due:
            return _wake(record, now, "schedule", None)
        if record.get("nextWake") != timestamp(due):
            return Step(
                {"hibernation": {**record, "nextWake": timestamp(due)}}, at=due, why="reschedule"
            )
        return Step(at=due)
    if new_request:  # asked while already awake (a schedule wake came first): stay up for it
        until = timestamp(now + spec.idle_seconds)
        extended = {**record, "awakeUntil": until, "answered": request}
        return Step({"hibernation": extended}, why="stay awake (request)")
    idle = resource.status.get("idleSince")
    if not idle or idle != live_idle or resource.status.get("phase") != Phase.READY:
        return Step()
    until = _awake_until(resource, record, spec)
    if until is not None and now < until:
        return Step(at=until)
    wake_at = now + spec.wake_interval_seconds
    return Step(
        {
            "hibernation": {
                **record,
                "state": ASLEEP,
                "since": instant(now),
                "reason": "idle",
                "nextWake": timestamp(wake_at),
                "awakeUntil": None,
            },
            "idleSince": None,
            "phase": Phase.HIBERNATING,
            "message": f"idle since {resource.status['idleSince']}; next wake {timestamp(wake_at)}",
            "conditions": _not_ready(resource, "Hibernating", "scaled to zero while idle", now),
        },
        why="hibernate",
        rescale=True,
    )


def _awake_until(resource: Resource, record: dict[str, Any], spec: HibernationSpec) -> float | None:
    """Not asleep again before this: `awakeUntil`, and, for a wake a request caused, the idle
    time counted from when the session became ready (a request retried or held until then must
    have its turn even when the wake took longer than the idle time)."""
    until = parse_time(record.get("awakeUntil"))
    if record.get("reason") != "request":
        return until
    conditions = resource.status.get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), {})
    became_ready = (
        parse_time(ready.get("lastTransitionTime")) if ready.get("status") == "True" else None
    )
    if became_ready is None:
        return until
    return max(until or 0.0, became_ready + spec.idle_seconds)


def _wake(
    record: dict[str, Any], now: float, reason: str, until: float | None, request: str | None = None
) -> Step:
    woken = {
        **record,
        "state": AWAKE,
        "since": instant(now),
        "reason": reason,
        "nextWake": None,
        "awakeUntil": None if until is None else timestamp(until),
    }
    if request is not None:
        woken["answered"] = request
    fields = {"hibernation": woken, "idleSince": None, "phase": Phase.PENDING}
    return Step({**fields, "message": f"waking: {reason}"}, why=f"wake ({reason})", rescale=True)


def _not_ready(resource: Resource, reason: str, message: str, now: float) -> list[dict[str, Any]]:
    conditions = list(resource.status.get("conditions") or [])
    return [
        *(c for c in conditions if c.get("type") != "Ready"),
        condition(conditions, "Ready", "False", reason, message, now),
    ]


# Writes `fields` into the resource's status; returns the resource as the API server has it.
WriteStatus = Callable[[Resource, dict[str, Any]], Awaitable[Resource]]
# Applies the location's objects again (the StatefulSet's replicas follow the record).
Apply = Callable[[Resource], Awaitable[None]]


class Hibernation:
    """Acts on `plan` for every resource the watch reports, and at the times it names."""

    def __init__(
        self,
        defaults: dict[str, Any],
        write_status: WriteStatus,
        apply: Apply,
        notices: Notices,
        live_idle: Callable[[str], str | None],
    ) -> None:
        """`live_idle(uid)`: `idleSince` as the pod's live stream says it (Followers)."""
        self._defaults = defaults
        self._live_idle = live_idle
        self._write_status, self._apply = write_status, apply
        self._notices = notices
        self._latest: dict[str, Resource] = {}  # by uid: the newest body the watch reported
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # By uid: the facts of the last step taken (an event older than it repeats nothing).
        self._done: dict[str, tuple[str | None, ...]] = {}

    async def seen(self, resource: Resource) -> None:
        """A watch event of `resource` (also the initial listing after a restart)."""
        if resource.deleting:
            self.forget(resource.uid)
            return
        self._latest[resource.uid] = self.freshest(resource)
        await self._look(resource.uid)

    def freshest(self, resource: Resource) -> Resource:
        """`resource`, or the later picture of it this module holds: its own last step, which
        the watch (and the cache fed by it) may not have delivered yet. The reconcile takes
        the replicas from this, so a reconcile in between never undoes a step."""
        known = self._latest.get(resource.uid)
        return known if known is not None and newer(known, resource) else resource

    def forget(self, uid: str) -> None:
        if timer := self._timers.pop(uid, None):
            timer.cancel()
        self._latest.pop(uid, None)
        self._locks.pop(uid, None)
        self._done.pop(uid, None)

    async def _look(self, uid: str) -> None:
        lock = self._locks.setdefault(uid, asyncio.Lock())
        async with lock:
            resource = self._latest.get(uid)
            if resource is None:
                return
            spec = HibernationSpec.of(self._defaults, resource.spec)
            step = plan(resource, spec, time.time(), self._live_idle(uid))
            self._arm(uid, step.at)
            if step.status is None:
                return
            record = resource.status.get("hibernation") or {}
            facts = (
                step.why,
                resource.status.get("idleSince"),
                record.get("state"),
                record.get("since"),
                resource.status.get("wakeRequest"),
            )
            if self._done.get(uid) == facts:
                return  # taken already: this event is older than our own write
            try:
                updated = await self._write_status(resource, step.status)
                self._done[uid] = facts
                self._latest[uid] = updated
                if step.rescale:
                    await self._apply(updated)
                    self._notices.info(updated, str(step.status["phase"]), step.status["message"])
            except (ApiException, Unreachable) as exc:
                HIBERNATION_STEPS.labels(step.why, "failed").inc()
                log.warning(
                    "hibernation step failed, retrying",
                    resource=resource.name,
                    step=step.why,
                    error=str(exc),
                    retry_in=RETRY_SECONDS,
                )
                self._arm(uid, time.time() + RETRY_SECONDS)
                return
            HIBERNATION_STEPS.labels(step.why, "done").inc()
            log.info(
                "hibernation", resource=resource.name, location=resource.location, step=step.why
            )

    def _arm(self, uid: str, at: float | None) -> None:
        if timer := self._timers.pop(uid, None):
            timer.cancel()
        if at is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, at - time.time())
        self._timers[uid] = loop.call_later(delay, self._fire, uid)

    def poke(self, uid: str) -> None:
        """Look at the resource again now (its pod said something of its idleness)."""
        if uid in self._latest:
            self._arm(uid, None)
            self._fire(uid)

    def _fire(self, uid: str) -> None:
        self._timers.pop(uid, None)
        task = asyncio.create_task(self._look(uid), name=f"hibernation {uid}")
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A step that raised what nobody foresaw: said, counted, and tried again."""
        if task.cancelled() or (error := task.exception()) is None:
            return
        HIBERNATION_STEPS.labels("timer", "crashed").inc()
        log.error("hibernation step crashed, retrying", error=repr(error))
        uid = task.get_name().removeprefix("hibernation ")
        if uid in self._latest:
            self._arm(uid, time.time() + RETRY_SECONDS)
