"""Session pod benchmarks against the WhatsApp Web double (real pod process, real Chromium).

Prints: start-to-ready time of an already linked profile, /send_message latency (p50/p99)
and throughput through one session, and the PSS of the whole pod (the Python process, the
Playwright driver and every Chromium process) idle and after N messages. Run from the
repository root:
    python -m benchmarks.session_pod_bench [--messages 1000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

from tests.support.session_pods import SessionPod, new_phone, start_double

# Measure the session itself, not the anti-ban send rate limit (60/min by default).
UNLIMITED = {"SEND_RATE_PER_MINUTE": "0"}


def pss_mb(processes: list[psutil.Process]) -> float:
    total = 0
    for process in processes:
        try:
            total += process.memory_full_info().pss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def pod_memory(pod: SessionPod) -> str:
    """PSS of every process of the pod, by part: what the kernel bills the pod for."""
    root = psutil.Process(pod.program.pid)
    parts: dict[str, list[psutil.Process]] = {"python": [root], "driver": [], "chromium": []}
    for child in root.children(recursive=True):
        name = child.name()
        part = "chromium" if "chrom" in name else "driver" if name.startswith("node") else "python"
        parts[part].append(child)
    sizes = {part: pss_mb(processes) for part, processes in parts.items()}
    counts = {part: len(processes) for part, processes in parts.items()}
    detail = ", ".join(f"{part} {sizes[part]:.0f} MB ({counts[part]} proc)" for part in parts)
    return f"whole pod {sum(sizes.values()):.0f} MB PSS: {detail}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--restarts", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pod-bench-"))
    double_program, double = start_double(work / "double.log")
    phone, receiver = new_phone(), new_phone()
    double.register(receiver)
    try:
        pod = SessionPod("bench", work / "pod", double, UNLIMITED)
        pod.link(double, phone)
        pod.stop()

        ready_times = []
        for _ in range(args.restarts):
            started = time.monotonic()
            pod = SessionPod("bench", work / "pod", double, UNLIMITED)
            pod.wait_state("ready", timeout=60)
            ready_times.append(time.monotonic() - started)
            if len(ready_times) < args.restarts:
                pod.stop()
        print(
            f"start-to-ready (linked profile), median of {args.restarts}: "
            f"{statistics.median(ready_times):.2f} s (all: {[round(t, 2) for t in ready_times]})"
        )

        time.sleep(5)
        print(f"idle: {pod_memory(pod)}")

        body = {"location_identifier": "bench", "receiver_phone": receiver, "message": "bench"}
        latencies = []
        session = requests.Session()
        started = time.monotonic()
        for _ in range(args.messages):
            t0 = time.perf_counter()
            response = session.post(f"{pod.url}/send_message", json=body, timeout=30)
            latencies.append((time.perf_counter() - t0) * 1000)
            assert response.ok, response.text
        elapsed = time.monotonic() - started
        print(
            f"/send_message sequential x{args.messages}: p50 {percentile(latencies, 0.5):.1f} ms,"
            f" p99 {percentile(latencies, 0.99):.1f} ms, {args.messages / elapsed:.0f} msg/s"
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
        print(f"after {args.messages + 200} messages: {pod_memory(pod)}")
        pod.stop()
    finally:
        double_program.stop()


if __name__ == "__main__":
    main()
