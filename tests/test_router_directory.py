"""The router's routing decision from its cache: forward, starting, down, asleep or unknown;
waking a hibernating location."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from whatsapp_common.answers import ApiError
from whatsapp_operator.manifests import labels
from whatsapp_router.directory import Directory, PodRecord, Route, SessionRecord, Verdict
from whatsapp_router.metrics import RouterMetrics
from whatsapp_router.waking import Waker


def session(location: str, **spec: Any) -> SessionRecord:
    phase = spec.pop("phase", None)
    return SessionRecord.from_object(
        {
            "metadata": {"name": f"shop-{location}"},
            "spec": {"locationId": location, **spec},
            "status": {"phase": phase} if phase else {},
        }
    )


def pod(
    location: str, name: str, ip: str | None = "127.0.0.9", ready: bool = True, **meta: Any
) -> PodRecord:
    return PodRecord.from_object(
        {
            "metadata": {"name": name, "labels": labels(location), **meta},
            "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 9000}]}]},
            "status": {
                "phase": "Running" if ip else "Pending",
                "podIP": ip,
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        },
        8093,
    )


def test_a_ready_pod_is_forwarded_to_on_its_named_port() -> None:
    directory = Directory()
    directory.replace("sessions", [session("13")])
    directory.replace("pods", [pod("13", "wa-13-0")])
    route = directory.route("13")
    assert route.verdict is Verdict.FORWARD
    assert route.pod is not None and route.pod.address == ("127.0.0.9", 9000)
    assert directory.synced == {"sessions", "pods"}


def test_unknown_starting_down() -> None:
    directory = Directory()
    assert directory.route("13").verdict is Verdict.UNKNOWN
    directory.apply("sessions", "ADDED", session("13"))
    assert directory.route("13").verdict is Verdict.STARTING
    directory.apply("pods", "ADDED", pod("13", "wa-13-0", ip=None))
    assert directory.route("13").verdict is Verdict.STARTING
    directory.apply("pods", "MODIFIED", pod("13", "wa-13-0", ready=False))
    assert directory.route("13").state == "Pending"
    terminating = pod("13", "wa-13-0", deletionTimestamp="2026-01-01T00:00:00Z")
    directory.apply("pods", "MODIFIED", terminating)
    assert directory.route("13").verdict is Verdict.DOWN
    directory.apply("pods", "DELETED", terminating)
    assert directory.route("13").verdict is Verdict.STARTING
    directory.apply("sessions", "MODIFIED", session("13", paused=True))
    route = directory.route("13")
    assert (route.verdict, route.state) == (Verdict.DOWN, "Paused")
    directory.apply("sessions", "DELETED", session("13"))
    assert directory.route("13").verdict is Verdict.UNKNOWN


def test_a_moved_pod_is_followed_and_locations_stay_apart() -> None:
    directory = Directory()
    directory.replace("sessions", [session("13"), session("14")])
    directory.replace(
        "pods", [pod("13", "wa-13-0", "127.0.0.2"), pod("14", "wa-14-0", "127.0.0.3")]
    )
    directory.apply("pods", "MODIFIED", pod("13", "wa-13-0", "127.0.0.7"))
    assert directory.route("13").pod.ip == "127.0.0.7"  # type: ignore[union-attr]
    assert directory.route("14").pod.ip == "127.0.0.3"  # type: ignore[union-attr]
    assert directory.route("Shop 13").verdict is Verdict.UNKNOWN


def named(name: str, location: str, created: str, phase: str | None = None) -> SessionRecord:
    return SessionRecord.from_object(
        {
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"locationId": location},
            "status": {"phase": phase} if phase else {},
        }
    )


def test_a_duplicate_resource_of_a_location_is_never_the_one_routed_to() -> None:
    directory = Directory()
    owner = named("shop", "42", "2026-01-01T00:00:00Z", "Ready")
    directory.replace("sessions", [owner])
    # The copy arrives before the operator marks it; the older resource stays the location's.
    directory.apply("sessions", "ADDED", named("shop-copy", "42", "2026-01-02T00:00:00Z"))
    assert directory.session("42") == owner
    # Marked Conflict, it stays ignored even when it would sort first by age.
    older_copy = named("aaa-copy", "42", "2025-12-31T00:00:00Z", "Conflict")
    directory.apply("sessions", "ADDED", older_copy)
    assert directory.session("42") == owner
    # The owner deleted: the next resource is the location's; the last one gone, none is.
    directory.apply("sessions", "DELETED", owner)
    assert directory.session("42").name == "shop-copy"
    directory.apply("sessions", "DELETED", named("shop-copy", "42", ""))
    assert directory.session("42") == older_copy
    directory.apply("sessions", "DELETED", older_copy)
    assert directory.session("42") is None and directory.route("42").verdict is Verdict.UNKNOWN


def hibernating(location: str, since: str = "2026-12-04T10:00:00Z", **status: Any) -> SessionRecord:
    return SessionRecord.from_object(
        {
            "metadata": {"name": f"shop-{location}"},
            "spec": {"locationId": location},
            "status": {
                "phase": "Hibernating",
                "hibernation": {"state": "Hibernating", "since": since},
                **status,
            },
        }
    )


class Wakes:
    """The backend's side of a wake: what the router asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def start(self, directory: Directory, metrics: RouterMetrics) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def create_session(self, location: str) -> None:
        raise AssertionError(location)

    async def wake_session(self, session: SessionRecord) -> None:
        self.asked.append(session.name)


def test_a_hibernating_location_is_asleep_even_while_its_old_pod_still_answers() -> None:
    directory = Directory()
    directory.replace("sessions", [hibernating("13")])
    directory.replace("pods", [pod("13", "wa-13-0")])
    route = directory.route("13")
    assert route.verdict is Verdict.ASLEEP and route.state == "Hibernating"
    assert route.session is not None and route.session.since is not None


def test_a_waking_request_is_held_until_ready_and_asks_once_per_sleep() -> None:
    directory = Directory()
    directory.replace("sessions", [hibernating("13")])
    directory.replace("pods", [])
    backend = Wakes()
    waker = Waker(backend, directory, RouterMetrics(directory), 5.0, 7)

    async def scenario() -> Route:
        held = asyncio.create_task(waker.until_awake("13", directory.route("13")))
        second = asyncio.create_task(waker.until_awake("13", directory.route("13")))
        await asyncio.sleep(0.05)
        woken = {"hibernation": {"state": "Awake", "since": "2026-12-04T11:00:00Z"}}
        directory.apply("sessions", "MODIFIED", session_with("13", "Pending", woken))
        directory.apply("pods", "ADDED", pod("13", "wa-13-0"))  # serving, not ready yet
        await asyncio.sleep(0.05)
        assert not held.done()
        directory.apply("sessions", "MODIFIED", session_with("13", "Ready", woken))
        await second
        return await held

    route = asyncio.run(scenario())
    assert route.verdict is Verdict.FORWARD and route.pod is not None
    assert backend.asked == ["shop-13"]


def test_without_a_hold_a_waking_request_gets_being_initialized_with_retry_after() -> None:
    directory = Directory()
    directory.replace("sessions", [hibernating("13")])
    directory.replace("pods", [])
    backend = Wakes()
    waker = Waker(backend, directory, RouterMetrics(directory), 0.0, 7)
    with pytest.raises(ApiError) as raised:
        asyncio.run(waker.until_awake("13", directory.route("13")))
    assert raised.value.status == 400 and "being initialized" in raised.value.body["message"]
    assert raised.value.body["state"] == "Hibernating"
    assert raised.value.headers["Retry-After"] == "7"
    assert backend.asked == ["shop-13"]


def session_with(location: str, phase: str, status: dict[str, Any]) -> SessionRecord:
    return SessionRecord.from_object(
        {
            "metadata": {"name": f"shop-{location}"},
            "spec": {"locationId": location},
            "status": {"phase": phase, **status},
        }
    )
