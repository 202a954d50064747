"""The operator learns of pods from its watches only (issue 20), and its status mirror
survives broken streams (issue 13): on the real control plane, with simulated session
pods (Pod objects made Running by the test, one /events server for all of them).

The API server's audit log counts every request the operator's ServiceAccount makes."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.control_plane import ControlPlane
from tests.support.operator import (
    OPERATOR_ACCOUNT,
    OperatorProcess,
    get_session,
    operator_namespace,
    session_manifest,
    start_operator,
    wait_phase,
)
from tests.support.processes import free_port, wait_until
from tests.support.s3 import SeaweedS3
from tests.support.simulated_pods import PodStatus, SimulatedPods, address

LOCATIONS = [f"w{i}" for i in range(5)]
IPS = {location: address(i, block=78) for i, location in enumerate(LOCATIONS)}
READ_TIMEOUT = 3  # the operator's /events read timeout here (heartbeats every second)
EVENTS_PER_MINUTE = 3
NOBODY = address(249, block=78)  # an address where nothing listens


@pytest.fixture(scope="module")
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = operator_namespace(control_plane, "watch")
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def pods() -> Iterator[SimulatedPods]:
    server = SimulatedPods({ip: location for location, ip in IPS.items()})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3_prefix() -> str:
    return f"watch-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def metrics_url() -> str:
    return f"http://127.0.0.1:{free_port()}/metrics"


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane,
    namespace: str,
    s3_server: SeaweedS3,
    s3_prefix: str,
    metrics_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    process = start_operator(
        control_plane,
        namespace,
        {},
        {**s3_server.env(), "S3_PREFIX": s3_prefix},
        tmp_path_factory.mktemp("operator") / "operator.log",
        EVENTS_READ_TIMEOUT_SECONDS=str(READ_TIMEOUT),
        EVENTS_PER_MINUTE=str(EVENTS_PER_MINUTE),
        METRICS_PORT=metrics_url.rsplit(":", 1)[1].split("/")[0],
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def pod_status(control_plane: ControlPlane, namespace: str) -> PodStatus:
    return PodStatus(str(control_plane.admin_kubeconfig), namespace)


class Audit:
    """The operator's requests as the API server's audit log records them."""

    def __init__(self, cluster: ControlPlane, namespace: str) -> None:
        self._cluster = cluster
        self._user = f"system:serviceaccount:{namespace}:{OPERATOR_ACCOUNT}"
        self._mark = 0

    def mark(self) -> None:
        self._mark = len(self._cluster.audit_events(self._user))

    def since_mark(self) -> list[tuple[str, str, str]]:
        """(verb, resource, subresource) of each request since mark()."""
        return [
            (e["verb"], e["objectRef"].get("resource", ""), e["objectRef"].get("subresource", ""))
            for e in self._cluster.audit_events(self._user)[self._mark :]
        ]


def pod_reads(requests: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [r for r in requests if r[1] == "pods" and r[0] in ("get", "list")]


def status_patches(requests: list[tuple[str, str, str]]) -> int:
    return sum(1 for r in requests if r[1] == "whatsappsessions" and r[2] == "status")


def test_pods_are_learned_from_the_watch_and_nothing_is_polled(
    control_plane: ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    pods: SimulatedPods,
    pod_status: PodStatus,
) -> None:
    audit = Audit(control_plane, namespace)
    for location, ip in IPS.items():
        pods.state(ip, "qr_required")
        control_plane.kubectl(
            "apply", "-n", namespace, "-f", "-", stdin=session_manifest(f"s-{location}", location)
        )
    # The StatefulSet controller makes the pods; there is no node, so they stay Pending.
    for location in LOCATIONS:
        wait_until(lambda location=location: pod_status.exists(f"wa-{location}-0"), 30, "the pods")
    *running, last = LOCATIONS
    for location in running:
        pod_status.running(f"wa-{location}-0", IPS[location])
    for location in running:
        wait_phase(control_plane, namespace, f"s-{location}", "QRRequired")
    assert all(pods.open_streams(IPS[location]) == 1 for location in running)
    assert not pods.pods[IPS[last]].connects  # its pod is not running: nobody follows it

    # Quiet: longer than the old polling's longest wait (10 s). Not one pod read, and no
    # request beyond the peering heartbeats (watches are not audited).
    audit.mark()
    time.sleep(12)
    quiet = audit.since_mark()
    assert pod_reads(quiet) == []
    assert {r[1] for r in quiet} <= {"kopfpeerings"}, quiet

    # The last pod becomes Running: its follower starts from the watch event alone.
    audit.mark()
    started = time.time()
    pod_status.running(f"wa-{last}-0", IPS[last])
    wait_until(lambda: pods.pods[IPS[last]].connects, 10, "the follower to connect")
    print(
        f"pod Running -> follower connected: {pods.pods[IPS[last]].connects[0][0] - started:.3f} s"
    )
    wait_phase(control_plane, namespace, f"s-{last}", "QRRequired")
    assert pod_reads(audit.since_mark()) == []
    # Each stream carried its own location's pod token (the pods refuse any other).
    assert [p.unauthorized for p in pods.pods.values()] == [0] * len(IPS)

    # A change is one status patch; the same state again is none.
    first = IPS[LOCATIONS[0]]
    audit.mark()
    pods.state(first, "ready", phone="15550001")
    wait_phase(control_plane, namespace, f"s-{LOCATIONS[0]}", "Ready")
    pods.state(first, "ready", phone="15550001")
    wait_until(lambda: len(pods.pods[first].events) == 3, 5, "the repeated event")
    time.sleep(1)
    assert status_patches(audit.since_mark()) == 1

    # The pod stops running: its follower stops, and the status says so.
    second = LOCATIONS[1]
    pod_status.pending(f"wa-{second}-0")
    wait_until(lambda: pods.open_streams(IPS[second]) == 0, 10, "the follower to stop")
    pending = wait_phase(control_plane, namespace, f"s-{second}", "Pending")
    ready = next(c for c in pending["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "PodNotRunning"


def test_a_silent_stream_is_resumed_after_its_last_event_and_each_event_is_applied_once(
    control_plane: ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    pods: SimulatedPods,
    pod_status: PodStatus,
    tmp_path: Path,
) -> None:
    location = LOCATIONS[2]
    ip, name = IPS[location], f"s-{location}"
    pod_status.running(f"wa-{location}-0", ip)
    pods.state(ip, "authenticating")
    wait_phase(control_plane, namespace, name, "Authenticating")
    connects = len(pods.pods[ip].connects)
    last_id = len(pods.pods[ip].events)

    # Half-open: the connection stays, nothing arrives (no heartbeat, no FIN).
    audit = Audit(control_plane, namespace)
    audit.mark()
    pods.set_silent(ip, True)
    wait_until(lambda: len(pods.pods[ip].connects) > connects, READ_TIMEOUT * 5, "a reconnect")
    pods.set_silent(ip, False)
    assert pods.pods[ip].connects[connects][1] == last_id  # resumed with Last-Event-ID
    assert status_patches(audit.since_mark()) == 0  # nothing replayed, nothing re-applied
    assert operator.program.log_path.read_text().count('"kind": "timeout"') >= 1

    # Unreachable (new streams refused): the Ready condition becomes Unknown; back: known.
    pods.set_refusing(ip, True)
    pods.cut(ip)
    unknown = wait_until(
        lambda: next(
            (
                c
                for c in get_session(control_plane, namespace, name)["status"]["conditions"]
                if c["type"] == "Ready" and c["status"] == "Unknown"
            ),
            None,
        ),
        30,
        "Ready Unknown",
    )
    assert unknown["reason"] == "EventsUnreachable"
    pods.set_refusing(ip, False)
    wait_until(
        lambda: (
            next(
                c["status"]
                for c in get_session(control_plane, namespace, name)["status"]["conditions"]
                if c["type"] == "Ready"
            )
            == "False"
        ),
        30,
        "Ready known again",
    )
    pods.state(ip, "ready", phone="15550002")
    assert wait_phase(control_plane, namespace, name, "Ready")["status"]["phone"] == "15550002"


def test_a_flapping_session_posts_a_bounded_number_of_events(
    control_plane: ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    pods: SimulatedPods,
    pod_status: PodStatus,
    metrics_url: str,
) -> None:
    location = LOCATIONS[3]
    ip, name = IPS[location], f"s-{location}"
    pod_status.running(f"wa-{location}-0", ip)
    wait_until(lambda: pods.open_streams(ip) == 1, 10, "the follower")
    for flap in range(12):
        pods.state(ip, "disconnected" if flap % 2 else "ready", phone="15550003")
        time.sleep(0.2)  # apart: each one is its own transition and patch
    pods.state(ip, "ready", phone="15550003")
    wait_phase(control_plane, namespace, name, "Ready")
    out = control_plane.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.name={name}",
        "-o",
        "json",
    ).stdout
    transitions = [e for e in json.loads(out)["items"] if e["reason"] in ("Ready", "Disconnected")]
    assert 1 <= sum(e.get("count", 1) for e in transitions) <= EVENTS_PER_MINUTE
    suppressed = wait_until(
        lambda: next(
            (
                float(line.split()[-1])
                for line in requests.get(metrics_url, timeout=5).text.splitlines()
                if line.startswith("wa_operator_events_suppressed_total ")
            ),
            None,
        ),
        10,
        "the metric",
    )
    assert suppressed >= 12 + 1 - EVENTS_PER_MINUTE


def test_a_refused_logout_still_deletes_the_backups(
    control_plane: ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    pod_status: PodStatus,
    s3_server: SeaweedS3,
    s3_prefix: str,
) -> None:
    for key in ("manifests/1.json", "archives/1.tar.zst"):
        s3_server.client().put_object(
            Bucket=s3_server.bucket, Key=f"{s3_prefix}/gone/{key}", Body=b"{}"
        )
    control_plane.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=session_manifest("gone", "gone", deletionPolicy="Delete"),
    )
    wait_until(lambda: pod_status.exists("wa-gone-0"), 30, "the pod")
    pod_status.running("wa-gone-0", NOBODY)  # Running, but nothing answers there
    wait_until(
        lambda: any(
            c["type"] == "Ready" and c["status"] == "Unknown"
            for c in get_session(control_plane, namespace, "gone")
            .get("status", {})
            .get("conditions", [])
        ),
        30,
        "the operator to know the pod (and fail to reach it)",
    )
    control_plane.kubectl("delete", "whatsappsession", "gone", "-n", namespace)
    assert s3_server.keys(f"{s3_prefix}/gone/") == []
    assert "logout failed" in operator.program.log_path.read_text()
