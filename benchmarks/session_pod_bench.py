"""Session pod benchmarks against the WhatsApp Web double (real pod process, real Chromium).

Prints: start-to-ready time of an already linked profile, /send_message latency (p50/p99)
and throughput through one session, and the memory of the whole pod (every process by role:
the Python process, the Playwright driver, every Chromium process; and the pod's own memory
cgroup, see benchmarks/pod_memory.py): idle, idle beside --fleet - 1 more linked pods (what
each costs when pods share a node's binaries), after N messages, and, with --traffic-minutes,
during simulated traffic (customers writing, the pod sending, acks coming back, webhooks to
a receiver standing in for Rails) sampled every --sample-minutes. Run from the repository
root:
    python -m benchmarks.session_pod_bench [--messages 1000] [--traffic-minutes 60]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from benchmarks.pod_memory import PodCgroup, measure_pods, measure_tree
from session_pod.config import Settings
from tests.support.processes import wait_until
from tests.support.rails import RailsReceiver
from tests.support.session_pods import Double, SessionPod, new_phone, start_double

# Measure the session itself, not the anti-ban send rate limit (60/min by default).
UNLIMITED = {"SEND_RATE_PER_MINUTE": "0"}
CUSTOMERS = 20


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def chromium_version() -> str:
    """The default browser's path and version (the benchmark runs the pod's defaults)."""
    path = Settings.chromium_path
    version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    return f"{path}: {version.strip()}"


class Bench:
    def __init__(self, work: Path, double: Double, rails: RailsReceiver) -> None:
        self.work, self.double = work, double
        self.env = {**UNLIMITED, **rails.env("bench")}
        self.cgroup: PodCgroup | None = None
        self.pod: SessionPod | None = None

    def start(self) -> float:
        """Starts the pod on the linked profile in a cgroup of its own; seconds to ready."""
        self.stop()
        self.cgroup = PodCgroup.available("pod-bench")
        started = time.monotonic()
        join = self.cgroup.join if self.cgroup else None
        self.pod = SessionPod("bench", self.work / "pod", self.double, self.env, join)
        self.pod.wait_state("ready", timeout=60)
        return time.monotonic() - started

    def memory(self, title: str) -> None:
        assert self.pod is not None
        print(measure_tree(self.pod.program.pid, self.cgroup).report(title), flush=True)

    def stop(self) -> None:
        if self.pod is not None:
            self.pod.stop()
            self.pod = None
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None


def fleet(bench: Bench, size: int) -> None:
    """`size` linked, idle pods on this machine, measured together: each page divided among
    all their processes that map it, as on a node running that many session pods."""
    assert bench.pod is not None
    pods: list[tuple[SessionPod, PodCgroup | None]] = [(bench.pod, bench.cgroup)]
    try:
        for n in range(1, size):
            cgroup = PodCgroup.available(f"pod-fleet-{n}")
            join = cgroup.join if cgroup else None
            pod = SessionPod(f"fleet{n}", bench.work / f"fleet{n}", bench.double, bench.env, join)
            pods.append((pod, cgroup))
            pod.link(bench.double, new_phone())
        time.sleep(10)
        measured = measure_pods([p.program.pid for p, _ in pods], [c for _, c in pods])
        for n, memory in enumerate(measured):
            title = f"idle, pod {n + 1} of {size} on the machine (pages divided among all {size})"
            print(memory.report(title), flush=True)
    finally:
        for pod, cgroup in pods[1:]:
            pod.stop()
            if cgroup:
                cgroup.remove()


def send_messages(pod: SessionPod, receiver: str, count: int) -> None:
    body = {"location_identifier": "bench", "receiver_phone": receiver, "message": "bench"}
    latencies = []
    session = requests.Session()
    session.headers.update(pod.auth)
    started = time.monotonic()
    for _ in range(count):
        t0 = time.perf_counter()
        response = session.post(f"{pod.url}/send_message", json=body, timeout=30)
        latencies.append((time.perf_counter() - t0) * 1000)
        assert response.ok, response.text
    elapsed = time.monotonic() - started
    print(
        f"/send_message sequential x{count}: p50 {percentile(latencies, 0.5):.1f} ms,"
        f" p99 {percentile(latencies, 0.99):.1f} ms, {count / elapsed:.0f} msg/s",
        flush=True,
    )
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda _: session.post(
                    f"{pod.url}/send_message", json=body, timeout=60
                ).raise_for_status(),
                range(200),
            )
        )
    print(f"/send_message 8 concurrent x200: {200 / (time.monotonic() - started):.0f} msg/s")


def traffic(
    bench: Bench, phone: str, customers: list[str], rails: RailsReceiver, args: argparse.Namespace
) -> None:
    """Customers write and the pod answers, one of each every --traffic-every seconds."""
    pod = bench.pod
    assert pod is not None
    session = requests.Session()
    session.headers.update(pod.auth)
    written: list[str] = []
    sent = 0
    started = time.monotonic()
    next_sample = started + args.sample_minutes * 60
    end = started + args.traffic_minutes * 60
    for n, customer in zip(itertools.count(1), itertools.cycle(customers), strict=False):
        now = time.monotonic()
        if now >= end:
            break
        message = {"from": customer, "body": f"hola {n}"}
        written.append(bench.double.control("POST", f"/phones/{phone}/incoming", message)["id"])
        body = {"location_identifier": "bench", "receiver_phone": customer, "message": f"turno {n}"}
        response = session.post(f"{pod.url}/send_message", json=body, timeout=60)
        sent += response.ok
        if now >= next_sample:
            next_sample += args.sample_minutes * 60
            minutes = (now - started) / 60
            bench.memory(f"traffic, {minutes:.0f} min: {len(written)} in, {sent} out")
        time.sleep(max(0.0, started + n * args.traffic_every - time.monotonic()))
    wait_until(
        lambda: {e["event_id"] for e in rails.events("message")} >= set(written),
        120,
        "every customer message at the receiver",
    )
    acks = len(rails.events("message_ack"))
    bench.memory(
        f"after {args.traffic_minutes:g} min of traffic: {len(written)} customer messages (all"
        f" at the receiver), {sent} sends, {acks} ack webhooks"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--fleet", type=int, default=4, help="pods measured together, idle")
    parser.add_argument("--traffic-minutes", type=float, default=0)
    parser.add_argument("--traffic-every", type=float, default=2.0, help="seconds")
    parser.add_argument("--sample-minutes", type=float, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pod-bench-"))
    double_program, double = start_double(work / "double.log")
    rails = RailsReceiver()
    rails.start()
    phone, customers = new_phone(), [new_phone() for _ in range(CUSTOMERS)]
    double.register(*customers)
    bench = Bench(work, double, rails)
    try:
        pod = SessionPod("bench", work / "pod", double, bench.env)
        pod.link(double, phone)
        pod.stop()
        ready_times = [bench.start() for _ in range(args.restarts)]
        assert bench.pod is not None
        print(f"{chromium_version()}; pod cgroup: {bench.cgroup and bench.cgroup.path}")
        print(
            f"start-to-ready (linked profile), median of {args.restarts}: "
            f"{statistics.median(ready_times):.2f} s (all: {[round(t, 2) for t in ready_times]})"
        )
        time.sleep(10)
        bench.memory("idle")
        if args.fleet > 1:
            fleet(bench, args.fleet)
        send_messages(bench.pod, customers[0], args.messages)
        time.sleep(10)
        bench.memory(f"after {args.messages + 200} messages")
        if args.traffic_minutes:
            traffic(bench, phone, customers, rails, args)
    finally:
        bench.stop()
        rails.stop()
        double_program.stop()


if __name__ == "__main__":
    main()
