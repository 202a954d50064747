"""`python -m session_pod`: serve one location until SIGTERM, then close the browser and exit."""

from __future__ import annotations

import asyncio
import sys

from whatsapp_common import logs, serving

from .app import create_app
from .config import Settings
from .delivery import DeliveryDatabaseError

log = logs.get_logger("session_pod")


async def serve(settings: Settings) -> None:
    try:
        app = create_app(settings)
    except DeliveryDatabaseError as exc:
        log.critical("the delivery database cannot be used", error=str(exc))
        sys.exit(f"delivery database error: {exc}")
    await serving.serve(
        app,
        settings.host,
        settings.port,
        log=log,
        shutdown_timeout=5,
        stopping="stopping: closing the browser",
    )


def main() -> None:
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        sys.exit(f"configuration error: {exc}")
    logs.configure({"location": settings.location_id})
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
