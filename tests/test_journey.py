"""The whole journey on the real control plane, everything installed by the chart: helm install
-> kubectl apply a WhatsAppSession -> router /login -> QR -> scan on the double ->
/send_message -> the ack webhook reaches Rails (a test receiver) -> the pod is deleted ->
restored without a QR -> `kubectl get whatsappsessions` shows Ready -> helm uninstall leaves
nothing but the retained backup.

The operator (2 peering replicas) and the router run as the chart's pods on the test node, each
with its ServiceAccount's permissions, on its own pod IP."""

from __future__ import annotations

import base64
import json
import subprocess
import uuid

import pytest

from session_pod.delivery import verify
from tests.support.control_plane import ControlPlane
from tests.support.operator import (
    CHART,
    RELEASE,
    pod_uid,
    session_manifest,
    wait_backup,
    wait_phase,
)
from tests.support.processes import wait_until
from tests.support.rails import RailsReceiver
from tests.support.router import RouterClient
from tests.support.s3 import SeaweedS3
from tests.support.session_pods import Double, new_phone
from tests.support.test_node import TestNode

pytestmark = pytest.mark.slow

WEBHOOK_SECRET = "journey-webhook-secret"
SESSION_SECRET = "wa-session"  # S3 credentials and the webhook key: the session pods' Secret
LOCATION = "301"


def helm(cluster: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(cluster.helm_binary), "--kubeconfig", str(cluster.admin_kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"helm {' '.join(args)}: {result.stdout}{result.stderr}"
    return result


def names(cluster: ControlPlane, namespace: str, kind: str, *selector: str) -> list[str]:
    out = cluster.kubectl("get", kind, "-n", namespace, *selector, "-o", "name").stdout
    return out.split()


def ready_router(cluster: ControlPlane, node: TestNode, namespace: str) -> str:
    """The address of a Ready router pod."""

    def find() -> str | None:
        listed = cluster.kubectl(
            "get",
            "pods",
            "-n",
            namespace,
            "-l",
            "app.kubernetes.io/component=router",
            "-o",
            "json",
        ).stdout
        for pod in json.loads(listed)["items"]:
            conditions = pod["status"].get("conditions", [])
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return node.pod_ip(namespace, pod["metadata"]["name"])
        return None

    return wait_until(find, 90, "a Ready router pod", interval=0.5)


def test_helm_install_to_uninstall_with_a_linked_session(
    control_plane: ControlPlane,
    test_node: TestNode,
    double: Double,
    s3_server: SeaweedS3,
) -> None:
    namespace = f"journey-{uuid.uuid4().hex[:6]}"
    prefix = f"journey-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", namespace)
    rails = RailsReceiver()
    rails.start()
    installed = False
    try:
        s3 = s3_server.env()
        control_plane.kubectl(
            "create",
            "secret",
            "generic",
            SESSION_SECRET,
            "-n",
            namespace,
            f"--from-literal=AWS_ACCESS_KEY_ID={s3['AWS_ACCESS_KEY_ID']}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={s3['AWS_SECRET_ACCESS_KEY']}",
            f"--from-literal=WEBHOOK_SECRET={WEBHOOK_SECRET}",
        )
        extra_env = {
            **double.session_env(),
            "HEALTH_CHECK_INTERVAL_SECONDS": "1",
            "WEBHOOK_RETRY_BASE_SECONDS": "0.2",
            "WEBHOOK_RETRY_MAX_SECONDS": "1",
        }
        helm(
            control_plane,
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            namespace,
            f"--set=s3.bucket={s3['S3_BUCKET']}",
            f"--set=s3.endpoint={s3['S3_ENDPOINT_URL']}",
            f"--set=s3.region={s3['S3_REGION']}",
            f"--set=s3.prefix={prefix}",
            f"--set=s3.existingSecret={SESSION_SECRET}",
            "--set=rails.url=http://127.0.0.1",
            f"--set=rails.port={rails.port}",
            "--set=rails.scope=whatsapp_js",
            f"--set=rails.webhookSecret.existingSecret={SESSION_SECRET}",
            "--set=operator.peeringLifetimeSeconds=5",
            f"--set-json=session.extraEnv={json.dumps(extra_env)}",
        )
        installed = True
        operator_pods = [f"{RELEASE}-operator-0", f"{RELEASE}-operator-1"]
        for pod in operator_pods:
            test_node.wait_ready(namespace, pod, timeout=60)
        token = base64.b64decode(
            control_plane.kubectl(
                "get",
                "secret",
                f"{RELEASE}-router-token",
                "-n",
                namespace,
                "-o",
                "jsonpath={.data.token}",
            ).stdout
        ).decode()
        router = RouterClient(
            f"http://{ready_router(control_plane, test_node, namespace)}:8093", token
        )

        # kubectl apply a WhatsAppSession; Rails asks the router to log it in.
        control_plane.kubectl(
            "apply", "-n", namespace, "-f", "-", stdin=session_manifest("beauty-shop", LOCATION)
        )
        login = router.post("/login", {"location_identifier": LOCATION, "user_id": 7})
        assert login.json() == {
            "code": 200,
            "status": "success",
            "body": f"Initialization process started for {LOCATION}",
        }, login.text

        # QR -> scan on the double -> Ready.
        router.wait_state(LOCATION, "qr_required")
        code = wait_until(
            lambda: router.get("/qr", location_identifier=LOCATION).json().get("qr"), 30, "a QR"
        )
        phone = new_phone()
        double.scan(code, phone)
        router.wait_state(LOCATION, "ready")
        assert (
            wait_phase(control_plane, namespace, "beauty-shop", "Ready")["status"]["phone"] == phone
        )

        # /send_message -> the ack webhook reaches Rails, signed.
        receiver = new_phone()
        double.register(receiver)
        send = {"location_identifier": LOCATION, "receiver_phone": receiver, "message": "Hola"}
        sent = router.post("/send_message", send, {"Idempotency-Key": "journey-1"})
        assert sent.status_code == 200, sent.text
        assert sent.json()["success"] is True
        ack = wait_until(
            lambda: next(
                (e for e in rails.events("message_ack") if e["data"]["id"] == sent.json()["id"]),
                None,
            ),
            60,
            "the ack webhook of the sent message",
        )
        assert ack["location_identifier"] == LOCATION
        request = next(r for r in rails.received if r.json["event"] == "message_ack")
        assert request.path == "/whatsapp_js/message_ack"
        assert verify(
            WEBHOOK_SECRET,
            request.headers["X-Webhook-Timestamp"],
            request.body,
            request.headers["X-Webhook-Signature"],
        )
        wait_backup(control_plane, namespace, "beauty-shop")

        # The pod deleted: the StatefulSet recreates it, the session comes back without a QR.
        qr_webhooks, ready_webhooks = len(rails.events("qr")), len(rails.events("ready"))
        assert qr_webhooks >= 1 and ready_webhooks >= 1
        pod = f"wa-{LOCATION}-0"
        first_uid = pod_uid(control_plane, namespace, pod)
        control_plane.kubectl("delete", "pod", pod, "-n", namespace)
        wait_until(
            lambda: pod_uid(control_plane, namespace, pod) not in ("", first_uid),
            60,
            "a new session pod",
        )
        wait_until(
            lambda: len(rails.events("ready")) > ready_webhooks, 90, "ready again, from a new pod"
        )
        router.wait_state(LOCATION, "ready")
        assert len(rails.events("qr")) == qr_webhooks, "a QR after the restart"
        wait_phase(control_plane, namespace, "beauty-shop", "Ready")
        table = control_plane.kubectl("get", "whatsappsessions", "-n", namespace).stdout
        row = next(line for line in table.splitlines() if line.startswith("beauty-shop"))
        assert "Ready" in row.split() and phone in row, table

        # Deleted (default policy Retain), then helm uninstall: only the backup is left.
        control_plane.kubectl("delete", "whatsappsession", "beauty-shop", "-n", namespace)
        helm(control_plane, "uninstall", RELEASE, "--namespace", namespace)
        installed = False
        for kind in ("pods", "statefulsets", "deployments", "replicasets", "services", "pvc"):
            wait_until(
                lambda kind=kind: names(control_plane, namespace, kind) == [],
                120,
                f"no {kind} left",
                interval=0.5,
            )
        assert names(control_plane, namespace, "whatsappsessions") == []
        assert (
            names(control_plane, namespace, "secrets", "-l", "app.kubernetes.io/managed-by=Helm")
            == []
        )
        assert s3_server.keys(f"{prefix}/{LOCATION}/"), "the retained backup is gone"
    finally:
        if installed:
            subprocess.run(
                [
                    str(control_plane.helm_binary),
                    "--kubeconfig",
                    str(control_plane.admin_kubeconfig),
                    "uninstall",
                    RELEASE,
                    "--namespace",
                    namespace,
                ],
                capture_output=True,
                timeout=120,
                check=False,
            )
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        rails.stop()
