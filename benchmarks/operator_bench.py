"""Operator benchmarks on the tests' real control plane (etcd + kube-apiserver +
kube-controller-manager on 127.0.0.1):

1. time to reconcile N WhatsAppSessions into StatefulSets (no node: their pods stay
   Pending, so this measures the operator and the API, not Chromium);
2. the lag from a session pod's state change (the event's own time) to the resource's
   status.phase (seen through a kubectl watch), over scan -> ready -> remote logout cycles
   with one real session pod run by the test node against the WhatsApp Web double.

    python -m benchmarks.operator_bench [--sessions 200] [--cycles 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import requests

from tests.support.control_plane import ControlPlane, control_plane_binaries
from tests.support.operator import OperatorProcess, operator_namespace, session_manifest
from tests.support.processes import REPO, wait_until
from tests.support.session_pods import EventLog, authorization, new_phone, start_double
from tests.support.test_node import TestNode

PHASES = {
    "qr_required": "QRRequired",
    "authenticating": "Authenticating",
    "syncing": "Syncing",
    "ready": "Ready",
}


def reconcile_many(cluster: ControlPlane, work: Path, count: int) -> None:
    namespace = operator_namespace(cluster, "bench-many")
    operator = OperatorProcess(cluster, namespace, {}, {}, work / "operator-many.log")
    items = [json.loads(session_manifest(f"shop-{i}", f"{i}")) for i in range(count)]
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    started = time.monotonic()
    cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest, timeout=300)
    applied = time.monotonic() - started

    def statefulsets() -> int:
        out = cluster.kubectl("get", "statefulsets", "-n", namespace, "-o", "name").stdout
        return len(out.split())

    wait_until(lambda: statefulsets() == count, 600, f"{count} StatefulSets", interval=0.5)
    elapsed = time.monotonic() - started
    print(
        f"reconcile {count} WhatsAppSessions into StatefulSets: {elapsed:.1f} s "
        f"(of which kubectl apply: {applied:.1f} s)"
    )
    # Gone before the node of the next phase starts (it would run all their pods); the
    # operator must still run to release its finalizers.
    cluster.kubectl("delete", "whatsappsessions", "--all", "-n", namespace, timeout=600)
    wait_until(
        lambda: not cluster.kubectl("get", "pods", "-n", namespace, "-o", "name").stdout,
        300,
        "the pending pods to be gone",
        interval=1,
    )
    operator.stop()


class PhaseWatch:
    """Records when each new status.phase of one resource is seen, through kubectl --watch."""

    def __init__(self, cluster: ControlPlane, namespace: str, name: str) -> None:
        self.seen: list[tuple[float, str]] = []
        self._watch = subprocess.Popen(
            [
                str(cluster.kubectl_binary),
                f"--kubeconfig={cluster.admin_kubeconfig}",
                "get",
                "whatsappsession",
                name,
                "-n",
                namespace,
                "--watch",
                "-o",
                "jsonpath={.status.phase}{'\\n'}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._watch.stdout is not None
        for line in self._watch.stdout:
            phase = line.strip()
            if phase and (not self.seen or self.seen[-1][1] != phase):
                self.seen.append((time.time(), phase))

    def stop(self) -> None:
        self._watch.terminate()


def status_lag(cluster: ControlPlane, work: Path, cycles: int) -> None:
    namespace = operator_namespace(cluster, "bench-lag")
    double_program, double = start_double(work / "double.log")
    operator = OperatorProcess(
        cluster, namespace, double.session_env(), {}, work / "operator-lag.log"
    )
    with TestNode(cluster, work / "node", REPO) as node:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=session_manifest("lag", "201"))
        watch = PhaseWatch(cluster, namespace, "lag")
        node.wait_ready(namespace, "wa-201-0", timeout=120)
        pod_url = f"http://{node.pod_ip(namespace, 'wa-201-0')}:8093"
        auth = authorization("201")
        events = EventLog(pod_url, auth)
        for _ in range(cycles):
            phone = new_phone()
            code = wait_until(
                lambda: requests.get(f"{pod_url}/qr", headers=auth, timeout=3).json().get("qr"),
                30,
                "a QR",
            )
            double.scan(code, phone)
            wait_until(lambda: watch.seen and watch.seen[-1][1] == "Ready", 60, "Ready")
            double.control("POST", f"/phones/{phone}/logout")
            wait_until(lambda: watch.seen and watch.seen[-1][1] == "QRRequired", 60, "QR")
        lags = []
        for event in events.of_type("state"):
            phase = PHASES.get(event["data"]["state"])
            seen = next((t for t, p in watch.seen if p == phase and t >= event["at"]), None)
            if phase and seen is not None:
                lags.append(seen - event["at"])
        watch.stop()
        events.close()
    operator.stop()
    double_program.stop()
    lags.sort()
    print(
        f"state change -> status.phase lag over {len(lags)} transitions: "
        f"p50 {statistics.median(lags) * 1000:.0f} ms, "
        f"p95 {lags[int(0.95 * (len(lags) - 1))] * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="operator-bench-"))
    with ControlPlane(control_plane_binaries(), work / "cluster") as cluster:
        reconcile_many(cluster, work, args.sessions)
        status_lag(cluster, work, args.cycles)


if __name__ == "__main__":
    main()
