"""The operator at scale on the tests' real control plane (issue 20): N WhatsAppSessions
whose session pods are simulated (Pod objects made Running with loopback IPs, one process
serving every pod's /events; no browser runs). Prints:

1. the time to create N resources and get their N StatefulSets and Services;
2. over a quiet minute: the operator's CPU and RSS, and API requests per second (from the
   API server's apiserver_request_total, WATCH excluded, and the operator's own from the
   audit log);
3. state change on a pod -> status.phase seen by a watch, p50 and p99, while 5 % of the
   sessions change state every second;
4. after an operator restart (5 % of the states changed while it was down): the time until
   every status is fresh again, and the status patches it sent;
5. a fleet rollout (issue 22): the operator restarted with a new session image and
   `maxUnavailable` 5 %, the time until every location is back on its new pod (each
   simulated pod takes `--pod-start` seconds from its creation to Running), the most
   locations in flight at once, the operator's requests and CPU.

With `--shards N`, N operators run, one per shard (the chart's operator.shards), each
resource labelled with its shard as the router labels it; CPU and RSS are printed per shard.

    python -m benchmarks.operator_scale [--sessions 1000] [--shards 1] [--quiet 60]
        [--churn 30] [--pod-start 5] [--only-rollout] [--block 77]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import requests
from kubernetes import client, config, watch

from tests.support.control_plane import ControlPlane, control_plane_binaries
from tests.support.operator import (
    OPERATOR_ACCOUNT,
    OperatorProcess,
    operator_namespace,
    start_operator,
)
from tests.support.processes import wait_until
from tests.support.simulated_pods import PodStatus, SimulatedKubelet, SimulatedPods, address
from whatsapp_common.crd import GROUP, PLURAL, ROLLOUT_NAME, ROLLOUT_PLURAL, VERSION
from whatsapp_common.sharding import SHARD_LABEL, shard_name, shard_of

STATES = {"ready": "Ready", "disconnected": "Disconnected"}
REQUEST_LINE = re.compile(r"^apiserver_request_total\{(.*)\} ([0-9.e+]+)$")


class Cluster:
    """The admin's view: clients, the API server's metrics, the operator's audit trail."""

    def __init__(self, cluster: ControlPlane, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        api = config.new_client_from_config(str(cluster.admin_kubeconfig))
        api.configuration.connection_pool_maxsize = 32
        self.core, self.apps = client.CoreV1Api(api), client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        cert = api.configuration.cert_file, api.configuration.key_file
        self._metrics = {"cert": cert, "verify": api.configuration.ssl_ca_cert}
        self.user = f"system:serviceaccount:{namespace}:{OPERATOR_ACCOUNT}"

    def count(self, kind: str) -> int:
        lister = {
            "statefulsets": lambda: self.apps.list_namespaced_stateful_set(self.namespace),
            "services": lambda: self.core.list_namespaced_service(self.namespace),
            "pods": lambda: self.core.list_namespaced_pod(self.namespace),
        }[kind]
        return len(lister().items)

    def sessions(self) -> list[dict[str, Any]]:
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)[
            "items"
        ]

    def requests_total(self) -> float:
        """Every request the API server has answered, watches excluded."""
        text = requests.get(f"{self.cluster.server}/metrics", timeout=30, **self._metrics).text
        total = 0.0
        for line in text.splitlines():
            match = REQUEST_LINE.match(line)
            if match and 'verb="WATCH"' not in match.group(1):
                total += float(match.group(2))
        return total

    def operator_requests(self) -> list[dict[str, Any]]:
        return self.cluster.audit_events(self.user)


def create_sessions(cluster: Cluster, count: int, shards: int) -> None:
    def create(i: int) -> None:
        labels = {SHARD_LABEL: shard_of(str(i), shards)} if shards > 1 else {}
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "WhatsAppSession",
            "metadata": {"name": f"shop-{i}", "labels": labels},
            "spec": {"locationId": str(i)},
        }
        cluster.custom.create_namespaced_custom_object(
            GROUP, VERSION, cluster.namespace, PLURAL, body
        )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, range(count)))


def phases(cluster: Cluster) -> dict[str, str]:
    return {
        s["metadata"]["name"]: (s.get("status") or {}).get("phase", "") for s in cluster.sessions()
    }


class PhaseWatch:
    """When each resource's status.phase was seen to change (a watch of the admin's)."""

    def __init__(self, cluster: Cluster) -> None:
        self.seen: list[tuple[float, str, str]] = []  # (time, name, phase)
        self._cluster = cluster
        self._stop = threading.Event()
        version = cluster.custom.list_namespaced_custom_object(
            GROUP, VERSION, cluster.namespace, PLURAL, limit=1
        )["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._run, args=(version,), daemon=True)
        self._thread.start()

    def _run(self, version: str) -> None:
        stream = watch.Watch()
        for event in stream.stream(
            self._cluster.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self._cluster.namespace,
            PLURAL,
            resource_version=version,
            timeout_seconds=600,
        ):
            if self._stop.is_set():
                return
            obj = event["object"]
            phase = (obj.get("status") or {}).get("phase", "")
            self.seen.append((time.time(), obj["metadata"]["name"], phase))

    def stop(self) -> None:
        self._stop.set()


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(verb, resource) of the audit events, each once."""
    return sorted({(e["verb"], e.get("objectRef", {}).get("resource", "")) for e in events})


def breakdown(events: list[dict[str, Any]]) -> dict[str, int]:
    """How many of each (verb resource/subresource)."""
    counts: dict[str, int] = {}
    for e in events:
        ref = e.get("objectRef", {})
        key = f"{e['verb']} {ref.get('resource', e.get('requestURI', ''))}"
        key += f"/{ref['subresource']}" if ref.get("subresource") else ""
        counts[key] = counts.get(key, 0) + 1
    return counts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Bench:
    """One run: the simulated pods, the cluster, the operator, and what each session's
    state is now."""

    def __init__(
        self, control_plane: ControlPlane, n: int, shards: int, work: Path, block: int = 77
    ) -> None:
        self.n, self.shards, self.work = n, shards, work
        self.ips = [address(i, block) for i in range(n)]
        self.pods = SimulatedPods({ip: str(i) for i, ip in enumerate(self.ips)})
        self.state = {i: "ready" for i in range(n)}
        for i in range(n):
            self.emit(i)
        namespace = operator_namespace(control_plane, "scale", f"operator.shards={shards}")
        self.control_plane = control_plane
        self.cluster = Cluster(control_plane, namespace)
        # The chart's peering lifetime: kopf renews its peering record every lifetime - 10 s.
        first = start_operator(
            control_plane,
            namespace,
            {},
            {},
            work / "operator-0.log",
            peering=self.peering(0),
            PEERING_LIFETIME_SECONDS="60",
            **self.shard_env(0),
        )
        self.operators = [first]
        for index in range(1, shards):
            self.operators.append(self.start_shard(index, "started"))

    def peering(self, index: int) -> str:
        return f"whatsapp-sessions-shard-{index}" if self.shards > 1 else "whatsapp-sessions"

    def shard_env(self, index: int) -> dict[str, str]:
        return {"SHARD": shard_name(index)} if self.shards > 1 else {}

    def start_shard(self, index: int, why: str) -> OperatorProcess:
        pod_env, env = self.operators[0].args
        return OperatorProcess(
            self.control_plane,
            self.cluster.namespace,
            pod_env,
            {**env, **self.shard_env(index)},
            self.work / f"operator-{index}-{why}.log",
            peering=self.peering(index),
        )

    def emit(self, i: int) -> float:
        return self.pods.state(self.ips[i], self.state[i], phone=f"1555{i:07d}")

    def flip(self, i: int) -> float:
        self.state[i] = "disconnected" if self.state[i] == "ready" else "ready"
        return self.emit(i)

    @property
    def processes(self) -> list[psutil.Process]:
        """One operator per shard."""
        return [psutil.Process(operator.program.pid) for operator in self.operators]

    def close(self) -> None:
        for operator in self.operators:
            operator.stop()
        self.pods.stop()


def cpu_seconds(processes: list[psutil.Process]) -> list[float]:
    return [sum(process.cpu_times()[:2]) for process in processes]


def per_shard(processes: list[psutil.Process], cpu: list[float], seconds: float) -> str:
    """Each operator's CPU over `seconds` (from `cpu`, the seconds before) and RSS now."""
    now = cpu_seconds(processes)
    return ", ".join(
        f"{100 * (after - before) / seconds:.1f} % of a core / "
        f"{process.memory_info().rss / 2**20:.0f} MiB"
        for process, before, after in zip(processes, cpu, now, strict=True)
    )


def create_all(bench: Bench) -> None:
    n, cluster = bench.n, bench.cluster
    started = time.monotonic()
    create_sessions(cluster, n, bench.shards)
    created = time.monotonic() - started
    wait_until(
        lambda: cluster.count("statefulsets") == n and cluster.count("services") == n,
        1200,
        f"{n} StatefulSets and Services",
        interval=1,
    )
    print(
        f"create {n} resources -> {n} StatefulSets + Services: "
        f"{time.monotonic() - started:.1f} s (creating the resources: {created:.1f} s)"
    )
    wait_until(lambda: cluster.count("pods") == n, 1800, f"{n} pods", interval=2)
    status = PodStatus(str(bench.control_plane.admin_kubeconfig), cluster.namespace, workers=16)
    running = time.monotonic()
    status.all_running({f"wa-{i}-0": ip for i, ip in enumerate(bench.ips)})
    wait_until(
        lambda: list(phases(cluster).values()).count("Ready") == n,
        600,
        "every session Ready",
        interval=2,
    )
    print(f"pods made Running -> all {n} statuses Ready: {time.monotonic() - running:.1f} s")


def quiet(bench: Bench, seconds: float) -> None:
    time.sleep(10)  # let the controllers settle
    processes, cluster = bench.processes, bench.cluster
    cpu0, total0 = cpu_seconds(processes), cluster.requests_total()
    ours0 = len(cluster.operator_requests())
    time.sleep(seconds)
    total1 = cluster.requests_total()
    ours = cluster.operator_requests()[ours0:]
    print(
        f"quiet {seconds:.0f} s: operator CPU / RSS per shard "
        f"{per_shard(processes, cpu0, seconds)}; API requests/s (WATCH excluded): "
        f"all clients {(total1 - total0 - 1) / seconds:.2f}, the operators "
        f"{len(ours) / seconds:.3f} {kinds(ours)}"
    )


def churn(bench: Bench, seconds: float, share: float) -> None:
    watcher = PhaseWatch(bench.cluster)
    changes: list[tuple[float, str, str]] = []
    per_second = max(1, int(bench.n * share))
    processes = bench.processes
    cpu0 = cpu_seconds(processes)
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        tick = time.monotonic()
        for i in random.sample(range(bench.n), per_second):
            at = bench.flip(i)
            changes.append((at, f"shop-{i}", STATES[bench.state[i]]))
        time.sleep(max(0.0, 1 - (time.monotonic() - tick)))
    shard_figures = per_shard(processes, cpu0, seconds)
    time.sleep(5)
    watcher.stop()
    by_name: dict[str, list[tuple[float, str]]] = {}
    for t, name, phase in watcher.seen:
        by_name.setdefault(name, []).append((t, phase))
    lags, missing = [], 0
    for at, name, phase in changes:
        seen = next((t for t, p in by_name.get(name, []) if p == phase and t >= at), None)
        if seen is None:
            missing += 1
        else:
            lags.append(seen - at)
    print(
        f"churn {per_second} state changes/s for {seconds:.0f} s ({len(changes)}): "
        f"state -> status.phase p50 {statistics.median(lags) * 1000:.0f} ms, "
        f"p99 {percentile(lags, 0.99) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms, "
        f"not seen {missing}; operator CPU / RSS per shard {shard_figures}"
    )


def restart(bench: Bench, share: float) -> None:
    time.sleep(5)
    for operator in bench.operators:
        operator.stop()
    changed = random.sample(range(bench.n), max(1, int(bench.n * share)))
    for i in changed:
        bench.flip(i)
    expected = {f"shop-{i}": STATES[s] for i, s in bench.state.items()}
    before = len(bench.cluster.operator_requests())
    started = time.monotonic()
    bench.operators = [bench.start_shard(i, "restarted") for i in range(bench.shards)]
    wait_until(lambda: phases(bench.cluster) == expected, 600, "every status fresh", interval=0.5)
    fresh = time.monotonic() - started
    sent = bench.cluster.operator_requests()[before:]
    counts = breakdown(sent)
    print(
        f"operator restart ({len(changed)} states changed while down): every status fresh "
        f"after {fresh:.1f} s, {counts.get('patch whatsappsessions/status', 0)} status "
        f"patches, {len(sent)} requests in all {counts}"
    )


def rollout(bench: Bench, pod_start: float) -> None:
    """The operator restarted with a new session image: the fleet rolls in waves of 5 %."""
    time.sleep(5)
    cluster, n = bench.cluster, bench.n
    kubelet = SimulatedKubelet(
        str(bench.control_plane.admin_kubeconfig),
        cluster.namespace,
        {f"wa-{i}-0": ip for i, ip in enumerate(bench.ips)},
        pod_start,
    )
    assert bench.shards == 1, "the rollout is timed with one operator (one rollout record)"
    (operator,) = bench.operators
    operator.stop()
    pod_env, env = operator.args
    env = {
        **env,
        "SESSION_IMAGE": "ghcr.io/whatsapp-sessions/session-pod:next",
        "ROLLOUT_CANARY": "1",
        "ROLLOUT_MAX_UNAVAILABLE": "5%",
    }
    stable = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, cluster.namespace, ROLLOUT_PLURAL, ROLLOUT_NAME
    )["status"]["target"]
    before = len(cluster.operator_requests())
    started = time.monotonic()
    bench.operators = [
        OperatorProcess(
            bench.control_plane,
            cluster.namespace,
            pod_env,
            env,
            bench.work / "operator-rollout.log",
        )
    ]
    (process,) = bench.processes
    cpu0 = sum(process.cpu_times()[:2])
    load0 = os.getloadavg()[0]
    most, record = 0, {}

    def complete() -> bool:
        nonlocal most, record
        record = cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, cluster.namespace, ROLLOUT_PLURAL, ROLLOUT_NAME
        )["status"]
        most = max(most, len(record.get("inFlight") or []))
        return record["target"] != stable and record["phase"] == "Complete"

    wait_until(complete, 3600, "the rollout to complete", interval=0.5)
    took = time.monotonic() - started
    assert record["counts"]["updated"] == n, record["counts"]
    cpu = sum(process.cpu_times()[:2]) - cpu0
    kubelet.stop()
    counts = breakdown(cluster.operator_requests()[before:])
    print(
        f"rollout of {n} locations, maxUnavailable 5 % ({n * 5 // 100}), pods Running "
        f"{pod_start:g} s after creation: {took:.1f} s from the operator's restart "
        f"({n / took * 60:.0f} locations/min), at most {most} in flight; operator CPU "
        f"{cpu:.1f} s, {sum(counts.values())} requests {counts}; machine load average "
        f"{load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--quiet", type=float, default=60)
    parser.add_argument("--churn", type=float, default=30)
    parser.add_argument("--churn-share", type=float, default=0.05)
    parser.add_argument("--pod-start", type=float, default=5)
    parser.add_argument("--only-rollout", action="store_true")
    # The simulated pods' addresses, 127.<block>.x.y: another block lets two runs share a machine.
    parser.add_argument("--block", type=int, default=77)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="operator-scale-"))
    with ControlPlane(control_plane_binaries(), work / "cluster") as control_plane:
        bench = Bench(control_plane, args.sessions, args.shards, work, args.block)
        print(
            f"{args.sessions} WhatsAppSessions, {args.shards} operator shard(s), simulated pods;"
            f" logs in {work}"
        )
        try:
            create_all(bench)
            if not args.only_rollout:
                quiet(bench, args.quiet)
                churn(bench, args.churn, args.churn_share)
                restart(bench, args.churn_share)
            if args.shards == 1:
                rollout(bench, args.pod_start)
        finally:
            bench.close()


if __name__ == "__main__":
    main()
