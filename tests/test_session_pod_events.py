"""The session pod's /events stream: heartbeats while nothing happens, resume by
Last-Event-ID (what the operator's status mirror relies on)."""

from __future__ import annotations

from collections.abc import Callable

import requests

from tests.support.session_pods import SessionPod


def stream_lines(pod: SessionPod, headers: dict[str, str], **params: str) -> list[str]:
    """The stream's lines up to and including its second heartbeat."""
    lines: list[str] = []
    with requests.get(
        f"{pod.url}/events",
        params=params,
        headers={**pod.auth, **headers},
        stream=True,
        timeout=20,
    ) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        for line in response.iter_lines(decode_unicode=True):
            lines.append(line)
            if lines.count(": heartbeat") == 2:
                return lines
    raise AssertionError(f"the stream ended: {lines}")


def test_a_quiet_stream_sends_heartbeats_and_resumes_after_the_last_event_id(
    start_pod: Callable[..., SessionPod],
) -> None:
    pod = start_pod("61")
    pod.events.wait_for("qr")
    first = stream_lines(pod, {}, heartbeat="1")
    ids = [int(line[4:]) for line in first if line.startswith("id: ")]
    assert ids and ids == sorted(ids)
    # Resumed after the last id: only heartbeats (nothing happened since).
    again = stream_lines(pod, {"Last-Event-ID": str(ids[-1])}, heartbeat="1")
    assert not [line for line in again if line.startswith("id: ")]
    # Resumed from the middle: exactly the later events, none twice.
    middle = stream_lines(pod, {"Last-Event-ID": str(ids[0])}, heartbeat="1")
    assert [int(line[4:]) for line in middle if line.startswith("id: ")] == ids[1:]


def test_a_stream_of_some_types_starts_where_status_says(
    start_pod: Callable[..., SessionPod],
) -> None:
    """What the router's link page follows: `types` keeps only those events, and /status's
    `last_event_id` is where a stream started after it goes on."""
    pod = start_pod("62")
    pod.events.wait_for("qr")
    every = stream_lines(pod, {}, heartbeat="1")
    kinds = {line[7:] for line in every if line.startswith("event: ")}
    assert {"qr", "state"} <= kinds
    only_qr = stream_lines(pod, {}, heartbeat="1", types="qr")
    assert {line[7:] for line in only_qr if line.startswith("event: ")} == {"qr"}
    last = pod.status()["last_event_id"]
    ids = [int(line[4:]) for line in every if line.startswith("id: ")]
    assert last >= ids[-1]  # a QR may have rotated since
    after = stream_lines(pod, {"Last-Event-ID": str(last)}, heartbeat="1", types="qr,state")
    assert all(int(line[4:]) > last for line in after if line.startswith("id: "))
    unknown = pod.get("/events", types="qr,nonsense")
    assert unknown.status_code == 400 and "nonsense" in unknown.json()["message"]
