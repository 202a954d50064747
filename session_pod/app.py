"""The session pod's aiohttp application and its lifecycle.

Startup opens the delivery database (a corrupt or unwritable one stops the program with a
clear error rather than losing events), starts the webhook sender and the ack watchdog,
and launches the browser in the background. Shutdown (SIGTERM) ends the event streams,
closes the browser, takes the final backup, then lets the outbox drain briefly.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from whatsapp_common.bearer import bearer_auth
from whatsapp_common.event_types import EventType
from whatsapp_common.middleware import REQUEST_METRICS, errors_in_api_shape
from whatsapp_common.validation import MAX_BODY_BYTES

from .api import MESSENGER, METRICS, OUTBOX, SESSION, add_routes
from .backup_schedule import BackupSchedule
from .config import Settings
from .delivery import (
    IdempotencyStore,
    Inbox,
    MessageLedger,
    Outbox,
    RateLimiter,
)
from .delivery.store import Database
from .events import EventBus, SessionEvent
from .idleness import Idleness
from .messenger import Messenger
from .metrics import Metrics
from .session import Session
from .tasks import Supervised


def create_app(settings: Settings) -> web.Application:
    """Raises DeliveryDatabaseError when the delivery database cannot be used."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    metrics = Metrics(settings.location_id)
    tasks = Supervised(metrics)
    db = Database.open(settings.delivery_db, "")
    outbox = Outbox(db, settings.location_id, settings.webhooks)

    def journal(event: SessionEvent, stored: Callable[[], None]) -> None:
        def failed(exc: Exception) -> None:
            session.fail(f"webhook outbox unusable: {exc}")
            stored()  # the event happened; streams see it, with the failure after it

        outbox.enqueue_soon(event.type, event.data, failed, stored)

    bus = EventBus(journal=journal)
    inbox = Inbox(db, outbox, lambda message: bus.publish(EventType.MESSAGE, message, durable=True))

    def on_message(message: dict[str, object]) -> None:
        inbox.accept(message, lambda exc: session.fail(f"delivery database unusable: {exc}"))

    session = Session(
        settings,
        bus,
        metrics,
        BackupSchedule(settings, bus),
        on_message,
        lambda wa_id, ack, chat: messenger.on_ack(wa_id, ack, chat),
    )
    messenger = Messenger(
        session,
        MessageLedger(db),
        IdempotencyStore(db),
        inbox,
        outbox,
        RateLimiter(settings.send_rate_per_minute),
        tasks,
    )

    idleness = Idleness(
        settings.idle_after,
        settings.idle_check_interval,
        lambda: session.state,
        inbox,
        messenger.ledger,
        outbox,
        settings.watchdog,
        # A fact for the operator, not a webhook: nothing to store (and an `idle` webhook in
        # the outbox would make the session busy again).
        lambda type_, data: bus.publish(type_, data, durable=True),
        metrics,
    )

    bus.add_listener(lambda event: metrics.events.labels(event.type).inc())
    bus.add_listener(messenger.on_event)

    authenticated = bearer_auth(
        settings.auth.accepted, "whatsapp-session", metrics.authenticated, metrics.auth_refused
    )
    app = web.Application(
        middlewares=[errors_in_api_shape, authenticated, idleness.middleware],
        client_max_size=MAX_BODY_BYTES,
    )
    app[SESSION] = session
    app[METRICS] = metrics
    app[REQUEST_METRICS] = metrics
    app[MESSENGER] = messenger
    app[OUTBOX] = outbox
    add_routes(app)

    async def start(_: web.Application) -> None:
        outbox.start()
        messenger.watchdog.start()
        idleness.start()
        await session.start()

    async def end_streams(_: web.Application) -> None:
        bus.close()

    async def stop(_: web.Application) -> None:
        """Every step runs even when one before it fails (the final backup, say)."""
        try:
            await idleness.stop()
            await messenger.watchdog.stop()
            await session.close()
        finally:
            try:
                await tasks.close()
                await outbox.stop(drain_timeout=2)
            finally:
                db.close()

    app.on_startup.append(start)
    app.on_shutdown.append(end_streams)
    app.on_cleanup.append(stop)
    return app
