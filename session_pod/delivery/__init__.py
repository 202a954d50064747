"""Reliable delivery for the session pod: the durable webhook outbox, the message ledger with
its ack watchdog, idempotency keys and the send rate limit. All share one SQLite file."""

from .idempotency import Claim, IdempotencyConflict, IdempotencyMismatch, IdempotencyStore
from .ledger import STATUSES, MessageLedger, MessageRecord
from .outbox import DeadLetter, Outbox, OutboxStats
from .ratelimit import RateLimiter
from .signing import sign, verify
from .store import OutboxError
from .watchdog import AckWatchdog, WatchdogSettings
from .webhooks import WebhookSettings

__all__ = [
    "STATUSES",
    "AckWatchdog",
    "Claim",
    "DeadLetter",
    "IdempotencyConflict",
    "IdempotencyMismatch",
    "IdempotencyStore",
    "MessageLedger",
    "MessageRecord",
    "Outbox",
    "OutboxError",
    "OutboxStats",
    "RateLimiter",
    "WatchdogSettings",
    "WebhookSettings",
    "sign",
    "verify",
]
