"""The operator on a real control plane: kubectl apply a WhatsAppSession -> StatefulSet,
Service and a running session pod (run by the test node) -> QR -> scan -> Ready; pod loss,
pause, invalid resources, deletion policies, an operator restart."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.control_plane import ControlPlane
from tests.support.operator import (
    OperatorProcess,
    operator_namespace,
    patch_spec,
    pod_uid,
    qr_of,
    session_manifest,
    start_operator,
    wait_backup,
    wait_phase,
)
from tests.support.processes import wait_until
from tests.support.s3 import SeaweedS3
from tests.support.session_pods import Double, new_phone
from tests.support.test_node import TestNode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = operator_namespace(control_plane, "op")
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def s3_prefix() -> str:
    return f"op-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane,
    namespace: str,
    double: Double,
    s3_server: SeaweedS3,
    s3_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    process = start_operator(
        control_plane,
        namespace,
        double.session_env(),
        {**s3_server.env(), "S3_PREFIX": s3_prefix},
        tmp_path_factory.mktemp("operator") / "operator.log",
    )
    yield process
    process.stop()


def kubectl_get_sessions(cluster: ControlPlane, namespace: str) -> str:
    return cluster.kubectl("get", "whatsappsessions", "-n", namespace, "-o", "wide").stdout


def test_a_session_from_apply_to_ready_survives_pod_loss_and_pause(
    control_plane: ControlPlane,
    test_node: TestNode,
    namespace: str,
    operator: OperatorProcess,
    double: Double,
    s3_server: SeaweedS3,
    s3_prefix: str,
) -> None:
    control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", stdin=session_manifest("beauty-shop", "101")
    )
    sts = wait_until(
        lambda: (
            control_plane.kubectl(
                "get",
                "statefulset",
                "wa-101",
                "-n",
                namespace,
                "-o",
                "jsonpath={.metadata.ownerReferences[0].kind}",
                check=False,
            ).stdout
        ),
        30,
        "the StatefulSet",
    )
    assert sts == "WhatsAppSession"
    assert (
        control_plane.kubectl(
            "get", "service", "wa-101", "-n", namespace, "-o", "jsonpath={.spec.clusterIP}"
        ).stdout
        == "None"
    )

    wait_phase(control_plane, namespace, "beauty-shop", "QRRequired", timeout=90)
    table = kubectl_get_sessions(control_plane, namespace)
    assert "LOCATION" in table and "PHASE" in table and "LAST-BACKUP" in table
    assert "QRRequired" in table

    phone = new_phone()
    double.scan(qr_of(test_node.pod_ip(namespace, "wa-101-0"), "101"), phone)
    ready = wait_phase(control_plane, namespace, "beauty-shop", "Ready")
    assert ready["status"]["phone"] == phone
    conditions = {c["type"]: c["status"] for c in ready["status"]["conditions"]}
    assert conditions["Ready"] == "True" and conditions["Authenticated"] == "True"
    wait_backup(control_plane, namespace, "beauty-shop", timeout=30)
    events = control_plane.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=beauty-shop"
    ).stdout
    assert "QRRequired -> " in events or "-> Ready" in events

    # A spec change rolls the pod (a new template); it comes back linked.
    first_pod = pod_uid(control_plane, namespace, "wa-101-0")
    patch_spec(control_plane, namespace, "beauty-shop", {"backup": {"intervalSeconds": 600}})
    wait_until(
        lambda: pod_uid(control_plane, namespace, "wa-101-0") not in ("", first_pod),
        90,
        "the pod to roll",
    )
    rolled = wait_phase(control_plane, namespace, "beauty-shop", "Ready", timeout=90)
    assert rolled["status"]["observedGeneration"] == rolled["metadata"]["generation"]

    # Paused: no pod; the volume is wiped meanwhile, so unpausing restores from S3.
    patch_spec(control_plane, namespace, "beauty-shop", {"paused": True})
    wait_phase(control_plane, namespace, "beauty-shop", "Paused")
    wait_until(
        lambda: (
            control_plane.kubectl("get", "pod", "wa-101-0", "-n", namespace, check=False).returncode
            != 0
        ),
        60,
        "no pod",
    )
    assert (
        control_plane.kubectl(
            "get", "statefulset", "wa-101", "-n", namespace, "-o", "jsonpath={.spec.replicas}"
        ).stdout
        == "0"
    )
    shutil.rmtree(test_node.pvc_path(namespace, "data-wa-101-0"))
    patch_spec(control_plane, namespace, "beauty-shop", {"paused": False})
    restored = wait_phase(control_plane, namespace, "beauty-shop", "Ready", timeout=90)
    assert restored["status"]["phone"] == phone

    # The pod deleted: the StatefulSet recreates it and the session comes back without a QR.
    control_plane.kubectl("delete", "pod", "wa-101-0", "-n", namespace)
    wait_phase(control_plane, namespace, "beauty-shop", "Ready", timeout=90)
    assert "QRRequired" not in kubectl_get_sessions(control_plane, namespace)

    # Deleted with the default policy (Retain): every object goes, the backup stays.
    control_plane.kubectl("delete", "whatsappsession", "beauty-shop", "-n", namespace)
    for kind in ("statefulset", "service", "pod", "pvc"):
        wait_until(
            lambda kind=kind: (
                control_plane.kubectl("get", kind, "-n", namespace, "-o", "name").stdout.strip()
                == ""
            ),
            60,
            f"no {kind} left",
        )
    assert s3_server.keys(f"{s3_prefix}/101/")


def test_an_invalid_session_is_refused_with_a_message(
    control_plane: ControlPlane, namespace: str
) -> None:
    result = control_plane.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        check=False,
        stdin=session_manifest("bad", "no spaces allowed", deletionPolicy="Sometimes"),
    )
    assert result.returncode != 0
    assert "spec.locationId" in result.stderr and "spec.deletionPolicy" in result.stderr


def test_delete_policy_logs_out_and_removes_the_backup(
    control_plane: ControlPlane,
    test_node: TestNode,
    namespace: str,
    operator: OperatorProcess,
    double: Double,
    s3_server: SeaweedS3,
    s3_prefix: str,
) -> None:
    control_plane.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=session_manifest("leaving", "102", deletionPolicy="Delete"),
    )
    wait_phase(control_plane, namespace, "leaving", "QRRequired", timeout=90)
    phone = new_phone()
    double.scan(qr_of(test_node.pod_ip(namespace, "wa-102-0"), "102"), phone)
    wait_backup(control_plane, namespace, "leaving")
    assert s3_server.keys(f"{s3_prefix}/102/")
    control_plane.kubectl("delete", "whatsappsession", "leaving", "-n", namespace)
    assert s3_server.keys(f"{s3_prefix}/102/") == []
    assert double.phone(phone)["linked"] is False


def test_a_standby_replica_takes_over_when_the_active_one_dies(
    control_plane: ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    standby = OperatorProcess(
        control_plane, namespace, *operator.args, tmp_path / "standby.log", priority=50
    )
    try:
        operator.program.kill()  # mid-way: no chance to clean up
        control_plane.kubectl(
            "apply",
            "-n",
            namespace,
            "-f",
            "-",
            stdin=session_manifest("while-down", "103", paused=True),
        )
        wait_phase(control_plane, namespace, "while-down", "Paused", timeout=60)
        assert (
            control_plane.kubectl(
                "get", "statefulset", "wa-103", "-n", namespace, "-o", "jsonpath={.spec.replicas}"
            ).stdout
            == "0"
        )
        assert "while-down" in standby.program.log_path.read_text()
    finally:
        standby.stop()
