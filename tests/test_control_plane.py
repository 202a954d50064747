"""The tests' Kubernetes control plane itself: the real API server answers with the pinned
version, the controller manager turns a StatefulSet into its Pod and garbage-collects it, and
RBAC applies to a client acting as a ServiceAccount."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.control_plane import K8S_VERSION, ControlPlane, statefulset_manifest
from tests.support.processes import wait_until

pytestmark = pytest.mark.slow
# A container nothing will run: no node exists in these tests.
NO_RUNTIME = {"name": "main", "image": "example.invalid/none"}


def get_json(control_plane: ControlPlane, *args: str) -> Any:
    return json.loads(control_plane.kubectl("get", *args, "-o", "json").stdout)


def exists(control_plane: ControlPlane, *args: str) -> bool:
    return control_plane.kubectl("get", *args, check=False).returncode == 0


def test_server_reports_the_pinned_version(control_plane: ControlPlane) -> None:
    versions = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert versions["serverVersion"]["gitVersion"] == K8S_VERSION
    assert versions["serverVersion"]["major"] == "1"
    assert versions["serverVersion"]["minor"] == K8S_VERSION.split(".")[1]
    assert versions["clientVersion"]["minor"] == versions["serverVersion"]["minor"]


def test_statefulset_pod_is_created_and_garbage_collected(
    control_plane: ControlPlane, namespace: str
) -> None:
    ns = ("-n", namespace)
    control_plane.kubectl(
        "apply",
        *ns,
        "-f",
        "-",
        stdin=json.dumps(
            statefulset_manifest("web", {"name": "main", "image": "example.invalid/none"})
        ),
    )

    wait_until(lambda: exists(control_plane, *ns, "pod", "web-0"), 30, "the StatefulSet's pod")
    pod = get_json(control_plane, *ns, "pod", "web-0")
    assert pod["status"]["phase"] == "Pending"  # no scheduler, no kubelet
    assert "nodeName" not in pod["spec"]
    assert [ref["kind"] for ref in pod["metadata"]["ownerReferences"]] == ["StatefulSet"]
    assert pod["spec"]["serviceAccountName"] == "default"
    assert exists(control_plane, *ns, "pvc", "data-web-0")

    control_plane.kubectl("delete", *ns, "statefulset", "web")
    wait_until(
        lambda: not exists(control_plane, *ns, "pod", "web-0"), 30, "the pod to be collected"
    )
    # The claim outlives its StatefulSet (retention policy Retain) and, no pod using it
    # any more, the PVC protection controller lets it go.
    control_plane.kubectl("delete", *ns, "pvc", "data-web-0", "--timeout=30s")


def test_service_account_is_bound_by_rbac(control_plane: ControlPlane, namespace: str) -> None:
    ns = ("-n", namespace)
    control_plane.kubectl("create", *ns, "serviceaccount", "operator")
    kubeconfig = control_plane.kubeconfig_for_service_account(namespace, "operator")

    denied = control_plane.kubectl("get", *ns, "pods", kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0
    assert (
        f'User "system:serviceaccount:{namespace}:operator" cannot list resource "pods"'
        in denied.stderr
    )

    control_plane.kubectl("create", *ns, "role", "pod-reader", "--verb=get,list", "--resource=pods")
    control_plane.kubectl(
        "create",
        *ns,
        "rolebinding",
        "operator-reads-pods",
        "--role=pod-reader",
        f"--serviceaccount={namespace}:operator",
    )
    wait_until(
        lambda: (
            control_plane.kubectl("get", *ns, "pods", kubeconfig=kubeconfig, check=False).returncode
            == 0
        ),
        10,
        "the RoleBinding to take effect",
    )
    # Other namespaces stay out of reach.
    other = control_plane.kubectl(
        "get", "pods", "-n", "default", kubeconfig=kubeconfig, check=False
    )
    assert "forbidden" in other.stderr
