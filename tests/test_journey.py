"""The whole journey on a real node, in containers of the project's own images: helm install
into a namespace that enforces Pod Security "restricted" -> kubectl apply a WhatsAppSession ->
router /login through its Service's ClusterIP -> the QR on the link page (real Chromium),
scanned on the double -> /send_message ->
the signed ack webhook reaches Rails (a test receiver on the bridge's gateway) -> the session
pod deleted -> restored without a QR -> `kubectl get whatsappsessions` Ready -> helm uninstall
leaves nothing but the retained backup. `kubectl logs` of the session pod is JSON lines, and
the chart's NetworkPolicy is enforced (kube-router): a pod that is neither router nor operator
cannot reach the session pod."""

from __future__ import annotations

import ast
import base64
import json
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from session_pod.delivery import verify
from tests.support import link_page
from tests.support.control_plane import ControlPlane
from tests.support.diagnostics import explained_failures
from tests.support.node_network import GATEWAY
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
from tests.support.real_node import RealNode
from tests.support.router import RouterClient
from tests.support.s3 import SeaweedS3
from tests.support.session_pods import Double, new_phone
from whatsapp_common.keys import parse_ring

# The first test to use the real node also waits for it to start and for the images to be
# copied into containerd (about 2 minutes on a fresh machine).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

WEBHOOK_SECRET = "journey-webhook-secret"
SESSION_SECRET = "wa-session"
LOCATION = "301"


def helm(cluster: ControlPlane, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(cluster.helm_binary), "--kubeconfig", str(cluster.admin_kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check:
        assert result.returncode == 0, f"helm {' '.join(args)}: {result.stdout}{result.stderr}"
    return result


def names(cluster: ControlPlane, namespace: str, kind: str, *selector: str) -> list[str]:
    return cluster.kubectl("get", kind, "-n", namespace, *selector, "-o", "name").stdout.split()


def image_values(node: RealNode) -> list[str]:
    """helm --set flags for the images the node has (content-hash tags)."""
    flags = []
    for name, key in (("session-pod", "session"), ("operator", "operator"), ("router", "router")):
        repository, tag = node.images[name].rsplit(":", 1)
        flags += [f"--set=images.{key}.repository={repository}", f"--set=images.{key}.tag={tag}"]
    return flags


PROBE = """
import sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    request.add_header("Authorization", "Bearer " + sys.argv[2])
try:
    print("reached", urllib.request.urlopen(request, timeout=5).status)
except urllib.error.HTTPError as error:
    print("reached", error.code)
except OSError as error:
    print("refused", error)
"""


def stranger_pod(node: RealNode, namespace: str) -> str:
    """A pod that is neither router nor operator (the router image, for its Python), admitted
    under the restricted profile; returns its name once it runs."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "stranger", "namespace": namespace, "labels": {"app": "stranger"}},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "probe",
                    "image": node.images["router"],
                    "command": ["sleep", "600"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                    },
                }
            ],
        },
    }
    node.cluster.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    node.cluster.kubectl(
        "wait", "--for=condition=Ready", "pod/stranger", "-n", namespace, "--timeout=60s"
    )
    return "stranger"


ENVIRON_AND_FILES = """
import os, pathlib, sys
needle = sys.argv[1].encode()
print(repr(dict(os.environ)))
print(repr(pathlib.Path(os.environ["BACKUP_KEYS_FILE"]).read_text()))
for root in ("/data", "/tmp", "/etc/whatsapp-session"):
    for path in pathlib.Path(root).rglob("*"):
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
            print("FOUND", path)
"""


def assert_no_master_key_in_the_pod(
    cluster: ControlPlane, namespace: str, pod: str, s3: SeaweedS3
) -> None:
    """The master keys stay in the chart's Secrets: the session pod holds its location's
    derived keys only (a file of its own Secret), no file of its volumes and nothing in its
    environment holds a master, and every object in the bucket is sealed."""
    masters = parse_ring(
        secret_value(cluster, namespace, f"{RELEASE}-operator-backup-keys", "keys")
    )
    pod_auth = parse_ring(secret_value(cluster, namespace, f"{RELEASE}-pod-auth-keys", "keys"))
    for master in (*masters, *pod_auth):
        secret = base64.b64encode(master.secret).decode()
        seen = cluster.kubectl(
            "exec",
            pod,
            "-n",
            namespace,
            "-c",
            "session",
            "--",
            "python3",
            "-c",
            ENVIRON_AND_FILES,
            secret,
            timeout=60,
        ).stdout
        environ = ast.literal_eval(seen.splitlines()[0])
        assert "FOUND" not in seen and secret not in seen, seen[-2000:]
        assert not {"BACKUP_MASTER_KEYS", "POD_AUTH_MASTER_KEYS", "BACKUP_KEYS"} & set(environ)
        assert (
            ast.literal_eval(seen.splitlines()[1]) == masters.derive("backup", LOCATION).to_text()
        )
    keys = s3.keys()
    assert keys and all("/sealed/" in key for key in keys), keys
    assert all(not s3.get(key).startswith(b"\x1f\x8b") for key in keys)


def probe(cluster: ControlPlane, namespace: str, pod: str, url: str, *token: str) -> str:
    """'reached <status>' or 'refused ...': an HTTP request from inside `pod`, with the
    bearer `token` if one is given."""
    return cluster.kubectl(
        "exec", pod, "-n", namespace, "--", "python3", "-c", PROBE, url, *token, timeout=30
    ).stdout.strip()


def secret_value(cluster: ControlPlane, namespace: str, name: str, key: str) -> str:
    encoded = cluster.kubectl(
        "get", "secret", name, "-n", namespace, "-o", f"jsonpath={{.data.{key}}}"
    ).stdout
    return base64.b64decode(encoded).decode()


def pod_ip(cluster: ControlPlane, namespace: str, *selector: str) -> str:
    ips = cluster.kubectl(
        "get", "pods", "-n", namespace, *selector, "-o", "jsonpath={.items[*].status.podIP}"
    ).stdout.split()
    assert ips, f"no pod {selector} in {namespace}"
    return ips[0]


@pytest.fixture
def restricted_namespace(real_node: RealNode) -> Iterator[str]:
    namespace = f"journey-{uuid.uuid4().hex[:6]}"
    cluster = real_node.cluster
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    yield namespace
    helm(cluster, "uninstall", RELEASE, "--namespace", namespace, check=False)
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_helm_install_to_uninstall_in_containers_on_a_real_node(
    real_node: RealNode,
    node_double: Double,
    node_s3: SeaweedS3,
    restricted_namespace: str,
) -> None:
    cluster, namespace = real_node.cluster, restricted_namespace
    prefix = f"journey-{uuid.uuid4().hex[:6]}"
    rails = RailsReceiver(host=GATEWAY)
    rails.start()
    try:
        with explained_failures(cluster, namespace):
            s3 = node_s3.env()
            cluster.kubectl(
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
                **node_double.session_env(),
                "HEALTH_CHECK_INTERVAL_SECONDS": "1",
                "WEBHOOK_RETRY_BASE_SECONDS": "0.2",
                "WEBHOOK_RETRY_MAX_SECONDS": "1",
            }
            helm(
                cluster,
                "install",
                RELEASE,
                str(CHART),
                "--namespace",
                namespace,
                *image_values(real_node),
                f"--set=s3.bucket={s3['S3_BUCKET']}",
                f"--set=s3.endpoint={s3['S3_ENDPOINT_URL']}",
                f"--set=s3.region={s3['S3_REGION']}",
                f"--set=s3.prefix={prefix}",
                f"--set=s3.existingSecret={SESSION_SECRET}",
                f"--set=rails.url=http://{GATEWAY}",
                f"--set=rails.port={rails.port}",
                "--set=rails.scope=whatsapp_js",
                "--set=router.publicUrl=http://wa.journey.test",
                f"--set=rails.webhookSecret.existingSecret={SESSION_SECRET}",
                "--set=operator.peeringLifetimeSeconds=5",
                f"--set-json=session.extraEnv={json.dumps(extra_env)}",
                "--wait",
                "--timeout=180s",
            )
            token = secret_value(cluster, namespace, f"{RELEASE}-router-token", "token")
            cluster_ip = cluster.kubectl(
                "get",
                "service",
                f"{RELEASE}-router",
                "-n",
                namespace,
                "-o",
                "jsonpath={.spec.clusterIP}",
            ).stdout
            assert cluster_ip.startswith("10.203.1."), cluster_ip
            router = RouterClient(f"http://{cluster_ip}:8093", token)

            # kubectl apply a WhatsAppSession; Rails asks the router to log it in.
            cluster.kubectl(
                "apply", "-n", namespace, "-f", "-", stdin=session_manifest("beauty-shop", LOCATION)
            )
            login = router.post("/login", {"location_identifier": LOCATION, "user_id": 7})
            assert login.status_code == 200, login.text

            # The location's staff link their phone on the link page Rails sent them: the
            # live QR through the router's Service, rotated, scanned on the double -> Linked.
            # Expired and forged links show "expired" and no QR.
            router.wait_state(LOCATION, "qr_required", timeout=120)
            masters = parse_ring(secret_value(cluster, namespace, f"{RELEASE}-link-keys", "keys"))
            phone = new_phone()
            with link_page.phone_browser() as browser:
                link_page.refuses_expired_and_forged(browser, router, LOCATION, masters)
                link_page.link_by_qr(browser, router, LOCATION, node_double, phone)
            router.wait_state(LOCATION, "ready")
            assert (
                wait_phase(cluster, namespace, "beauty-shop", "Ready")["status"]["phone"] == phone
            )
            # The qr webhook carried a link on the router's public URL, for Rails to text.
            link = rails.events("qr")[0]["data"]["link_url"]
            assert link.startswith("http://wa.journey.test/link/"), link

            # The session pod's log, through the kubelet: one JSON object per line.
            pod = f"wa-{LOCATION}-0"
            logs = cluster.kubectl("logs", pod, "-n", namespace, "-c", "session").stdout
            lines = [json.loads(line) for line in logs.splitlines() if line.strip()]
            assert lines and all(entry["location"] == LOCATION for entry in lines), logs[-2000:]

            # NetworkPolicy, enforced: the router reaches the session pod (all of the above went
            # through it); a pod that is neither router nor operator is refused, though it
            # reaches the router itself.
            stranger = stranger_pod(real_node, namespace)
            session_ip = pod_ip(
                cluster, namespace, "-l", f"statefulset.kubernetes.io/pod-name={pod}"
            )
            router_ip = pod_ip(cluster, namespace, "-l", "app.kubernetes.io/component=router")
            router_probe = probe(cluster, namespace, stranger, f"http://{router_ip}:8093/healthz")
            assert router_probe == "reached 200", router_probe
            status_url = f"http://{session_ip}:8093/status"
            refused = probe(cluster, namespace, stranger, status_url)
            assert refused.startswith("refused"), refused
            # Without the NetworkPolicy (a CNI that does not enforce it), the pod itself refuses:
            # no token, the router's own token or the scrape token open nothing but /metrics.
            cluster.kubectl("delete", "networkpolicy", "-n", namespace, "--all")
            wait_until(
                lambda: probe(cluster, namespace, stranger, status_url) == "reached 401",
                60,
                "the session pod reached once the NetworkPolicy is gone",
            )
            scrape = secret_value(cluster, namespace, f"{RELEASE}-metrics-scrape", "token")
            for url, credential, expected in (
                (status_url, token, "reached 401"),
                (status_url, scrape, "reached 401"),
                (f"http://{session_ip}:8093/send_message", token, "reached 401"),
                (f"http://{session_ip}:8093/metrics", "", "reached 401"),
                (f"http://{session_ip}:8093/metrics", scrape, "reached 200"),
                (f"http://{session_ip}:8093/healthz", "", "reached 200"),
            ):
                given = (credential,) if credential else ()
                assert probe(cluster, namespace, stranger, url, *given) == expected, url
            cluster.kubectl("delete", "pod", stranger, "-n", namespace, "--grace-period=0")

            # /send_message -> the ack webhook reaches Rails, signed.
            receiver = new_phone()
            node_double.register(receiver)
            send = {"location_identifier": LOCATION, "receiver_phone": receiver, "message": "Hola"}
            sent = router.post("/send_message", send, {"Idempotency-Key": "journey-1"})
            assert sent.status_code == 200, sent.text
            ack = wait_until(
                lambda: next(
                    (
                        e
                        for e in rails.events("message_ack")
                        if e["data"]["id"] == sent.json()["id"]
                    ),
                    None,
                ),
                60,
                "the ack webhook of the sent message",
            )
            assert ack["location_identifier"] == LOCATION
            request = next(r for r in rails.received if r.json["event"] == "message_ack")
            assert verify(
                WEBHOOK_SECRET,
                request.headers["X-Webhook-Timestamp"],
                request.body,
                request.headers["X-Webhook-Signature"],
            )
            wait_backup(cluster, namespace, "beauty-shop")
            assert_no_master_key_in_the_pod(cluster, namespace, pod, node_s3)

            # The pod deleted: the StatefulSet recreates it, the session comes back without a QR.
            qr_webhooks, ready_webhooks = len(rails.events("qr")), len(rails.events("ready"))
            first_uid = pod_uid(cluster, namespace, pod)
            cluster.kubectl("delete", "pod", pod, "-n", namespace)
            wait_until(
                lambda: pod_uid(cluster, namespace, pod) not in ("", first_uid),
                120,
                "a new session pod",
            )
            wait_until(
                lambda: len(rails.events("ready")) > ready_webhooks,
                120,
                "ready again, from a new pod",
            )
            router.wait_state(LOCATION, "ready")
            assert len(rails.events("qr")) == qr_webhooks, "a QR after the restart"
            wait_phase(cluster, namespace, "beauty-shop", "Ready")
            table = cluster.kubectl("get", "whatsappsessions", "-n", namespace).stdout
            row = next(line for line in table.splitlines() if line.startswith("beauty-shop"))
            assert "Ready" in row.split() and phone in row, table

            # Deleted (default policy Retain), then helm uninstall: only the backup is left.
            cluster.kubectl("delete", "whatsappsession", "beauty-shop", "-n", namespace)
            helm(cluster, "uninstall", RELEASE, "--namespace", namespace)
            for kind in ("pods", "statefulsets", "deployments", "replicasets", "services", "pvc"):
                wait_until(
                    lambda kind=kind: names(cluster, namespace, kind) == [],
                    180,
                    f"no {kind} left",
                    interval=0.5,
                )
            assert names(cluster, namespace, "whatsappsessions") == []
            assert node_s3.keys(f"{prefix}/{LOCATION}/"), "the retained backup is gone"
    finally:
        rails.stop()
