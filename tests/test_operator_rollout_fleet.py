"""How a fleet rollout treats paused, pinned and changing locations (issue 22), on the real
control plane with simulated session pods (Pod objects made Running again by a simulated
kubelet when their StatefulSet replaces them; one /events server for all): a paused location
takes the new template at once and does not hold the rollout, a pinned one keeps its
template while its own spec changes still apply at once, and is rolled once unpinned.

The waves themselves, with real session pods, are tests/test_operator_rollout.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.control_plane import ControlPlane
from tests.support.operator import (
    OperatorProcess,
    operator_namespace,
    patch_spec,
    session_manifest,
    start_operator,
    wait_phase,
)
from tests.support.processes import wait_until
from tests.support.s3 import SeaweedS3
from tests.support.simulated_pods import SimulatedKubelet, SimulatedPods, address
from whatsapp_common.crd import ROLLOUT_NAME, ROLLOUT_PLURAL

pytestmark = pytest.mark.slow

LOCATIONS = ["f1", "f2", "f3", "f4"]  # f1 paused, f2 pinned
IPS = {location: address(i, block=81) for i, location in enumerate(LOCATIONS)}
IMAGE = "ghcr.io/whatsapp-sessions/session-pod:{}"


@pytest.fixture(scope="module")
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = operator_namespace(control_plane, "fleet")
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def pods(control_plane: ControlPlane, namespace: str) -> Iterator[SimulatedPods]:
    server = SimulatedPods({ip: location for location, ip in IPS.items()})
    kubelet = SimulatedKubelet(
        str(control_plane.admin_kubeconfig),
        namespace,
        {f"wa-{location}-0": ip for location, ip in IPS.items()},
        delay=0.5,
    )
    for ip in IPS.values():
        server.state(ip, "ready", phone="15550001111")
    yield server
    kubelet.stop()
    server.stop()


@pytest.fixture(scope="module")
def operator_args(
    control_plane: ControlPlane,
    namespace: str,
    s3_server: SeaweedS3,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, str], dict[str, str]]:
    """The settings of this namespace's operator (its Secret made once); each test starts
    it with its own session image."""
    operator = start_operator(
        control_plane,
        namespace,
        {},
        {**s3_server.env(), "S3_PREFIX": f"fleet-{uuid.uuid4().hex[:6]}"},
        tmp_path_factory.mktemp("fleet") / "operator-first.log",
        ROLLOUT_MAX_UNAVAILABLE="1",
    )
    operator.stop()
    return operator.args


def start(
    cluster: ControlPlane,
    namespace: str,
    args: tuple[dict[str, str], dict[str, str]],
    log: Path,
    **env: str,
) -> OperatorProcess:
    pod_env, base = args
    return OperatorProcess(cluster, namespace, pod_env, {**base, **env}, log)


def statefulset(cluster: ControlPlane, namespace: str, location: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "statefulset", f"wa-{location}", "-n", namespace, "-o", "json")
    return json.loads(out.stdout)


def container(cluster: ControlPlane, namespace: str, location: str) -> dict[str, Any]:
    return statefulset(cluster, namespace, location)["spec"]["template"]["spec"]["containers"][0]


def rollout_status(cluster: ControlPlane, namespace: str) -> dict[str, Any]:
    out = cluster.kubectl("get", ROLLOUT_PLURAL, ROLLOUT_NAME, "-n", namespace, "-o", "json")
    return json.loads(out.stdout)["status"]


def test_paused_and_pinned_locations_in_a_rollout(
    control_plane: ControlPlane,
    namespace: str,
    pods: SimulatedPods,
    operator_args: tuple[dict[str, str], dict[str, str]],
    tmp_path: Path,
) -> None:
    operator = start(
        control_plane,
        namespace,
        operator_args,
        tmp_path / "op-0.log",
        SESSION_IMAGE=IMAGE.format("1"),
    )
    try:
        specs = {"f1": {"paused": True}, "f2": {"pinned": True}}
        for location in LOCATIONS:
            manifest = session_manifest(f"shop-{location}", location, **specs.get(location, {}))
            control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)
        wait_phase(control_plane, namespace, "shop-f1", "Paused")
        for location in LOCATIONS[1:]:
            wait_phase(control_plane, namespace, f"shop-{location}", "Ready")
        stable = rollout_status(control_plane, namespace)
        assert stable["phase"] == "Complete"

        operator.stop()
        operator = start(
            control_plane,
            namespace,
            operator_args,
            tmp_path / "op-1.log",
            SESSION_IMAGE=IMAGE.format("2"),
        )
        done = wait_until(
            lambda: (
                (r := rollout_status(control_plane, namespace))["target"] != stable["target"]
                and r["phase"] == "Complete"
                and r
            ),
            120,
            "the rollout to complete",
            interval=0.5,
        )
        assert done["counts"] == {
            "total": 4,
            "updated": 3,
            "pending": 0,
            "inFlight": 0,
            "failed": 0,
            "pinned": 1,
        }
        # The paused location took the new template at once and was never a canary.
        assert done["canaries"] == ["f3"]
        assert container(control_plane, namespace, "f1")["image"] == IMAGE.format("2")
        assert statefulset(control_plane, namespace, "f1")["spec"]["replicas"] == 0
        assert container(control_plane, namespace, "f2")["image"] == IMAGE.format("1")
        assert {container(control_plane, namespace, f)["image"] for f in ("f3", "f4")} == {
            IMAGE.format("2")
        }

        # The pinned location's own change applies at once, on its own template.
        limits = {"limits": {"memory": "700Mi"}}
        patch_spec(control_plane, namespace, "shop-f2", {"resources": limits})
        wait_until(
            lambda: container(control_plane, namespace, "f2")["resources"] == limits,
            30,
            "the pinned location's own change",
        )
        assert container(control_plane, namespace, "f2")["image"] == IMAGE.format("1")

        # Unpinned, it is rolled like the rest; unpaused, the paused one starts on the new one.
        patch_spec(control_plane, namespace, "shop-f2", {"pinned": False})
        wait_until(
            lambda: container(control_plane, namespace, "f2")["image"] == IMAGE.format("2"),
            60,
            "the unpinned location rolled",
        )
        wait_until(
            lambda: rollout_status(control_plane, namespace)["counts"]["updated"] == 4,
            60,
            "every location on the new template",
        )
        wait_phase(control_plane, namespace, "shop-f2", "Ready")
        patch_spec(control_plane, namespace, "shop-f1", {"paused": False})
        wait_phase(control_plane, namespace, "shop-f1", "Ready")
        pod = control_plane.kubectl(
            "get", "pod", "wa-f1-0", "-n", namespace, "-o", "jsonpath={.spec.containers[0].image}"
        ).stdout
        assert pod == IMAGE.format("2")
    finally:
        operator.stop()


def test_a_labelled_canary_that_fails_halts_and_abandon_keeps_the_fleet_where_it_was(
    control_plane: ControlPlane,
    namespace: str,
    pods: SimulatedPods,
    operator_args: tuple[dict[str, str], dict[str, str]],
    tmp_path: Path,
) -> None:
    """Runs after the test above: four running locations on image 2."""
    control_plane.kubectl(
        "label", "whatsappsession", "shop-f4", "-n", namespace, "whatsapp-sessions.io/canary=true"
    )
    stable = rollout_status(control_plane, namespace)
    assert stable["phase"] == "Complete" and stable["counts"]["updated"] == 4
    pods.set_refusing(IPS["f4"], True)  # its new pod never says how it is
    operator = start(
        control_plane,
        namespace,
        operator_args,
        tmp_path / "op.log",
        SESSION_IMAGE=IMAGE.format("3"),
        ROLLOUT_DEADLINE_SECONDS="8",
    )
    try:
        halted = wait_until(
            lambda: (
                (r := rollout_status(control_plane, namespace))["target"] != stable["target"]
                and r["phase"] == "Halted"
                and r
            ),
            90,
            "the rollout to halt",
            interval=0.5,
        )
        assert halted["canaries"] == ["f4"] and halted["failed"][0]["location"] == "f4"
        pods.set_refusing(IPS["f4"], False)
        wait_until(
            lambda: container(control_plane, namespace, "f4")["image"] == IMAGE.format("2"),
            30,
            "the canary back on the stable image",
        )
        control_plane.kubectl(
            "annotate",
            ROLLOUT_PLURAL,
            ROLLOUT_NAME,
            "-n",
            namespace,
            "whatsapp-sessions.io/action=abandon",
        )
        abandoned = wait_until(
            lambda: (
                (r := rollout_status(control_plane, namespace))["phase"] == "Abandoned"
                and r["counts"]["pending"] == 0
                and r
            ),
            60,
            "the rollout abandoned",
            interval=0.5,
        )
        assert abandoned["target"] == abandoned["stable"] == stable["target"]
        assert abandoned["counts"]["updated"] == 4
        assert {container(control_plane, namespace, f)["image"] for f in LOCATIONS} == {
            IMAGE.format("2")
        }
        about = f"involvedObject.name={ROLLOUT_NAME}"
        events = control_plane.kubectl(
            "get", "events", "-n", namespace, "--field-selector", about
        ).stdout
        assert "RolloutAbandoned" in events and "LocationFailed" in events
        wait_phase(control_plane, namespace, "shop-f4", "Ready")
    finally:
        operator.stop()
