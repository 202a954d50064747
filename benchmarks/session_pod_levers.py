"""Memory levers of the session pod, each measured alone against the WhatsApp Web double.

Links one profile, then starts the pod on it once per lever, in a memory cgroup of its own:
the full Chromium as before, chromium-headless-shell alone (the pod's defaults without the
other levers), the headless shell plus one lever, and the defaults (the levers kept). Prints
one table: start to ready, the whole pod's memory counted within the pod (its own memory +
files' pages; see benchmarks/pod_memory.py), PSS, USS and RSS as the kernel reports them,
the cgroup's charge (its anonymous part), and the processes; `--detail` adds each lever's
per-role breakdown. Run from the repository root:
    python -m benchmarks.session_pod_levers [--starts 3] [--lever NAME ...] [--detail]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.pod_memory import PodCgroup, PodMemory, measure_tree
from tests.support.session_pods import SessionPod, new_phone, start_double

FULL_CHROMIUM = "/usr/lib/chromium/chromium"
# The headless shell with none of the other levers: the pod's defaults without them.
SHELL_ALONE = {"CHROMIUM_MEMORY_ARGS": "", "DRIVER_NODE_OPTIONS": ""}
LEVERS: dict[str, dict[str, str]] = {
    "before: full chromium": {**SHELL_ALONE, "CHROMIUM_PATH": FULL_CHROMIUM},
    "chromium-headless-shell": SHELL_ALONE,
    "+ GPU in process": {**SHELL_ALONE, "CHROMIUM_MEMORY_ARGS": "--in-process-gpu"},
    "+ network service in process": {
        **SHELL_ALONE,
        "CHROMIUM_MEMORY_ARGS": "--enable-features=NetworkServiceInProcess2",
    },
    "+ renderer limit 1": {**SHELL_ALONE, "CHROMIUM_EXTRA_ARGS": "--renderer-process-limit=1"},
    "+ no zygote": {**SHELL_ALONE, "CHROMIUM_MEMORY_ARGS": "--no-zygote"},
    "+ single process": {**SHELL_ALONE, "CHROMIUM_EXTRA_ARGS": "--single-process"},
    "+ site isolation off": {
        **SHELL_ALONE,
        "CHROMIUM_EXTRA_ARGS": "--disable-site-isolation-trials --disable-features=IsolateOrigins",
    },
    "+ V8 lite mode (renderer)": {**SHELL_ALONE, "CHROMIUM_EXTRA_ARGS": "--js-flags=--lite-mode"},
    "+ driver semi-spaces 1 MB": {**SHELL_ALONE, "DRIVER_NODE_OPTIONS": "--max-semi-space-size=1"},
    "+ driver old space 64 MB": {**SHELL_ALONE, "DRIVER_NODE_OPTIONS": "--max-old-space-size=64"},
    "+ driver jitless": {**SHELL_ALONE, "DRIVER_NODE_OPTIONS": "--jitless"},
    "+ MALLOC_ARENA_MAX=2 (every process)": {**SHELL_ALONE, "MALLOC_ARENA_MAX": "2"},
    "defaults (kept: GPU, network, no zygote, semi-spaces)": {},  # config.py, driver.py
}


def start_measured(work: Path, double: object, env: dict[str, str]) -> tuple[float, PodMemory]:
    """(start-to-ready seconds, memory 5 s after ready) of one start in its own cgroup."""
    cgroup = PodCgroup.available("pod-levers")
    started = time.monotonic()
    pod = SessionPod("levers", work / "pod", double, env, cgroup.join if cgroup else None)
    try:
        pod.wait_state("ready", timeout=60)
        ready = time.monotonic() - started
        time.sleep(5)
        return ready, measure_tree(pod.program.pid, cgroup)
    finally:
        pod.stop()
        if cgroup:
            cgroup.remove()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=1, help="starts per lever")
    parser.add_argument("--lever", action="append", choices=sorted(LEVERS), help="default: all")
    parser.add_argument("--detail", action="store_true", help="each role of each lever")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pod-levers-"))
    double_program, double = start_double(work / "double.log")
    print(f"load before: {os.getloadavg()[0]:.2f}; medians of {args.starts} start(s); MB")
    print(
        f"| {'lever':<52} | ready s | pod PSS (own+files) | PSS | USS | RSS | cgroup (anon)"
        f" | processes |\n| {'-' * 52} | --- | --- | --- | --- | --- | --- | --- |",
        flush=True,
    )
    try:
        pod = SessionPod("levers", work / "pod", double)
        pod.link(double, new_phone())
        pod.stop()
        for lever in args.lever or list(LEVERS):
            try:
                runs = [start_measured(work, double, LEVERS[lever]) for _ in range(args.starts)]
            except AssertionError as exc:  # the pod never got ready: the lever breaks it
                print(f"| {lever:<52} | never ready: {str(exc).splitlines()[-1][:150]} |")
                continue
            memory = [m for _, m in runs]

            def median(values: list[float]) -> float:
                return statistics.median(values)

            cgroup = ""
            if all(m.cgroup for m in memory):
                total = median([m.cgroup.total / 2**20 for m in memory if m.cgroup])
                anon = median([m.cgroup.anon / 2**20 for m in memory if m.cgroup])
                cgroup = f"{total:.0f} ({anon:.0f})"
            own = median([m.total("pod_own") for m in memory])
            files = median([m.total("pod_file") for m in memory])
            roles = ", ".join(
                f"{role} {len(ps)}" for role, ps in memory[-1].by_role().items() if role
            )
            print(
                f"| {lever:<52} | {median([r for r, _ in runs]):.2f} "
                f"| {median([m.total('pod_pss') for m in memory]):.0f} ({own:.0f}+{files:.0f}) "
                f"| {median([m.total('pss') for m in memory]):.0f} "
                f"| {median([m.total('uss') for m in memory]):.0f} "
                f"| {median([m.total('rss') for m in memory]):.0f} | {cgroup} | {roles} |",
                flush=True,
            )
            if args.detail:
                print(memory[-1].report(f"  {lever} (last start)"), flush=True)
    finally:
        double_program.stop()


if __name__ == "__main__":
    main()
