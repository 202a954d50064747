"""Live status: follows the session pod's /events stream and mirrors it into the resource.

Each state change patches `status` (phase, phone, message, conditions) within moments and
posts a Kubernetes Event; each backup updates `status.lastBackup`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kopf

from .kube import Kube

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
MIN_WAIT, MAX_WAIT = 0.5, 10.0  # seconds between looks for a pod that is not there


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


async def session_events(url: str) -> AsyncIterator[dict[str, Any]]:
    """The pod's server-sent events, from its retained history on."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=3, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as response:
        response.raise_for_status()
        async for line in response.content:
            if line.startswith(b"data: "):
                yield json.loads(line[6:])


async def follow(
    kube: Kube, body: Any, namespace: str, name: str, pod: str, port: int, stopped: Any
) -> None:
    """Runs for the resource's lifetime (a kopf daemon); reconnects when the pod changes.

    Conditions are computed from what this follower last wrote (the watched body lags)."""
    conditions: list[dict[str, Any]] = list(body.get("status", {}).get("conditions", []))
    last_phase = body.get("status", {}).get("phase")
    idle = MIN_WAIT
    while not stopped:
        address = await asyncio.to_thread(kube.pod_address, namespace, pod)
        if address is None:
            # No pod yet (or paused): look again, less often the longer it stays away.
            await stopped.wait(idle)
            idle = min(idle * 2, MAX_WAIT)
            continue
        idle = MIN_WAIT
        try:
            async for event in session_events(f"http://{address}:{port}/events"):
                if event["type"] == "state":
                    status = state_status(event["data"], conditions)
                    if status["phase"] != last_phase:
                        kopf.info(
                            body,
                            reason=status["phase"],
                            message=f"{last_phase or 'Pending'} -> {status['phase']}: "
                            f"{status['message']}",
                        )
                        last_phase = status["phase"]
                elif event["type"] == "remote_session_saved":
                    status = backup_status(event["data"], conditions)
                elif event["type"] in ("backup_fallback", "backup_failed", "storage_unavailable"):
                    kopf.warn(body, reason=event["type"], message=json.dumps(event["data"]))
                    continue
                else:
                    continue
                await asyncio.to_thread(kube.patch_status, namespace, name, status)
                conditions = status["conditions"]
        except (aiohttp.ClientError, TimeoutError, ConnectionError):
            await stopped.wait(MIN_WAIT)
