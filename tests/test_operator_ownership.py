"""One location, one resource (issue 21), on the real control plane with its garbage
collector: a duplicate WhatsAppSession is marked Conflict and touches nothing, deleting it
removes nothing but itself, two created at once leave one owner, an object owned by nobody
is reported and left alone, and what the operator owns is put back when it drifts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.control_plane import ControlPlane, statefulset_manifest
from tests.support.operator import (
    OperatorProcess,
    get_session,
    operator_namespace,
    pod_uid,
    qr_of,
    session_manifest,
    start_operator,
    wait_backup,
    wait_phase,
)
from tests.support.processes import wait_until
from tests.support.router import RouterProcess
from tests.support.s3 import SeaweedS3
from tests.support.session_pods import Double, new_phone
from tests.support.test_node import TestNode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = operator_namespace(control_plane, "own")
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def s3_prefix() -> str:
    return f"own-{uuid.uuid4().hex[:6]}"


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


def owners(cluster: ControlPlane, namespace: str, kind: str, name: str) -> list[str]:
    """The uids in the object's owner references."""
    out = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout
    return [ref["uid"] for ref in json.loads(out)["metadata"].get("ownerReferences") or []]


def uid_of(cluster: ControlPlane, namespace: str, kind: str, name: str) -> str:
    """The object's uid, or "" while there is none."""
    return cluster.kubectl(
        "get", kind, name, "-n", namespace, "-o", "jsonpath={.metadata.uid}", check=False
    ).stdout


def warnings_of(cluster: ControlPlane, namespace: str, name: str) -> list[dict[str, str]]:
    out = cluster.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.name={name},type=Warning",
        "-o",
        "json",
    ).stdout
    return json.loads(out)["items"]


def session_names(cluster: ControlPlane, namespace: str) -> set[str]:
    out = cluster.kubectl("get", "whatsappsessions", "-n", namespace, "-o", "name").stdout
    return {line.split("/", 1)[1] for line in out.split()}


def apply(cluster: ControlPlane, namespace: str, manifest: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)


def test_a_duplicate_is_a_conflict_and_deleting_it_takes_nothing(
    control_plane: ControlPlane,
    test_node: TestNode,
    namespace: str,
    operator: OperatorProcess,
    double: Double,
    s3_server: SeaweedS3,
    s3_prefix: str,
    tmp_path: Path,
) -> None:
    apply(control_plane, namespace, session_manifest("shop", "42", deletionPolicy="Delete"))
    wait_phase(control_plane, namespace, "shop", "QRRequired", timeout=90)
    qr = qr_of(test_node.pod_ip(namespace, "wa-42-0"), "42")
    phone = new_phone()
    double.scan(qr, phone)
    wait_phase(control_plane, namespace, "shop", "Ready")
    wait_backup(control_plane, namespace, "shop")
    shop = get_session(control_plane, namespace, "shop")["metadata"]["uid"]
    first_pod = pod_uid(control_plane, namespace, "wa-42-0")
    backups = s3_server.keys(f"{s3_prefix}/42/")
    assert backups

    # The mistaken copy: Conflict, a Warning naming the owner, nothing of shop's touched.
    apply(control_plane, namespace, session_manifest("shop-copy", "42", deletionPolicy="Delete"))
    copy = wait_phase(control_plane, namespace, "shop-copy", "Conflict")
    assert "WhatsAppSession shop" in copy["status"]["message"]
    warning = wait_until(
        lambda: warnings_of(control_plane, namespace, "shop-copy"), 30, "the Warning Event"
    )
    assert warning[0]["reason"] == "Conflict" and "WhatsAppSession shop" in warning[0]["message"]
    for kind in ("statefulset", "service"):
        assert owners(control_plane, namespace, kind, "wa-42") == [shop]
    table = control_plane.kubectl("get", "whatsappsessions", "-n", namespace).stdout
    assert any(line.split()[:3] == ["shop-copy", "42", "Conflict"] for line in table.splitlines())

    # The router routes 42 to shop, and /login of 42 creates nothing (there is a resource).
    router = RouterProcess(control_plane, namespace, tmp_path / "router.log")
    try:
        assert router.post("/login", {"location_identifier": "42"}).status_code == 200
        assert router.wait_state("42", "ready")["phone"] == phone
        listed = {s["name"]: s for s in router.get("/sessions").json()["body"]}
        assert listed["shop"]["routable"] and not listed["shop-copy"]["routable"]
        assert listed["shop-copy"]["phase"] == "Conflict"
    finally:
        router.stop()
    assert session_names(control_plane, namespace) == {"shop", "shop-copy"}

    # Deleting the copy (the natural clean-up) removes the copy and nothing else.
    control_plane.kubectl("delete", "whatsappsession", "shop-copy", "-n", namespace)
    assert session_names(control_plane, namespace) == {"shop"}
    assert owners(control_plane, namespace, "statefulset", "wa-42") == [shop]
    assert pod_uid(control_plane, namespace, "wa-42-0") == first_pod
    assert double.phone(phone)["linked"] is True
    assert set(s3_server.keys(f"{s3_prefix}/42/")) >= set(backups)
    assert get_session(control_plane, namespace, "shop")["status"]["phase"] == "Ready"
    assert "not the location's resource" in operator.program.log_path.read_text()


def test_two_resources_applied_at_once_leave_exactly_one_owner(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    items = [json.loads(session_manifest(n, "43", paused=True)) for n in ("first", "second")]
    apply(
        control_plane, namespace, json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )
    phases = wait_until(
        lambda: (
            p
            if (
                p := sorted(
                    get_session(control_plane, namespace, n).get("status", {}).get("phase", "")
                    for n in ("first", "second")
                )
            )
            == ["Conflict", "Paused"]
            else None
        ),
        30,
        "one Paused owner and one Conflict",
    )
    assert phases == ["Conflict", "Paused"]
    winner = next(
        s
        for n in ("first", "second")
        if (s := get_session(control_plane, namespace, n))["status"]["phase"] == "Paused"
    )
    for kind in ("statefulset", "service"):
        assert owners(control_plane, namespace, kind, "wa-43") == [winner["metadata"]["uid"]]


def test_an_object_owned_by_nobody_is_reported_and_left_alone(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    container = {"name": "web", "image": "example/web:1", "command": ["sleep", "1"]}
    manual = {**statefulset_manifest("wa-44", container), "metadata": {"name": "wa-44"}}
    manual["spec"]["replicas"] = 0
    apply(control_plane, namespace, json.dumps(manual))
    before = json.loads(
        control_plane.kubectl("get", "statefulset", "wa-44", "-n", namespace, "-o", "json").stdout
    )
    apply(control_plane, namespace, session_manifest("squatted", "44", deletionPolicy="Delete"))
    status = wait_phase(control_plane, namespace, "squatted", "Conflict")["status"]
    assert "nobody" in status["message"]
    after = json.loads(
        control_plane.kubectl("get", "statefulset", "wa-44", "-n", namespace, "-o", "json").stdout
    )
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert uid_of(control_plane, namespace, "service", "wa-44") == ""
    control_plane.kubectl("delete", "whatsappsession", "squatted", "-n", namespace)
    assert uid_of(control_plane, namespace, "statefulset", "wa-44") == before["metadata"]["uid"]


def test_a_statefulset_service_or_keys_secret_deleted_or_edited_by_hand_is_put_back(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    apply(control_plane, namespace, session_manifest("steady", "45", paused=True))
    wait_phase(control_plane, namespace, "steady", "Paused")
    owner = get_session(control_plane, namespace, "steady")["metadata"]["uid"]
    for kind, name in (("statefulset", "wa-45"), ("service", "wa-45"), ("secret", "wa-45-keys")):
        old = wait_until(
            lambda kind=kind, name=name: uid_of(control_plane, namespace, kind, name), 30, kind
        )
        control_plane.kubectl("delete", kind, name, "-n", namespace)
        wait_until(
            lambda kind=kind, name=name, old=old: (
                uid_of(control_plane, namespace, kind, name) not in ("", old)
            ),
            30,
            f"the {kind} back",
        )
        assert owners(control_plane, namespace, kind, name) == [owner]
    # A keys Secret edited by hand is derived again.
    keys = json.loads(
        control_plane.kubectl("get", "secret", "wa-45-keys", "-n", namespace, "-o", "json").stdout
    )["data"]
    control_plane.kubectl(
        "patch",
        "secret",
        "wa-45-keys",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"data": {"POD_TOKENS": "dGFtcGVyZWQ="}}),
    )
    wait_until(
        lambda: (
            json.loads(
                control_plane.kubectl(
                    "get", "secret", "wa-45-keys", "-n", namespace, "-o", "json"
                ).stdout
            )["data"]
            == keys
        ),
        30,
        "the keys Secret derived again",
    )
    control_plane.kubectl("scale", "statefulset", "wa-45", "-n", namespace, "--replicas=3")
    wait_until(
        lambda: (
            control_plane.kubectl(
                "get", "statefulset", "wa-45", "-n", namespace, "-o", "jsonpath={.spec.replicas}"
            ).stdout
            == "0"
        ),
        30,
        "the paused StatefulSet back at 0 replicas",
    )
