"""Benchmark of session_pod.delivery on this machine's disk.

1. Outbox throughput: N events queued, then delivered one by one (in order, each awaited) to a
   local aiohttp receiver on 127.0.0.1, in the same process.
2. Latency the ledger adds to /send_message: `MessageLedger.record` + `IdempotencyStore.put`,
   and the full idempotent path (claim + record + complete), p50/p99.

    python -m benchmarks.outbox_bench [--events 2000] [--messages 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from aiohttp import web

from session_pod.delivery import IdempotencyStore, MessageLedger, Outbox, WebhookSettings


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms"


async def outbox_throughput(db: Path, events: int) -> None:
    received = 0
    all_in = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        nonlocal received
        await request.read()
        received += 1
        if received == events:
            all_in.set()
        return web.Response()

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    outbox = Outbox(db, "13", WebhookSettings(f"http://127.0.0.1:{port}/whatsapp_js", "secret"))
    enqueue: list[float] = []
    for n in range(events):
        start = time.perf_counter()
        outbox.enqueue("message_ack", {"id": f"true_5491100000000@c.us_{n:020d}", "ack": 2})
        enqueue.append(time.perf_counter() - start)
    start = time.perf_counter()
    outbox.start()
    await all_in.wait()
    elapsed = time.perf_counter() - start
    await outbox.stop()
    outbox.close()
    await runner.cleanup()
    print(f"outbox enqueue (sync, committed): {percentiles(enqueue)}")
    print(f"outbox delivery: {events} events in {elapsed:.2f} s = {events / elapsed:.0f} events/s")


async def ledger_latency(db: Path, messages: int) -> None:
    ledger = MessageLedger(db)
    keys = IdempotencyStore(db)
    record_put: list[float] = []
    full_path: list[float] = []
    for n in range(messages):
        start = time.perf_counter()
        await ledger.record(f"a{n}", "5491100000000@c.us", "Your appointment is at 10:00", 0)
        await keys.put(f"a{n}", {"success": True, "message_id": f"a{n}"})
        record_put.append(time.perf_counter() - start)

        start = time.perf_counter()
        async with keys.claim(f"b{n}", "request-hash") as claim:
            await ledger.record(f"b{n}", "5491100000000@c.us", "Your appointment is at 10:00", 0)
            await claim.complete({"success": True, "message_id": f"b{n}"})
        full_path.append(time.perf_counter() - start)
    ledger.close()
    keys.close()
    print(f"ledger record + idempotency put: {percentiles(record_put)}")
    print(f"idempotent send path (claim + record + complete): {percentiles(full_path)}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        await outbox_throughput(Path(tmp) / "outbox.db", args.events)
        await ledger_latency(Path(tmp) / "ledger.db", args.messages)


if __name__ == "__main__":
    asyncio.run(main())
