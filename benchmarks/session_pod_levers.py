"""Memory levers of the session pod, each measured alone against the WhatsApp Web double.

Links one profile, then starts the pod on it once per lever (environment variables of the
pod) and prints start-to-ready and the PSS of every process of the pod by kind (Python, the
Playwright driver, and each Chromium process type). Run from the repository root:
    python -m benchmarks.session_pod_levers
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from tests.support.session_pods import SessionPod, new_phone, start_double

HEADLESS_SHELL = "/usr/bin/chromium-headless-shell"
LEVERS: dict[str, dict[str, str]] = {
    "today": {},  # the pod's defaults, the spare renderer already off (driver.py)
    "chromium-headless-shell": {"CHROMIUM_PATH": HEADLESS_SHELL},
    "renderer limit 1": {"CHROMIUM_EXTRA_ARGS": "--renderer-process-limit=1"},
    "no zygote": {"CHROMIUM_EXTRA_ARGS": "--no-zygote"},
    "GPU in process": {"CHROMIUM_EXTRA_ARGS": "--in-process-gpu"},
    "network service in process": {
        "CHROMIUM_EXTRA_ARGS": "--enable-features=NetworkServiceInProcess"
    },
    "single process": {"CHROMIUM_EXTRA_ARGS": "--single-process"},
}


def process_kind(process: psutil.Process) -> str:
    """`python`, `driver`, or the Chromium process type (`renderer`, `utility:network...`)."""
    name, cmdline = process.name(), " ".join(process.cmdline())
    if name.startswith("node"):
        return "driver"
    if "chrom" not in name and "headless" not in name:
        return "python"
    for kind in ("renderer", "gpu-process", "zygote", "utility"):
        if f"--type={kind}" in cmdline:
            if kind == "utility" and "--utility-sub-type=" in cmdline:
                sub_type = cmdline.split("--utility-sub-type=", 1)[1].split()[0]
                return f"utility:{sub_type.split('.')[0]}"
            return kind
    return "browser"


def pod_breakdown(pod: SessionPod) -> dict[str, list[float]]:
    """PSS in MB of each process of the pod, grouped by kind."""
    root = psutil.Process(pod.program.pid)
    kinds: dict[str, list[float]] = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            kinds.setdefault(process_kind(process), []).append(
                process.memory_full_info().pss / 2**20
            )
        except psutil.NoSuchProcess:
            continue
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=1, help="starts per lever")
    parser.add_argument("--lever", action="append", choices=sorted(LEVERS), help="default: all")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pod-levers-"))
    double_program, double = start_double(work / "double.log")
    try:
        pod = SessionPod("levers", work / "pod", double)
        pod.link(double, new_phone())
        pod.stop()
        for lever in args.lever or list(LEVERS):
            ready_times, totals = [], []
            for _ in range(args.starts):
                started = time.monotonic()
                pod = SessionPod("levers", work / "pod", double, LEVERS[lever])
                try:
                    pod.wait_state("ready", timeout=60)
                    ready_times.append(time.monotonic() - started)
                    time.sleep(5)
                    kinds = pod_breakdown(pod)
                finally:
                    pod.stop()
                totals.append(sum(sum(sizes) for sizes in kinds.values()))
            detail = ", ".join(
                f"{kind} {sum(sizes):.0f} ({len(sizes)})" for kind, sizes in sorted(kinds.items())
            )
            print(
                f"{lever}: whole pod {statistics.median(totals):.0f} MB PSS, start-to-ready"
                f" median {statistics.median(ready_times):.2f} s of {args.starts}; last: {detail}",
                flush=True,
            )
    finally:
        double_program.stop()


if __name__ == "__main__":
    main()
