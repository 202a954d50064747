"""The real operator (`kopf run`) as a process, authenticated as its own ServiceAccount."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import requests

from .control_plane import ControlPlane
from .processes import REPO, Program, free_port, wait_until
from .session_pods import TEST_MASTERS, TEST_POD_AUTH_MASTERS, authorization

CRD = REPO / "crds/whatsappsessions.yaml"
PEERING_CRD = REPO / "crds/kopf-peering.yaml"
ROLLOUT_CRD = REPO / "crds/whatsappsessionrollouts.yaml"
CHART = REPO / "charts/whatsapp-sessions"
RELEASE = "whatsapp-sessions"
OPERATOR_ACCOUNT = f"{RELEASE}-operator"


def operator_namespace(cluster: ControlPlane, prefix: str, *values: str) -> str:
    """A new namespace ready for the operator: the CRDs installed, the chart's RBAC applied
    (rendered with the `--set` `values`)."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    cluster.install_crds(CRD, PEERING_CRD, ROLLOUT_CRD)
    cluster.kubectl("create", "namespace", name)
    rbac = chart_rbac(cluster, name, "operator", *values)
    cluster.kubectl("apply", "-n", name, "-f", "-", stdin=rbac)
    return name


def chart_rbac(cluster: ControlPlane, namespace: str, component: str, *values: str) -> str:
    """The chart's ServiceAccount and Role of `component` (operator, router): the one source
    of the permissions the tests run with. `values`: `--set` flags, e.g. operator.shards=2."""
    return subprocess.run(
        [
            str(cluster.helm_binary),
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            namespace,
            "--show-only",
            f"templates/{component}-rbac.yaml",
            *(f"--set={value}" for value in values),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


class OperatorProcess:
    def __init__(
        self,
        cluster: ControlPlane,
        namespace: str,
        pod_env: dict[str, str],
        env: dict[str, str],
        log_path: Path,
        priority: int = 100,
        peering: str = "whatsapp-sessions",
    ) -> None:
        """Replicas peer through the KopfPeering `peering` (one per shard): the highest
        priority alive handles the resources, the others stand by."""
        self.cluster, self.namespace = cluster, namespace
        self.args = (pod_env, env)  # to start another replica the same way
        self.health = f"http://127.0.0.1:{free_port()}/healthz"
        kubeconfig = cluster.kubeconfig_for_service_account(namespace, OPERATOR_ACCOUNT)
        self.program = Program(
            "kopf",
            [
                "run",
                f"--peering={peering}",
                f"--priority={priority}",
                "-n",
                namespace,
                "-m",
                "whatsapp_operator.handlers",
                f"--liveness={self.health}",
                "--log-format=json",
            ],
            {
                "KUBECONFIG": str(kubeconfig),
                "SESSION_POD_ENV": json.dumps(pod_env),
                "PEERING_LIFETIME_SECONDS": "5",
                "BACKUP_MASTER_KEYS": TEST_MASTERS.to_text(),
                "POD_AUTH_MASTER_KEYS": TEST_POD_AUTH_MASTERS.to_text(),
                **env,
            },
            log_path,
        )
        try:
            wait_until(self._live, 60, "the operator to be live")
        except AssertionError as exc:
            self.program.kill()  # no fixture teardown runs for a start that failed
            raise AssertionError(f"{exc}\n{self.program.log_tail()}") from None

    def _live(self) -> bool:
        if not self.program.alive():
            raise AssertionError(f"the operator exited:\n{self.program.log_tail()}")
        return requests.get(self.health, timeout=2).ok

    def stop(self) -> None:
        self.program.stop()


def start_operator(
    cluster: ControlPlane,
    namespace: str,
    session_env: dict[str, str],
    s3: dict[str, str],
    log_path: Path,
    peering: str = "whatsapp-sessions",
    **env: str,
) -> OperatorProcess:
    """The operator of `namespace`, its session pods given `session_env` (the double's) and
    the S3 settings `s3` (its credentials through the Secret `whatsapp-sessions`)."""
    secrets = {k: v for k, v in s3.items() if k.startswith("AWS_")}
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "whatsapp-sessions",
        "-n",
        namespace,
        *(f"--from-literal={k}={v}" for k, v in secrets.items()),
    )
    pod_env = {
        **{k: v for k, v in s3.items() if not k.startswith("AWS_")},
        **session_env,
        "HEALTH_CHECK_INTERVAL_SECONDS": "1",
    }
    return OperatorProcess(cluster, namespace, pod_env, {**s3, **env}, log_path, peering=peering)


def get_session(cluster: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "whatsappsession", name, "-n", namespace, "-o", "json").stdout
    return json.loads(out)


def wait_phase(
    cluster: ControlPlane, namespace: str, name: str, phase: str, timeout: float = 60
) -> dict[str, Any]:
    return wait_until(
        lambda: (
            (s := get_session(cluster, namespace, name)).get("status", {}).get("phase") == phase
            and s
        ),
        timeout,
        f"{name} to be {phase}",
        interval=0.3,
    )


def wait_backup(
    cluster: ControlPlane, namespace: str, name: str, timeout: float = 60
) -> dict[str, Any]:
    """Until the session's status records a backup; returns that record."""
    return wait_until(
        lambda: get_session(cluster, namespace, name)["status"].get("lastBackup"),
        timeout,
        f"a backup of {name} in its status",
    )


def patch_spec(cluster: ControlPlane, namespace: str, name: str, spec: dict[str, Any]) -> None:
    body = json.dumps({"spec": spec})
    cluster.kubectl("patch", "whatsappsession", name, "-n", namespace, "--type=merge", "-p", body)


def pod_uid(cluster: ControlPlane, namespace: str, pod: str) -> str:
    """The pod's uid, or "" while there is none: a new uid means a new pod."""
    return cluster.kubectl(
        "get", "pod", pod, "-n", namespace, "-o", "jsonpath={.metadata.uid}", check=False
    ).stdout


def session_manifest(name: str, location: str, **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "whatsapp-sessions.io/v1alpha1",
            "kind": "WhatsAppSession",
            "metadata": {"name": name},
            "spec": {"locationId": location, **spec},
        }
    )


def qr_of(pod_ip: str, location: str) -> str:
    """The QR code the session pod at `pod_ip` offers, asked as the operator would."""
    return wait_until(
        lambda: (
            requests.get(f"http://{pod_ip}:8093/qr", headers=authorization(location), timeout=3)
            .json()
            .get("qr")
        ),
        30,
        "a QR from the session pod",
    )
