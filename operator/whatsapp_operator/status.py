"""The resource's status from its session pod's events (pure functions; followers.py
applies them)."""

from __future__ import annotations

import time
from typing import Any

from whatsapp_common.event_types import EventType
from whatsapp_common.states import AUTHENTICATED, PHASE_OF_STATE, Phase, SessionState

WARNINGS = (EventType.BACKUP_FALLBACK, EventType.BACKUP_FAILED, EventType.STORAGE_UNAVAILABLE)


def timestamp(at: float | None = None) -> str:
    """RFC 3339 of `at` (epoch seconds; default now)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if at is None else at))


def condition(
    previous: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str = "",
    at: float | None = None,
) -> dict[str, Any]:
    """A condition that keeps its lastTransitionTime while its status does not change; a
    change is dated `at` (the event's own time, so a replayed history dates it the same)."""
    old = next((c for c in previous if c.get("type") == type_), None)
    changed = old is None or old.get("status") != status
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": timestamp(at) if changed else old["lastTransitionTime"],
    }


def truth(value: bool) -> str:
    return "True" if value else "False"


def state_status(
    data: dict[str, Any], conditions: list[dict[str, Any]], at: float
) -> dict[str, Any]:
    state = SessionState(data["state"])
    phase, message = PHASE_OF_STATE[state], data.get("reason") or ""
    return {
        "phase": phase,
        "phone": data.get("phone") or "",
        "message": message,
        "conditions": [
            condition(conditions, "Ready", truth(state is SessionState.READY), phase, message, at),
            condition(conditions, "Authenticated", truth(state in AUTHENTICATED), phase, "", at),
            *(c for c in conditions if c.get("type") == "BackedUp"),
        ],
    }


def backup_status(
    data: dict[str, Any], conditions: list[dict[str, Any]], at: float
) -> dict[str, Any]:
    version = data["version"]
    return {
        "lastBackup": {
            "time": data.get("created") or timestamp(at),
            "version": version,
            "size": data.get("size", 0),
        },
        "conditions": [
            *(c for c in conditions if c.get("type") != "BackedUp"),
            condition(conditions, "BackedUp", "True", "BackupSaved", f"version {version}", at),
        ],
    }


def idle_status(data: dict[str, Any]) -> dict[str, Any]:
    """The pod's `idle` event: since when it has had nothing to do (None: busy again)."""
    return {"idleSince": timestamp(data["since"]) if data.get("idle") else None}


def pod_gone_status(conditions: list[dict[str, Any]], reason: str) -> dict[str, Any]:
    """No session pod runs (deleted, evicted, not started yet): nothing is Ready."""
    return {
        "phase": Phase.PENDING,
        "message": reason,
        "conditions": [
            *(c for c in conditions if c.get("type") != "Ready"),
            condition(conditions, "Ready", "False", "PodNotRunning", reason),
        ],
    }


def unreachable_status(conditions: list[dict[str, Any]], reason: str) -> dict[str, Any]:
    """The pod runs but its /events cannot be read: its state is not known."""
    return {
        "message": reason,
        "conditions": [
            *(c for c in conditions if c.get("type") != "Ready"),
            condition(conditions, "Ready", "Unknown", "EventsUnreachable", reason),
        ],
    }
