"""What a real-node run that was killed (kill -9, a lost terminal) leaves behind, stopped and
removed by the next run before it starts its own node: the daemons it started (recorded by PID
and program), the shims of its containerd and the containers under them (found by that run's
own containerd socket), its mounts, the kubelet's log links and cgroups, and its network
(tests/support/node_network.py). One node per machine at a time: `node_lock` is held from
before the cleanup until the node is torn down.

By hand: `python3 -m tests.support.node_leftovers` (refused while a run holds the lock)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil

from tests.support.node_network import STATE_FILE, NodeNetwork

RECORD = STATE_FILE.with_name("node-processes.json")
LOCK = STATE_FILE.with_name("node.lock")
CGROUP_ROOT = Path("/sys/fs/cgroup")


@contextlib.contextmanager
def node_lock(wait: bool = True) -> Iterator[None]:
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        yield


def record_run(root: Path, containerd_socket: Path) -> None:
    RECORD.write_text(json.dumps({"root": str(root), "socket": str(containerd_socket), "pids": []}))


def record_process(pid: int, program: str) -> None:
    data = json.loads(RECORD.read_text())
    data["pids"].append([pid, program])
    RECORD.write_text(json.dumps(data))


def forget_run() -> None:
    RECORD.unlink(missing_ok=True)


def remove_kubelet_traces(root: Path) -> None:
    """Mounts under `root`, /var/log/containers links into it, the kubepods cgroups."""
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
    for link in Path("/var/log/containers").glob("*.log"):
        if link.is_symlink() and os.readlink(link).startswith(str(root)):
            link.unlink()
    for controller in CGROUP_ROOT.iterdir():
        kubepods = controller / "kubepods"
        if kubepods.is_dir():
            # Deepest first: a cgroup directory can only be removed once it has no children.
            children = [p for p in kubepods.rglob("*") if p.is_dir()]
            for directory in [*sorted(children, key=lambda p: -len(p.parts)), kubepods]:
                with contextlib.suppress(OSError):
                    directory.rmdir()


def _kill(process: psutil.Process) -> None:
    with contextlib.suppress(psutil.Error):
        process.kill()


def stop_leftovers() -> list[str]:
    """Stops and removes what a killed run recorded; returns what it found."""
    if not RECORD.exists():
        return []
    data = json.loads(RECORD.read_text())
    found: list[str] = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if (
            cmdline[:1]
            and cmdline[0].endswith("containerd-shim-runc-v2")
            and (data["socket"] in cmdline)
        ):
            with contextlib.suppress(psutil.Error):
                for child in process.children(recursive=True):  # the containers
                    _kill(child)
            _kill(process)
            found.append(f"shim {process.pid}")
    for pid, program in data["pids"]:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            if process.cmdline()[:1] == [program]:  # the same program, not a reused PID
                _kill(process)
                process.wait(10)
                found.append(f"{Path(program).name} {pid}")
    remove_kubelet_traces(Path(data["root"]))
    forget_run()
    return found


if __name__ == "__main__":
    try:
        with node_lock(wait=False):
            for line in stop_leftovers():
                print("stopped", line)
            for line in NodeNetwork().teardown():
                print("restored", line)
    except BlockingIOError:
        sys.exit("a test run's node is up: it tears itself down")
