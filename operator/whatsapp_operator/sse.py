"""Reading a session pod's /events (server-sent events): id, event type and JSON data per
event; comment lines (the pod's `: heartbeat`) only prove the connection is alive."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True)
class ServerEvent:
    id: int
    type: str
    data: dict[str, Any]
    at: float  # when the pod recorded it (epoch seconds)


async def read_events(
    http: aiohttp.ClientSession,
    url: str,
    authorizations: Sequence[str],
    after: int,
    read_timeout: float,
) -> AsyncIterator[ServerEvent | None]:
    """None once connected, then the events newer than `after` (sent as Last-Event-ID).
    `authorizations`: the pod tokens, newest first; a 401 tries the next one. Raises
    TimeoutError when the pod sends nothing, not even a heartbeat, for `read_timeout` seconds
    (a half-open connection) and aiohttp.ClientError when the connection fails or ends."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=3, sock_read=read_timeout)
    for attempt, authorization in enumerate(authorizations, 1):
        headers = {
            "Last-Event-ID": str(after),
            "Accept": "text/event-stream",
            "Authorization": authorization,
        }
        async with http.get(url, headers=headers, timeout=timeout) as response:
            if response.status == 401 and attempt < len(authorizations):
                continue
            response.raise_for_status()
            async for event in _events(response):
                yield event
            raise aiohttp.ServerDisconnectedError("the pod ended its /events stream")


async def _events(response: aiohttp.ClientResponse) -> AsyncIterator[ServerEvent | None]:
    yield None
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith(":"):
            continue
        if line:
            key, _, value = line.partition(":")
            fields[key] = value.removeprefix(" ")
            continue
        if "data" in fields and "id" in fields:
            payload = json.loads(fields["data"])
            yield ServerEvent(
                int(fields["id"]),
                payload["type"],
                payload.get("data") or {},
                float(payload.get("at") or 0),
            )
        fields = {}
