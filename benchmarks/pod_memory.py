"""What a session pod costs in memory, measured so that other programs do not move the figure.

Three views of the same pod:

- per process, as the kernel reports it (psutil, /proc/PID/smaps_rollup): USS (pages no
  other process maps), PSS (each page divided among every process on the machine mapping
  it) and RSS (every resident page it maps, in full), grouped by role: `python`, `driver`
  (Playwright's node), and the Chromium processes by type (`browser`, `renderer`, `gpu`,
  `utility:network`, `zygote`, ...). Another Chromium or node on the machine maps the same
  binary and library pages, which lowers this pod's PSS and USS: they depend on what else
  runs;
- per process, counted within the pod (`pod PSS`, from /proc/PID/pagemap, root only): each
  resident page divided among the pod's own processes that map it, as PSS would be with the
  pod alone on the machine; the pod's sum is its distinct resident pages. Split into `own`
  (anonymous and shared memory: heaps, JIT code, Chromium's IPC buffers, the pod's alone)
  and `file` (binaries, libraries, fonts: shared with any program mapping the same files,
  on a node the other session pods). Other programs do not move it;
- the pod's own memory cgroup, as a container's: the pod process is started inside it, so
  every page its processes allocate is charged to it. `anon` (heaps, JIT, shared memory
  between Chromium's processes) is the pod's alone; `file` is page cache the pod touched
  first (a library page another program had already read stays charged to that program).

The cgroup is a child of the benchmark's own (cgroup v1 `memory` or v2), removed afterwards.
"""

from __future__ import annotations

import array
import contextlib
import itertools
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil


def role_of(process: psutil.Process) -> str:
    """`python`, `driver`, or the Chromium process type (`renderer`, `utility:network`...)."""
    name, cmdline = process.name(), process.cmdline()
    if name.startswith("node"):
        return "driver"
    if name.startswith("python"):
        return "python"
    kind = next((arg[7:] for arg in cmdline if arg.startswith("--type=")), None)
    if kind is None:
        return "browser" if "chrom" in name or "headless" in name else name
    if kind == "gpu-process":
        return "gpu"
    if kind == "utility":
        sub = next((a.split("=", 1)[1] for a in cmdline if a.startswith("--utility-sub-type=")), "")
        return f"utility:{sub.split('.')[-1].removesuffix('Service').lower() or '?'}"
    return kind


PAGE = os.sysconf("SC_PAGE_SIZE")
# pagemap: page present, page of a file or shared (else private anonymous), page frame
PRESENT, FILE_OR_SHARED, PFN_MASK = 1 << 63, 1 << 61, (1 << 55) - 1
SHARED_MEMORY = ("/dev/shm/", "/memfd:", "/SYSV", "/dev/zero")  # memory, not a file's pages
VMA = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ (\d+)\s*(.*)$")


@dataclass
class ProcessMemory:
    role: str
    pid: int
    uss: int
    pss: int
    rss: int
    pod_pss: float = 0.0  # its pages, each divided among the pod's processes mapping it
    pod_own: float = 0.0  # the anonymous and shared-memory part of pod_pss

    @property
    def pod_file(self) -> float:
        """The part of pod_pss in files' pages (binaries, libraries, fonts)."""
        return self.pod_pss - self.pod_own


@dataclass
class CgroupMemory:
    total: int  # what the kernel charges the cgroup (v1 usage_in_bytes, v2 memory.current)
    anon: int
    file: int


@dataclass
class PodMemory:
    processes: list[ProcessMemory]
    cgroup: CgroupMemory | None = None
    load: tuple[float, float, float] = field(default_factory=os.getloadavg)

    def total(self, measure: str) -> float:
        """MB over every process: one of MEASURES."""
        return sum(getattr(p, measure) for p in self.processes) / 2**20

    def by_role(self) -> dict[str, list[ProcessMemory]]:
        roles: dict[str, list[ProcessMemory]] = {}
        for process in sorted(self.processes, key=lambda p: p.role):
            roles.setdefault(process.role, []).append(process)
        return roles

    def report(self, title: str) -> str:
        """One block: the whole pod, the cgroup, then each role (MB, process count)."""
        mb = 2**20
        lines = [
            f"{title}: whole pod {self.total('pod_pss'):.0f} MB counted within the pod (own"
            f" {self.total('pod_own'):.0f}, files {self.total('pod_file'):.0f});"
            f" as the kernel reports it: PSS {self.total('pss'):.0f} MB, USS"
            f" {self.total('uss'):.0f} MB, RSS {self.total('rss'):.0f} MB"
            f" ({len(self.processes)} processes; load {self.load[0]:.2f})"
        ]
        if self.cgroup is not None:
            c = self.cgroup
            lines.append(
                f"  cgroup: {c.total / mb:.0f} MB charged (anon {c.anon / mb:.0f} MB,"
                f" file {c.file / mb:.0f} MB)"
            )
        for role, processes in self.by_role().items():
            sums = {m: sum(getattr(p, m) for p in processes) / mb for m in MEASURES}
            lines.append(
                f"  {role:<18} x{len(processes)}  pod PSS {sums['pod_pss']:6.1f} (own"
                f" {sums['pod_own']:6.1f})  PSS {sums['pss']:6.1f}  USS {sums['uss']:6.1f}"
                f"  RSS {sums['rss']:6.1f}"
            )
        return "\n".join(lines)


MEASURES = ("pod_pss", "pod_own", "pod_file", "pss", "uss", "rss")


def measure_tree(root_pid: int, cgroup: PodCgroup | None = None) -> PodMemory:
    """Every process of the tree under `root_pid` (the pod process included)."""
    return measure_pods([root_pid], [cgroup])[0]


def measure_pods(root_pids: list[int], cgroups: list[PodCgroup | None]) -> list[PodMemory]:
    """Several pods measured together: `pod_pss` divides each page among the processes of
    all of them that map it (pods on one node share their binaries' pages)."""
    trees, pages = [], {}
    for root_pid in root_pids:
        root, tree = psutil.Process(root_pid), []
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, OSError):
                info = process.memory_full_info()
                pages[process.pid] = resident_pages(process.pid)
                tree.append(
                    ProcessMemory(role_of(process), process.pid, info.uss, info.pss, info.rss)
                )
        trees.append(tree)
    mappers = Counter(pfn for own in pages.values() for pfn in own)
    for process in itertools.chain(*trees):
        own = pages[process.pid]
        process.pod_pss = sum(PAGE / mappers[pfn] for pfn in own)
        process.pod_own = sum(PAGE / mappers[pfn] for pfn, anon in own.items() if anon)
    return [
        PodMemory(tree, cgroup.read() if cgroup else None)
        for tree, cgroup in zip(trees, cgroups, strict=True)
    ]


def resident_pages(pid: int) -> dict[int, bool]:
    """Page frame -> the process's own memory (private anonymous pages, copies of a file's
    pages it wrote, shared memory), else a file's page; of every resident page it maps
    (/proc/PID/smaps for the regions holding any, pagemap for their frames: root only)."""
    found: dict[int, bool] = {}
    regions = []
    region: tuple[int, int, bool] | None = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if match := VMA.match(line):
            start, end, inode, path = match.groups()
            is_file = inode != "0" and path.startswith("/") and not path.startswith(SHARED_MEMORY)
            region = (int(start, 16), int(end, 16), not is_file or path.endswith("(deleted)"))
        elif line.startswith("Rss:") and region and int(line.split()[1]) > 0:
            regions.append(region)
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for start, end, memory in regions:
            entries = array.array("Q")
            entries.frombytes(
                os.pread(pagemap.fileno(), (end - start) // PAGE * 8, start // PAGE * 8)
            )
            for entry in entries:
                if entry & PRESENT:
                    found[entry & PFN_MASK] = memory or not entry & FILE_OR_SHARED
    return found


class PodCgroup:
    """A memory cgroup of its own for one pod, a child of this process's cgroup."""

    def __init__(self, name: str) -> None:
        self.version, parent = _own_memory_cgroup()
        self.path = parent / f"{name}-{os.getpid()}"
        self.path.mkdir()
        if not (self.path / "memory.stat").exists():  # v2 without memory in subtree_control
            self.path.rmdir()
            raise LookupError("the memory controller is not delegated to child cgroups")

    @classmethod
    def available(cls, name: str) -> PodCgroup | None:
        """None where a memory cgroup cannot be made here (read-only /sys/fs/cgroup, no
        memory controller for children): the benchmark then reports processes only."""
        try:
            return cls(name)
        except (OSError, LookupError):
            return None

    def join(self) -> None:
        """Moves the calling process in: a subprocess's preexec_fn, so the pod is born here."""
        (self.path / "cgroup.procs").write_text("0")

    def read(self) -> CgroupMemory:
        stat = dict(
            (key, int(value))
            for key, value in (
                line.split() for line in (self.path / "memory.stat").read_text().splitlines()
            )
        )
        if self.version == 1:
            total = int((self.path / "memory.usage_in_bytes").read_text())
            return CgroupMemory(total, stat["rss"] + stat["shmem"], stat["cache"] - stat["shmem"])
        total = int((self.path / "memory.current").read_text())
        return CgroupMemory(total, stat["anon"] + stat["shmem"], stat["file"] - stat["shmem"])

    def remove(self) -> None:
        """Removes the cgroup once its processes are gone (waits briefly for stragglers)."""
        deadline = time.monotonic() + 10
        while True:
            try:
                self.path.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def _own_memory_cgroup() -> tuple[int, Path]:
    """(cgroup version, directory) of this process's memory cgroup."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return 1, Path("/sys/fs/cgroup/memory") / path.lstrip("/")
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy, _, path = line.split(":", 2)
        directory = Path("/sys/fs/cgroup") / path.lstrip("/")
        controllers = directory / "cgroup.controllers"
        if hierarchy == "0" and controllers.exists() and "memory" in controllers.read_text():
            return 2, directory
    raise LookupError("no memory cgroup")
