"""Reliable delivery for the session pod: the durable webhook outbox, the message ledger with
its ack watchdog, idempotency keys, the inbox of customer messages and the send rate limit.
All share one SQLite database."""

from .idempotency import Claim, IdempotencyMismatch, IdempotencyStore
from .inbox import Inbox
from .ledger import STATUSES, MessageLedger, MessageRecord
from .outbox import DeadLetter, Outbox, OutboxStats
from .ratelimit import RateLimiter
from .signing import sign, verify
from .store import DeliveryDatabaseError
from .watchdog import AckWatchdog, WatchdogSettings
from .webhooks import WebhookSettings

__all__ = [
    "STATUSES",
    "AckWatchdog",
    "Claim",
    "DeadLetter",
    "DeliveryDatabaseError",
    "IdempotencyMismatch",
    "IdempotencyStore",
    "Inbox",
    "MessageLedger",
    "MessageRecord",
    "Outbox",
    "OutboxStats",
    "RateLimiter",
    "WatchdogSettings",
    "WebhookSettings",
    "sign",
    "verify",
]
