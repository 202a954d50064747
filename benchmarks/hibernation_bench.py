"""Hibernation benchmarks (README, Hibernation) on the tests' control plane, against the
WhatsApp Web double, with real S3 (SeaweedFS):

1. memory of asleep locations: N WhatsAppSessions with hibernation on, all asleep (their
   status written as the operator writes it), and the RSS of a freshly started operator and
   router holding them, against the same two with none (measured before any node runs, so
   no session pod starts);
2. wake-to-sent: a linked location asleep, then `POST /send_message` through the router (which
   holds the request while it wakes) until its 200, with the pod's volume kept (the usual
   wake) and with the volume lost (the login restored from S3); the process test node runs
   the pod (Chromium included) as local processes. Also the PSS of the awake pod, idle and
   linked, as `session_pod_bench` counts it;
3. the memory of 1,000 locations with 5 %, 20 % and 100 % of them awake, computed from 1
   and 2 (see `table`).

    python -m benchmarks.hibernation_bench [--locations 1000] [--wakes 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import requests
from kubernetes import client, config

from benchmarks.session_pod_bench import pss_mb
from tests.support.control_plane import ControlPlane, control_plane_binaries
from tests.support.operator import (
    OperatorProcess,
    get_session,
    operator_namespace,
    qr_of,
    session_manifest,
    start_operator,
    wait_phase,
)
from tests.support.processes import REPO, wait_until
from tests.support.router import RouterProcess
from tests.support.s3 import SeaweedS3
from tests.support.session_pods import Double, new_phone, start_double
from tests.support.test_node import TestNode

GROUP, VERSION, PLURAL = "whatsapp-sessions.io", "v1alpha1", "whatsappsessions"
HIBERNATION = {"enabled": True, "idleSeconds": 10, "wakeIntervalSeconds": 86400}
MB = 2**20


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MB


def settled_rss(pid: int, seconds: float = 10) -> float:
    """The RSS once it stops moving (the lowest of the last few seconds' samples)."""
    samples = []
    for _ in range(int(seconds)):
        time.sleep(1)
        samples.append(rss_mb(pid))
    return min(samples[-3:])


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def asleep_costs(cluster: ControlPlane, work: Path, count: int) -> dict[str, float]:
    """RSS of the operator and the router with `count` asleep locations, and without any."""
    namespace = operator_namespace(cluster, "hba")
    api = client.CustomObjectsApi(config.new_client_from_config(str(cluster.admin_kubeconfig)))

    def fresh() -> tuple[OperatorProcess, RouterProcess]:
        operator = OperatorProcess(cluster, namespace, {}, {}, work / f"op-{time.time()}.log")
        router = RouterProcess(cluster, namespace, work / f"router-{time.time()}.log")
        return operator, router

    operator, router = fresh()
    empty = {
        "operator": settled_rss(operator.program.pid),
        "router": settled_rss(router.program.pid),
    }
    items = [
        json.loads(session_manifest(f"shop-{i}", f"{i}", paused=True, hibernation=HIBERNATION))
        for i in range(count)
    ]
    cluster.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        timeout=600,
    )
    operator.stop()  # asleep as the operator would have left them, written while it is away
    since = time.time() - 60
    for i in range(count):
        record = {
            "state": "Hibernating",
            "since": iso(since),
            "reason": "idle",
            "nextWake": iso(since + 86400)[:19] + "Z",
        }
        status = {"phase": "Hibernating", "hibernation": record}
        api.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, f"shop-{i}", {"status": status}
        )
    patch = json.dumps({"spec": {"paused": False}})
    for i in range(count):
        api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, f"shop-{i}", json.loads(patch)
        )
    router.stop()
    operator, router = fresh()

    def zero_replicas() -> bool:
        out = cluster.kubectl(
            "get", "statefulsets", "-n", namespace, "-o", "jsonpath={.items[*].spec.replicas}"
        ).stdout.split()
        return len(out) == count and set(out) == {"0"}

    wait_until(zero_replicas, 900, f"{count} asleep StatefulSets at 0 replicas", interval=2)
    full = {
        "operator": settled_rss(operator.program.pid),
        "router": settled_rss(router.program.pid),
    }
    phases = cluster.kubectl(
        "get", PLURAL, "-n", namespace, "-o", "jsonpath={.items[*].status.phase}"
    ).stdout.split()
    assert phases.count("Hibernating") == count, set(phases)
    operator.stop()
    router.stop()
    per = {k: (full[k] - empty[k]) / count for k in full}
    print(
        f"asleep locations: {count}; operator RSS {empty['operator']:.0f} ->"
        f" {full['operator']:.0f} MiB,"
        f" router RSS {empty['router']:.0f} -> {full['router']:.0f} MiB;"
        f" per asleep location: operator {per['operator'] * 1024:.0f} KiB,"
        f" router {per['router'] * 1024:.0f} KiB"
    )
    return {"empty_operator": empty["operator"], "empty_router": empty["router"], **per}


def pod_times(node: TestNode, namespace: str, pod: str, after: float) -> tuple[float, float]:
    """(when the pod's process listened, when its session was ready) after `after`, from its
    log."""
    listening = ready = None
    for line in node.log_path(namespace, pod, "session").read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        at = datetime.fromisoformat(entry.get("ts", "1970-01-01T00:00:00Z")).timestamp()
        if at < after:
            continue
        if entry.get("msg") == "listening" and listening is None:
            listening = at
        elif entry.get("new") == "ready" and listening is not None and ready is None:
            ready = at
    assert listening is not None and ready is not None, "the pod's log says no start"
    return listening, ready


class PodWatch:
    """When each pod (by uid) of the namespace was first seen, through kubectl --watch: the
    StatefulSet controller's part of a wake."""

    def __init__(self, cluster: ControlPlane, namespace: str) -> None:
        self.first_seen: dict[str, float] = {}
        self._watch = subprocess.Popen(
            [
                str(cluster.kubectl_binary),
                f"--kubeconfig={cluster.admin_kubeconfig}",
                "get",
                "pods",
                "-n",
                namespace,
                "--watch",
                "-o",
                "jsonpath={.metadata.uid}{'\\n'}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._watch.stdout is not None
        for line in self._watch.stdout:
            self.first_seen.setdefault(line.strip(), time.time())

    def created_after(self, at: float) -> float:
        return min(t for t in self.first_seen.values() if t >= at)

    def stop(self) -> None:
        self._watch.terminate()
        self._watch.wait(10)


def pod_pss(node: TestNode, namespace: str, pod: str) -> float:
    root = psutil.Process(node.pid(namespace, pod))
    return pss_mb([root, *root.children(recursive=True)])


def wakes(
    cluster: ControlPlane, node: TestNode, double: Double, s3: SeaweedS3, work: Path, count: int
) -> float:
    """Wake-to-sent, volume kept and volume lost; returns the awake pod's PSS (MiB)."""
    namespace = operator_namespace(cluster, "hbw")
    session_env = {**double.session_env(), "IDLE_CHECK_SECONDS": "0.5"}
    operator = start_operator(
        cluster, namespace, session_env, {**s3.env(), "S3_PREFIX": "bench-wake"}, work / "op.log"
    )
    router = RouterProcess(
        cluster,
        namespace,
        work / "router.log",
        WAKE_HOLD_SECONDS="60",
        UPSTREAM_TIMEOUT_SECONDS="40",
    )
    name, location, receiver = "bench", "401", "5491155554010"
    double.register(receiver)
    manifest = session_manifest(name, location, hibernation=HIBERNATION)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)
    wait_phase(cluster, namespace, name, "QRRequired", timeout=120)
    phone = new_phone()
    double.scan(qr_of(node.pod_ip(namespace, f"wa-{location}-0"), location), phone)
    wait_phase(cluster, namespace, name, "Ready", timeout=60)
    time.sleep(5)  # synced, first backup taken: what an idle linked pod holds
    pss = pod_pss(node, namespace, f"wa-{location}-0")
    print(f"awake pod, idle and linked: {pss:.0f} MiB PSS (Python, driver, every Chromium process)")

    def asleep_since(after: str) -> str:
        def check() -> str | None:
            session = get_session(cluster, namespace, name)
            since = (session["status"].get("hibernation") or {}).get("since", "")
            gone = node.pid(namespace, f"wa-{location}-0") is None
            return (
                since
                if session["status"].get("phase") == "Hibernating" and since > after and gone
                else None
            )

        return wait_until(check, 180, "the location asleep", interval=0.3)

    slept = asleep_since("")
    pods = PodWatch(cluster, namespace)
    for volume in ("kept", "lost"):
        totals, decisions, created, listening, ready, sent = [], [], [], [], [], []
        for n in range(count):
            if volume == "lost":
                shutil.rmtree(node.pvc_path(namespace, f"data-wa-{location}-0"))
            text = f"wake {volume} {n} {time.time()}"
            body = {"location_identifier": location, "receiver_phone": receiver, "message": text}
            started = time.time()
            answer = requests.post(
                f"{router.url}/send_message", json=body, headers=router.auth, timeout=120
            )
            answered = time.time()
            totals.append(answered - started)
            assert answer.status_code == 200, answer.text
            status = get_session(cluster, namespace, name)["status"]
            woken = datetime.fromisoformat(status["hibernation"]["since"]).timestamp()
            decisions.append(woken - started)
            up, at_ready = pod_times(node, namespace, f"wa-{location}-0", started)
            made = pods.created_after(woken)
            created.append(made - woken)
            listening.append(up - made)
            ready.append(at_ready - up)
            sent.append(answered - at_ready)
            slept = asleep_since(slept)
        print(
            f"wake-to-sent, volume {volume} ({count} wakes):"
            f" median {statistics.median(totals):.2f} s,"
            f" min {min(totals):.2f} s, max {max(totals):.2f} s. Medians of the parts: request ->"
            f" the operator's wake {statistics.median(decisions) * 1000:.0f} ms, -> the pod object"
            f" {statistics.median(created):.2f} s (max {max(created):.2f} s; StatefulSet"
            f" controller), -> its process listening {statistics.median(listening):.2f} s (max"
            f" {max(listening):.2f} s; node, Python),"
            f" -> session ready {statistics.median(ready):.2f} s (restore, Chromium, WhatsApp"
            f" Web), -> 200 {statistics.median(sent) * 1000:.0f} ms (the router sees Ready,"
            f" the send)"
        )
    pods.stop()
    router.stop()
    operator.stop()
    return pss


def table(locations: int, pss: float, costs: dict[str, float]) -> None:
    """total = awake x the pod's PSS + every location x (operator + router per location) +
    the operator's and router's own base. An awake location's operator cost is taken as an
    asleep one's (its /events stream is not in it; see README, operator at scale)."""
    per_location = costs["operator"] + costs["router"]
    base = costs["empty_operator"] + costs["empty_router"]
    print(
        f"\nmemory of {locations} locations (pod {pss:.0f} MiB; control per location"
        f" {per_location * 1024:.0f} KiB; operator + router base {base:.0f} MiB):"
    )
    print("| awake | pods | asleep | session pods | operator + router | total |")
    print("| --- | --- | --- | --- | --- | --- |")
    for share in (0.05, 0.20, 1.00):
        awake = round(locations * share)
        pods = awake * pss
        control = base + locations * per_location
        print(
            f"| {share:.0%} | {awake} | {locations - awake} | {pods / 1024:.1f} GiB |"
            f" {control:.0f} MiB | {(pods + control) / 1024:.1f} GiB |"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--locations", type=int, default=1000, help="0: wakes only")
    parser.add_argument("--wakes", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hibernation-bench-"))
    double_program, double = start_double(work / "double.log")
    try:
        with (
            SeaweedS3(work / "s3") as s3,
            ControlPlane(control_plane_binaries(), work / "control-plane") as cluster,
        ):
            costs = asleep_costs(cluster, work, args.locations) if args.locations else None
            with TestNode(cluster, work / "node", REPO) as node:
                pss = wakes(cluster, node, double, s3, work, args.wakes)
            if costs is not None:
                table(args.locations, pss, costs)
    finally:
        double_program.stop()


if __name__ == "__main__":
    main()
