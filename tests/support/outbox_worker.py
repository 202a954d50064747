"""A process holding undelivered webhooks, for the kill -9 test: it queues `count` events in
the outbox at `db`, prints "queued", then delivers to `url` until it is killed."""

from __future__ import annotations

import asyncio
import sys

from session_pod.delivery import Outbox, WebhookSettings


async def main(db: str, url: str, count: int) -> None:
    outbox = Outbox(db, "13", WebhookSettings(base_url=url, secret="s3cret", retry_base=0.01))
    for n in range(count):
        outbox.enqueue("message", {"n": n})
    print("queued", flush=True)
    outbox.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
