"""The resource's status from its session pod's events (pure functions; followers.py
applies them)."""

from __future__ import annotations

import time
from typing import Any

PHASES = {
    "starting": "Starting",
    "qr_required": "QRRequired",
    "authenticating": "Authenticating",
    "syncing": "Syncing",
    "ready": "Ready",
    "disconnected": "Disconnected",
    "logged_out": "LoggedOut",
    "failed": "Failed",
}
AUTHENTICATED = {"authenticating", "syncing", "ready"}
WARNINGS = ("backup_fallback", "backup_failed", "storage_unavailable")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def condition(
    previous: list[dict[str, Any]], type_: str, true: bool, reason: str, message: str = ""
) -> dict[str, Any]:
    """A condition that keeps its lastTransitionTime while its status does not change."""
    status = "True" if true else "False"
    old = next((c for c in previous if c.get("type") == type_), None)
    changed = old is None or old.get("status") != status
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now() if changed else old["lastTransitionTime"],
    }


def state_status(data: dict[str, Any], conditions: list[dict[str, Any]]) -> dict[str, Any]:
    state = data["state"]
    reason = PHASES[state]
    return {
        "phase": PHASES[state],
        "phone": data.get("phone") or "",
        "message": data.get("reason") or "",
        "conditions": [
            condition(conditions, "Ready", state == "ready", reason, data.get("reason") or ""),
            condition(conditions, "Authenticated", state in AUTHENTICATED, reason),
            *(c for c in conditions if c.get("type") == "BackedUp"),
        ],
    }


def backup_status(data: dict[str, Any], conditions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "lastBackup": {
            "time": data.get("created") or now(),
            "version": data["version"],
            "size": data.get("size", 0),
        },
        "conditions": [
            *(c for c in conditions if c.get("type") != "BackedUp"),
            condition(conditions, "BackedUp", True, "BackupSaved", f"version {data['version']}"),
        ],
    }


def pod_gone_status(conditions: list[dict[str, Any]], reason: str) -> dict[str, Any]:
    """No session pod runs (deleted, evicted, not started yet): nothing is Ready."""
    return {
        "phase": "Pending",
        "message": reason,
        "conditions": [
            *(c for c in conditions if c.get("type") != "Ready"),
            condition(conditions, "Ready", False, "PodNotRunning", reason),
        ],
    }


def unreachable_status(conditions: list[dict[str, Any]], reason: str) -> dict[str, Any]:
    """The pod runs but its /events cannot be read: its state is not known."""
    old = next((c for c in conditions if c.get("type") == "Ready"), None)
    ready = {
        "type": "Ready",
        "status": "Unknown",
        "reason": "EventsUnreachable",
        "message": reason,
        "lastTransitionTime": old["lastTransitionTime"]
        if old and old.get("status") == "Unknown"
        else now(),
    }
    return {
        "message": reason,
        "conditions": [*(c for c in conditions if c.get("type") != "Ready"), ready],
    }
