"""Kubernetes Events about WhatsAppSessions, at most `per_minute` per resource: a session
that flaps cannot flood the namespace. What is held back is counted (a metric) and said in
the next Event that goes out."""

from __future__ import annotations

import time
from collections import deque

import kopf

from .metrics import EVENTS_SUPPRESSED
from .resource import Resource

WINDOW = 60.0


class Notices:
    def __init__(self, per_minute: int) -> None:
        self._per_minute = per_minute
        self._sent: dict[str, deque[float]] = {}  # by resource uid: times of recent Events
        self._held: dict[str, int] = {}

    def info(self, resource: Resource, reason: str, message: str) -> None:
        self._post(resource, "Normal", reason, message)

    def warn(self, resource: Resource, reason: str, message: str) -> None:
        self._post(resource, "Warning", reason, message)

    def forget(self, resource: Resource) -> None:
        self._sent.pop(resource.uid, None)
        self._held.pop(resource.uid, None)

    def _post(self, resource: Resource, type_: str, reason: str, message: str) -> None:
        now = time.monotonic()
        sent = self._sent.setdefault(resource.uid, deque())
        while sent and sent[0] < now - WINDOW:
            sent.popleft()
        if len(sent) >= self._per_minute:
            self._held[resource.uid] = self._held.get(resource.uid, 0) + 1
            EVENTS_SUPPRESSED.inc()
            return
        sent.append(now)
        if held := self._held.pop(resource.uid, 0):
            message = f"{message} ({held} earlier Events held back: over {self._per_minute}/min)"
        # kopf posts it from its own queue (async, batched), never blocking the caller.
        kopf.event(resource.body(), type=type_, reason=reason, message=message)
