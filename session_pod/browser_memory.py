"""The memory of the browser's process tree, read from /proc (for BROWSER_MEMORY_LIMIT_MB).

The tree is every descendant of the pod process: Playwright's node driver and every
Chromium process under it, exactly what a relaunch replaces. Each counts its PSS
(/proc/PID/smaps_rollup): its private pages plus its share of the pages it shares, so the
pages Chromium's processes share among themselves are counted once.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

PROC = Path("/proc")


def descendants(root: int) -> list[int]:
    """Every process under `root` (not `root` itself), from the parents /proc names."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            # pid (comm) state ppid ...: comm may hold spaces and parentheses.
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def pss_bytes(pid: int) -> int:
    """The process's PSS; 0 when it is gone."""
    with contextlib.suppress(OSError):
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def browser_tree_bytes(root: int) -> int:
    """PSS of every process under `root` (the pod process: its driver and browser)."""
    return sum(pss_bytes(pid) for pid in descendants(root))
