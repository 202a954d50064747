"""The test node on the real control plane: a StatefulSet's pod is bound, runs as a local
process on its own loopback address with env from a Secret, is Ready only when its readiness
probe passes, keeps its volume across deletion, gets SIGTERM and is restarted when its
liveness probe fails."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.control_plane import ControlPlane, statefulset_manifest
from tests.support.processes import wait_until
from tests.support.test_node import TestNode

pytestmark = pytest.mark.slow

# A pod's program: /readyz passes once DATA_DIR/ready exists, /healthz fails while
# DATA_DIR/sick exists (removed at start), /state tells what the process sees.
SERVER = """
import http.server, json, os, signal, sys
data = os.environ["DATA_DIR"]
boots = 1 + len(open(f"{data}/boots").read()) if os.path.exists(f"{data}/boots") else 1
open(f"{data}/boots", "a").write("x")
if os.path.exists(f"{data}/sick"):
    os.remove(f"{data}/sick")

def on_sigterm(*_):
    print("SIGTERM", flush=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, on_sigterm)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/state":
            body = json.dumps({"boots": boots, "token": os.environ["TOKEN"],
                               "pod_ip": os.environ["POD_IP"], "data_dir": data}).encode()
            status = 200
        else:
            failing = {"/readyz": not os.path.exists(f"{data}/ready"),
                       "/healthz": os.path.exists(f"{data}/sick")}[self.path]
            status, body = (503, b"no") if failing else (200, b"ok")
        self.send_response(status)
        self.end_headers()
        self.wfile.write(body)

print("listening", flush=True)
http.server.HTTPServer((sys.argv[1], 8080), Handler).serve_forever()
"""


def statefulset(name: str) -> dict[str, Any]:
    probe = {"port": 8080}
    container = {
        "name": "server",
        "image": "example.invalid/python",
        "command": ["python3", "-c", SERVER],
        "args": ["$(POD_IP)"],
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "DATA_DIR", "value": "/data"},
        ],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "readinessProbe": {"httpGet": {**probe, "path": "/readyz"}, "periodSeconds": 1},
        "livenessProbe": {
            "httpGet": {**probe, "path": "/healthz"},
            "periodSeconds": 1,
            "failureThreshold": 2,
        },
    }
    return statefulset_manifest(name, container, terminationGracePeriodSeconds=5)


def get_json(control_plane: ControlPlane, *args: str) -> Any:
    return json.loads(control_plane.kubectl("get", *args, "-o", "json").stdout)


def state(test_node: TestNode, namespace: str) -> dict[str, Any]:
    return requests.get(
        f"http://{test_node.pod_ip(namespace, 'web-0')}:8080/state", timeout=2
    ).json()


def container_status(control_plane: ControlPlane, namespace: str) -> dict[str, Any]:
    pod = get_json(control_plane, "-n", namespace, "pod", "web-0")
    return pod["status"].get("containerStatuses", [{}])[0]


@pytest.fixture
def web(control_plane: ControlPlane, test_node: TestNode, namespace: str) -> Path:
    """StatefulSet `web` running in `namespace`; returns its volume's local directory."""
    ns = ("-n", namespace)
    control_plane.kubectl(
        "create", *ns, "secret", "generic", "creds", "--from-literal=token=s3cret"
    )
    control_plane.kubectl("apply", *ns, "-f", "-", stdin=json.dumps(statefulset("web")))
    wait_until(lambda: test_node.pid(namespace, "web-0"), 30, "the pod's process")
    return test_node.pvc_path(namespace, "data-web-0")


def test_pod_runs_and_is_ready_only_when_its_probe_passes(
    control_plane: ControlPlane, test_node: TestNode, namespace: str, web: Path
) -> None:
    wait_until(lambda: container_status(control_plane, namespace).get("started"), 10, "start")
    pod = get_json(control_plane, "-n", namespace, "pod", "web-0")
    ip = test_node.pod_ip(namespace, "web-0")
    assert pod["spec"]["nodeName"] == "test-node"
    assert pod["status"]["phase"] == "Running"
    assert ip is not None and ip.startswith("127.") and ip != "127.0.0.1"
    assert (pod["status"]["podIP"], pod["status"]["hostIP"]) == (ip, "127.0.0.1")
    seen = wait_until(lambda: state(test_node, namespace), 10, "the server")
    assert seen == {"boots": 1, "token": "s3cret", "pod_ip": ip, "data_dir": str(web)}
    pvc = get_json(control_plane, "-n", namespace, "pvc", "data-web-0")
    assert pvc["status"]["phase"] == "Bound"

    time.sleep(1.5)  # its readiness probe, every second, fails
    pod = get_json(control_plane, "-n", namespace, "pod", "web-0")
    assert not pod["status"]["containerStatuses"][0]["ready"]
    conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conditions["Ready"] == conditions["ContainersReady"] == "False"

    (web / "ready").touch()
    pod = test_node.wait_ready(namespace, "web-0", timeout=10)
    assert pod["status"]["containerStatuses"][0]["ready"]


def test_deleted_pod_gets_sigterm_and_its_volume_survives(
    control_plane: ControlPlane, test_node: TestNode, namespace: str, web: Path
) -> None:
    (web / "ready").touch()
    first = test_node.wait_ready(namespace, "web-0", timeout=10)
    old_ip = test_node.pod_ip(namespace, "web-0")
    assert state(test_node, namespace)["boots"] == 1
    log = test_node.log_path(namespace, "web-0", "server")

    control_plane.kubectl("delete", "-n", namespace, "pod", "web-0", "--timeout=20s")
    assert log.read_text().splitlines()[-1] == "SIGTERM"

    second = test_node.wait_ready(namespace, "web-0", timeout=30)  # recreated by the StatefulSet
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    assert test_node.pod_ip(namespace, "web-0") != old_ip
    assert state(test_node, namespace)["boots"] == 2  # it saw the first process's file


def test_failing_liveness_probe_restarts_the_container(
    control_plane: ControlPlane, test_node: TestNode, namespace: str, web: Path
) -> None:
    (web / "ready").touch()
    test_node.wait_ready(namespace, "web-0", timeout=10)
    pid = test_node.pid(namespace, "web-0")

    (web / "sick").touch()
    wait_until(
        lambda: container_status(control_plane, namespace)["restartCount"] == 1, 15, "a restart"
    )
    status = container_status(control_plane, namespace)
    assert status["lastState"]["terminated"]["exitCode"] == 0  # it exited on SIGTERM
    assert "SIGTERM" in test_node.log_path(namespace, "web-0", "server").read_text()
    test_node.wait_ready(namespace, "web-0", timeout=10)
    assert test_node.pid(namespace, "web-0") not in (None, pid)
    assert state(test_node, namespace)["boots"] == 2
