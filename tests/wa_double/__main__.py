"""Runs the WhatsApp Web double: `python -m tests.wa_double --host 127.0.0.1 --port PORT`.

Prints `listening on http://HOST:PORT` once it accepts connections (`--port 0` picks one).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from aiohttp import web

from .server import Settings, create_app


async def serve(host: str, port: int, settings: Settings) -> None:
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"listening on http://{host}:{runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="python -m tests.wa_double", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--qr-rotate-seconds", type=float, default=defaults.qr_rotate_seconds)
    parser.add_argument("--qr-max-rotations", type=int, default=defaults.qr_max_rotations)
    parser.add_argument("--sync-seconds", type=float, default=defaults.sync_seconds)
    parser.add_argument("--ack-delay-seconds", type=float, default=defaults.ack_delay_seconds)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings(
        qr_rotate_seconds=args.qr_rotate_seconds,
        qr_max_rotations=args.qr_max_rotations,
        sync_seconds=args.sync_seconds,
        ack_delay_seconds=args.ack_delay_seconds,
    )
    asyncio.run(serve(args.host, args.port, settings))


if __name__ == "__main__":
    main()
