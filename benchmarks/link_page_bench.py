"""Link pages: how soon a page hears of a new QR, and what open pages cost the router.

Local mode (router + one session pod) against the WhatsApp Web double, no browser: a plain
SSE client reads `/link/{token}/events` as the page's EventSource does.
- latency: the double rotates the QR (`POST /control/qr/rotate`), the clock runs until the
  `view` event with the new QR version reaches the client; `--rotations` times;
- cost: `--pages` streams held open at once (each makes the router follow the pod's
  `/events`); the router's RSS and CPU before and while they are open and idle.
Run from the repository root:
    python -m benchmarks.link_page_bench [--rotations 30] [--pages 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

from tests.support.local_mode import LocalMode
from tests.support.processes import wait_until
from tests.support.session_pods import Double, start_double

LOCATION = "bench-link"


class Stream:
    """One page's event stream: the last view, and when each new QR version arrived."""

    def __init__(self, url: str) -> None:
        self.views: list[tuple[float, dict]] = []
        self.changed = threading.Condition()
        self.response = requests.get(url, stream=True, timeout=(5, None))
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line and line.startswith("data: "):
                    with self.changed:
                        self.views.append((time.perf_counter(), json.loads(line[6:])))
                        self.changed.notify_all()
        except (requests.RequestException, OSError, AttributeError):
            return

    def count(self) -> int:
        with self.changed:
            return len(self.views)

    def wait_new_qr(self, before: object, start: int, timeout: float = 20) -> float:
        """When the first view after the `start`-th with a QR version other than `before`
        arrived."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for at, view in self.views[start:]:
                    if view.get("state") == "qr" and view.get("qr") != before:
                        return at
                if time.monotonic() > deadline:
                    raise TimeoutError("no new QR view")
                self.changed.wait(0.5)

    def last_qr(self) -> object:
        with self.changed:
            return next((v.get("qr") for _, v in reversed(self.views) if v.get("qr")), None)


def router_usage(local: LocalMode) -> tuple[float, float]:
    """The local mode process's (RSS MiB, CPU seconds): the router itself, pods excluded."""
    process = psutil.Process(local.program.pid)
    times = process.cpu_times()
    return process.memory_info().rss / 2**20, times.user + times.system


def link_url(local: LocalMode) -> str:
    answer = local.post("/link_url", {"location_identifier": LOCATION, "ttl_seconds": 3600})
    answer.raise_for_status()
    return local.url + "/link/" + answer.json()["url"].rsplit("/", 1)[1]


def latency(local: LocalMode, double: Double, rotations: int) -> list[float]:
    stream = Stream(link_url(local) + "/events")
    wait_until(stream.last_qr, 30, "the first QR view")
    seen = []
    for _ in range(rotations):
        before, start = stream.last_qr(), stream.count()
        started = time.perf_counter()
        double.control("POST", "/qr/rotate")
        seen.append((stream.wait_new_qr(before, start) - started) * 1000)
    return seen  # the stream ends with local mode (closing it under its reader can hang)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rotations", type=int, default=30)
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--idle-seconds", type=float, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        double_program, double = start_double(root / "double.log")
        local = LocalMode(root / "data", root / "terminal.log", double.session_env(), LOCATION)
        try:
            local.post("/login", {"location_identifier": LOCATION, "user_id": 1})
            local.wait_state(LOCATION, "qr_required", 90)
            times = sorted(latency(local, double, args.rotations))
            p50 = statistics.median(times)
            p95 = times[int(0.95 * (len(times) - 1))]
            print(
                f"QR rotation -> view event: {len(times)} rotations, p50 {p50:.1f} ms,"
                f" p95 {p95:.1f} ms, max {times[-1]:.1f} ms"
            )

            rss_before, _ = router_usage(local)
            streams = [Stream(link_url(local) + "/events") for _ in range(args.pages)]
            for stream in streams:
                wait_until(stream.last_qr, 60, "every page's first view")
            rss_open, cpu_open = router_usage(local)
            time.sleep(args.idle_seconds)
            rss_idle, cpu_idle = router_usage(local)
            cpu_share = (cpu_idle - cpu_open) / args.idle_seconds * 100
            print(
                f"{args.pages} open pages: router RSS {rss_before:.1f} -> {rss_open:.1f} MiB"
                f" ({(rss_open - rss_before) * 1024 / args.pages:.0f} KiB per page),"
                f" {rss_idle:.1f} MiB after {args.idle_seconds:g} s idle;"
                f" router CPU while idle {cpu_share:.2f} % of a core"
            )
        finally:
            local.program.stop()
            double_program.stop()


if __name__ == "__main__":
    main()
