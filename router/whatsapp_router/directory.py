"""The in-memory picture of the namespace: WhatsAppSessions by location, session pods by
location label. Fed by the watch threads (through the event loop), read on every request
without any API call.

`route(location)` is the one place that decides where a request goes."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from whatsapp_common.crd import LOCATION_LABEL
from whatsapp_common.naming import location_label
from whatsapp_common.states import NO_SESSION, Phase

if TYPE_CHECKING:
    from .metrics import RouterMetrics

Json = dict[str, Any]
label_of = lru_cache(maxsize=65536)(location_label)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What the router needs of one WhatsAppSession."""

    name: str
    location: str
    paused: bool
    phase: str
    phone: str
    created: str = ""

    @classmethod
    def from_object(cls, obj: Json) -> SessionRecord:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        return cls(
            name=obj["metadata"]["name"],
            location=str(spec.get("locationId", "")),
            paused=bool(spec.get("paused", False)),
            phase=status.get("phase") or Phase.PENDING,
            phone=status.get("phone") or "",
            created=obj["metadata"].get("creationTimestamp") or "",
        )

    @property
    def rank(self) -> tuple[bool, str, str]:
        """Of a location's resources the one routed to sorts first: not in Conflict (the
        operator found the location owned by another), then the oldest."""
        return (self.phase == Phase.CONFLICT, self.created, self.name)


@dataclass(frozen=True, slots=True)
class PodRecord:
    """One session pod: where it listens and whether it may be called."""

    name: str
    label: str
    ip: str | None
    port: int
    ready: bool
    terminating: bool
    failed: bool

    @classmethod
    def from_object(cls, obj: Json, default_port: int) -> PodRecord:
        meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        ports = [p for c in spec.get("containers", []) for p in c.get("ports", [])]
        port = next((p["containerPort"] for p in ports if p.get("name") == "http"), default_port)
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        return cls(
            name=meta["name"],
            label=(meta.get("labels") or {}).get(LOCATION_LABEL, ""),
            ip=status.get("podIP") or None,
            port=port,
            ready=conditions.get("Ready") == "True" and status.get("phase") == "Running",
            terminating=meta.get("deletionTimestamp") is not None,
            failed=status.get("phase") in ("Failed", "Succeeded"),
        )

    @property
    def address(self) -> tuple[str, int]:
        assert self.ip is not None, "only a pod with an address is routed to"
        return self.ip, self.port


class Verdict(enum.Enum):
    FORWARD = "forward"  # a ready pod: call it
    UNKNOWN = "unknown"  # no WhatsAppSession for this location
    STARTING = "starting"  # being created or started: come back later
    DOWN = "down"  # paused, failed or shutting down: no pod will answer now


@dataclass(frozen=True, slots=True)
class Route:
    verdict: Verdict
    session: SessionRecord | None = None
    pod: PodRecord | None = None

    @property
    def state(self) -> str:
        """The best-known phase, for answers that are not the pod's own."""
        if self.session is not None:
            return Phase.PAUSED if self.session.paused else self.session.phase
        return NO_SESSION


class Directory:
    """Only mutated on the event loop (the watch threads hand events over to it)."""

    def __init__(self) -> None:
        self.sessions: dict[str, SessionRecord] = {}  # by object name
        self._by_location: dict[str, str] = {}  # location -> the name routed to
        self._names: dict[str, set[str]] = {}  # location -> every resource name for it
        self._pods: dict[str, PodRecord] = {}  # by pod name
        self._by_label: dict[str, dict[str, PodRecord]] = {}
        self.synced: set[str] = set()  # kinds listed since their watch last broke down
        self.watch_breakdowns: dict[str, int] = {}  # kind -> unexpected failures of its watch

    def replace(self, kind: str, records: list[Any]) -> None:
        """A full listing (start, or after the watch lost its place)."""
        if kind == "sessions":
            self.sessions, self._by_location, self._names = {}, {}, {}
        else:
            self._pods, self._by_label = {}, {}
        for record in records:
            self.apply(kind, "ADDED", record)
        self.synced.add(kind)

    def lost(self, kind: str) -> None:
        """The watch of `kind` failed in a way nobody foresaw: what the cache holds of it may
        be wrong until it is listed again, so the router is not ready (/readyz 503)."""
        self.synced.discard(kind)
        self.watch_breakdowns[kind] = self.watch_breakdowns.get(kind, 0) + 1

    def apply(self, kind: str, event: str, record: Any) -> None:
        if kind == "sessions":
            self._apply_session(event, record)
        else:
            self._apply_pod(event, record)

    def _apply_session(self, event: str, record: SessionRecord) -> None:
        """A location with several resources (a mistaken duplicate) is routed to the one the
        operator reconciles, never to one it marked Conflict."""
        old = self.sessions.pop(record.name, None)
        if old is not None:
            self._names[old.location].discard(old.name)
            self._choose(old.location)
        if event != "DELETED":
            self.sessions[record.name] = record
            self._names.setdefault(record.location, set()).add(record.name)
            self._choose(record.location)

    def _choose(self, location: str) -> None:
        names = self._names.get(location)
        if not names:
            self._names.pop(location, None)
            self._by_location.pop(location, None)
            return
        self._by_location[location] = min(names, key=lambda n: self.sessions[n].rank)

    def _apply_pod(self, event: str, record: PodRecord) -> None:
        old = self._pods.pop(record.name, None)
        if old is not None:
            group = self._by_label.get(old.label, {})
            group.pop(old.name, None)
            if not group:
                self._by_label.pop(old.label, None)
        if event != "DELETED":
            self._pods[record.name] = record
            self._by_label.setdefault(record.label, {})[record.name] = record

    def session(self, location: str) -> SessionRecord | None:
        name = self._by_location.get(location)
        return None if name is None else self.sessions[name]

    def route(self, location: str) -> Route:
        session = self.session(location)
        pods = list(self._by_label.get(label_of(location), {}).values())
        live = [p for p in pods if not p.terminating and not p.failed]
        ready = next((p for p in live if p.ready and p.ip), None)
        if ready is not None:
            # A pod seen before its WhatsAppSession (the two watches race) is still routable.
            return Route(Verdict.FORWARD, session, ready)
        if session is None:
            return Route(Verdict.UNKNOWN)
        if session.paused or session.phase == Phase.FAILED or (pods and not live):
            return Route(Verdict.DOWN, session, pods[0] if pods else None)
        return Route(Verdict.STARTING, session, live[0] if live else None)


class Backend(Protocol):
    """Where the session pods run: it keeps the Directory current and creates a location's
    session on the first /login (Kubernetes in `app.py`, processes in `local.py`)."""

    async def start(self, directory: Directory, metrics: RouterMetrics) -> None: ...

    async def stop(self) -> None: ...

    async def create_session(self, location: str) -> None: ...
