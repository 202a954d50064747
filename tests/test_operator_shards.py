"""Operator shards (issue 20): with the chart's `operator.shards: 2`, every WhatsAppSession is
handled by exactly one shard, the one its label names (the router labels a resource applied
without one), and a shard's standby takes its locations over when the active replica is
killed. On the real control plane, with simulated session pods, the chart's RBAC and
peering objects rendered for two shards.

Who wrote what comes from the API server's audit log: each operator's own calls carry its
shard in their user agent."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.control_plane import ControlPlane
from tests.support.operator import (
    OPERATOR_ACCOUNT,
    OperatorProcess,
    operator_namespace,
    patch_spec,
    session_manifest,
    start_operator,
    wait_phase,
)
from tests.support.processes import wait_until
from tests.support.router import RouterProcess
from tests.support.s3 import SeaweedS3
from tests.support.simulated_pods import PodStatus, SimulatedPods, address
from whatsapp_common.sharding import SHARD_LABEL, shard_of

pytestmark = pytest.mark.slow

SHARDS = 2
VALUES = (f"operator.shards={SHARDS}",)
LOCATIONS = [f"h{i}" for i in range(6)]
IPS = {location: address(i, block=79) for i, location in enumerate(LOCATIONS)}
EXPECTED = {location: shard_of(location, SHARDS) for location in LOCATIONS}
# A location of shard-1 that appears only once that shard's active replica is dead.
LATE = next(f"late{i}" for i in itertools.count() if shard_of(f"late{i}", SHARDS) == "shard-1")
LOGGED_IN = "h7"  # created by the router on /login
WRITES = {"create", "update", "patch", "delete"}


@pytest.fixture(scope="module")
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = operator_namespace(control_plane, "shards", *VALUES)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def pods() -> Iterator[SimulatedPods]:
    server = SimulatedPods({ip: location for location, ip in IPS.items()})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def operators(
    control_plane: ControlPlane,
    namespace: str,
    s3_server: SeaweedS3,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, list[OperatorProcess]]]:
    """shard-0: one replica; shard-1: an active replica (priority 2) and its standby."""
    logs = tmp_path_factory.mktemp("shard-operators")
    s3 = {**s3_server.env(), "S3_PREFIX": f"shards-{uuid.uuid4().hex[:6]}"}
    first = start_operator(
        control_plane,
        namespace,
        {},
        s3,
        logs / "shard-0.log",
        peering="whatsapp-sessions-shard-0",
        SHARD="shard-0",
        EVENTS_READ_TIMEOUT_SECONDS="3",
    )
    running = {"shard-0": [first], "shard-1": []}
    pod_env, env = first.args
    try:
        for priority in (2, 1):
            running["shard-1"].append(
                OperatorProcess(
                    control_plane,
                    namespace,
                    pod_env,
                    {**env, "SHARD": "shard-1"},
                    logs / f"shard-1-{priority}.log",
                    priority=priority,
                    peering="whatsapp-sessions-shard-1",
                )
            )
        yield running
    finally:
        for process in itertools.chain.from_iterable(running.values()):
            process.stop()
    for process in itertools.chain.from_iterable(running.values()):
        process.stop()


@pytest.fixture(scope="module")
def router(
    control_plane: ControlPlane, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RouterProcess]:
    process = RouterProcess(
        control_plane,
        namespace,
        tmp_path_factory.mktemp("shard-router") / "router.log",
        chart_values=VALUES,
        OPERATOR_SHARDS=str(SHARDS),
    )
    yield process
    process.stop()


def resource(cluster: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "whatsappsession", name, "-n", namespace, "-o", "json").stdout
    return json.loads(out)


def shard_label(obj: dict[str, Any]) -> str | None:
    return (obj["metadata"].get("labels") or {}).get(SHARD_LABEL)


def writers(cluster: ControlPlane, namespace: str, since: int) -> dict[str, set[str]]:
    """Location -> the user agents of the operator's own writes to its objects (StatefulSet,
    Service, keys Secret, the resource's status) since the `since`-th audit event."""
    events = cluster.audit_events(f"system:serviceaccount:{namespace}:{OPERATOR_ACCOUNT}")
    by_location: dict[str, set[str]] = {}
    for event in events[since:]:
        ref, agent = event.get("objectRef") or {}, event.get("userAgent", "")
        if event["verb"] not in WRITES or not agent.startswith("whatsapp-operator/"):
            continue
        name = ref.get("name") or ""
        location = name.removeprefix("s-").removeprefix("wa-").removesuffix("-keys")
        by_location.setdefault(location, set()).add(agent)
    return by_location


def audit_mark(cluster: ControlPlane, namespace: str) -> int:
    return len(cluster.audit_events(f"system:serviceaccount:{namespace}:{OPERATOR_ACCOUNT}"))


def test_every_location_is_handled_by_the_one_shard_its_label_names(
    control_plane: ControlPlane,
    namespace: str,
    operators: dict[str, list[OperatorProcess]],
    router: RouterProcess,
    pods: SimulatedPods,
) -> None:
    assert set(EXPECTED.values()) == {"shard-0", "shard-1"}, EXPECTED
    mark = audit_mark(control_plane, namespace)
    pod_status = PodStatus(str(control_plane.admin_kubeconfig), namespace)
    for i, location in enumerate(LOCATIONS):
        pods.state(IPS[location], "ready", phone=f"1555000{i}")
        # Applied as a person would: no shard label. The router gives it one.
        manifest = session_manifest(f"s-{location}", location)
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)
    for location in LOCATIONS:
        labelled = wait_until(
            lambda location=location: shard_label(
                resource(control_plane, namespace, f"s-{location}")
            ),
            30,
            f"the shard label of {location}",
        )
        assert labelled == EXPECTED[location]
    for location in LOCATIONS:
        pod = f"wa-{location}-0"
        wait_until(lambda pod=pod: pod_status.exists(pod), 30, f"the pod {pod}")
        pod_status.running(pod, IPS[location])
    for location in LOCATIONS:
        wait_phase(control_plane, namespace, f"s-{location}", "Ready")

    # Every object of a location carries its shard's label: its shard's watches see them.
    for location in LOCATIONS:
        for kind in ("statefulset", "service", "secret", "pod"):
            name = {"secret": f"wa-{location}-keys", "pod": f"wa-{location}-0"}.get(
                kind, f"wa-{location}"
            )
            obj = json.loads(
                control_plane.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout
            )
            assert shard_label(obj) == EXPECTED[location], (kind, name)

    # A location Rails logs in through the router is created with its label.
    login = router.post("/login", {"location_identifier": LOGGED_IN, "user_id": 1})
    assert login.status_code == 200, login.text
    created = resource(control_plane, namespace, f"wa-{LOGGED_IN}")
    assert shard_label(created) == shard_of(LOGGED_IN, SHARDS)
    wait_until(
        lambda: (
            control_plane.kubectl(
                "get", "statefulset", f"wa-{LOGGED_IN}", "-n", namespace, check=False
            ).returncode
            == 0
        ),
        30,
        "the StatefulSet of the location logged in",
    )

    # Exactly one shard wrote each location's objects and status: the one its label names.
    written = writers(control_plane, namespace, mark)
    for location in [*LOCATIONS, LOGGED_IN]:
        expected = shard_of(location, SHARDS)
        assert written.get(location) == {f"whatsapp-operator/{expected}"}, written


def test_a_shards_standby_takes_its_locations_over_and_no_other_shard_does(
    control_plane: ControlPlane,
    namespace: str,
    operators: dict[str, list[OperatorProcess]],
    router: RouterProcess,
    tmp_path: Path,
) -> None:
    active, standby = operators["shard-1"]
    active.program.kill()  # -9: its peering record lapses, the standby takes over
    mark = audit_mark(control_plane, namespace)

    # A location of shard-1 changes: paused by its standby.
    moved = next(location for location in LOCATIONS if EXPECTED[location] == "shard-1")
    patch_spec(control_plane, namespace, f"s-{moved}", {"paused": True})
    wait_phase(control_plane, namespace, f"s-{moved}", "Paused")
    replicas = control_plane.kubectl(
        "get", "statefulset", f"wa-{moved}", "-n", namespace, "-o", "jsonpath={.spec.replicas}"
    ).stdout
    assert replicas == "0"

    # A new location of shard-1, applied without a label: labelled, then made by the standby.
    manifest = session_manifest(f"s-{LATE}", LATE)
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)
    wait_until(
        lambda: (
            control_plane.kubectl(
                "get", "statefulset", f"wa-{LATE}", "-n", namespace, check=False
            ).returncode
            == 0
        ),
        60,
        "the StatefulSet of the late location",
    )
    # And a location of shard-0 is still shard-0's.
    other = next(location for location in LOCATIONS if EXPECTED[location] == "shard-0")
    patch_spec(control_plane, namespace, f"s-{other}", {"paused": True})
    wait_phase(control_plane, namespace, f"s-{other}", "Paused")

    written = writers(control_plane, namespace, mark)
    assert written.get(moved) == {"whatsapp-operator/shard-1"}, written
    assert written.get(LATE) == {"whatsapp-operator/shard-1"}, written
    assert written.get(other) == {"whatsapp-operator/shard-0"}, written
    assert standby.program.alive()
