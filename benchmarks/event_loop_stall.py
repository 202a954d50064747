"""How long the session pod's event loop stalls while events are queued for webhooks.

The pod's event bus hands every non-durable event (acks, states, QR codes) to the webhook
outbox, an fsync'd SQLite commit each. This runs the same wiring as session_pod/app.py (an
EventBus, its outbox listener, the delivery database on this machine's disk) at a steady rate
of events and measures the loop with a probe that asks to wake every millisecond: the lateness
of each wake-up is how long the loop could not answer an HTTP request or a page callback.
`before` commits on the loop (Outbox.enqueue, as until this change), `after` hands the commit
to the database's writer thread (Outbox.enqueue_soon, what the pod does now).

    python -m benchmarks.event_loop_stall [--rate 100] [--seconds 20] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from session_pod.delivery import Outbox, WebhookSettings
from session_pod.events import EventBus

PROBE_SECONDS = 0.001


async def stalls(outbox: Outbox, on_loop: bool, rate: float, seconds: float) -> list[float]:
    """The probe's lateness (s) at each wake-up while `rate` events a second are published."""
    bus = EventBus()
    if on_loop:
        bus.add_listener(lambda event: outbox.enqueue(event.type, event.data))
    else:
        bus.add_listener(lambda e: outbox.enqueue_soon(e.type, e.data, on_error=print))
    late: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            asked = time.perf_counter()
            await asyncio.sleep(PROBE_SECONDS)
            late.append(time.perf_counter() - asked - PROBE_SECONDS)

    task = asyncio.create_task(probe())
    start = time.perf_counter()
    for n in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
        bus.publish("message_ack", {"id": f"true_5491100000000@c.us_{n:020d}", "ack": 2})
    done.set()
    await task
    await outbox.stop()  # every handed-over write done
    return late


def summary(late: list[float]) -> str:
    ordered = sorted(late)
    p99 = ordered[int(len(ordered) * 0.99)]
    p999 = ordered[int(len(ordered) * 0.999)]
    return (
        f"p50 {statistics.median(ordered) * 1e3:6.2f} ms  p99 {p99 * 1e3:6.2f} ms"
        f"  p99.9 {p999 * 1e3:6.2f} ms  max {ordered[-1] * 1e3:7.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=100.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--dir", type=Path, default=None, help="where the database goes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        # Webhooks enabled (the events are stored), nobody listening: the sender never runs.
        settings = WebhookSettings("http://127.0.0.1:9/whatsapp_js", "secret")
        print(f"{args.rate:g} events/s for {args.seconds:g} s, database in {work}")
        for name, on_loop in (("before (commit on the loop)", True), ("after (writer)", False)):
            outbox = Outbox(Path(work) / f"{name.split()[0]}.db", "13", settings)
            late = asyncio.run(stalls(outbox, on_loop, args.rate, args.seconds))
            print(f"{name:<28} {summary(late)}")


if __name__ == "__main__":
    main()
