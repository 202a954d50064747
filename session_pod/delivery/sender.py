"""One delivery attempt of one webhook, classified: delivered, retry later, or dead letter."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

import aiohttp

from .signing import sign_all
from .webhooks import WebhookSettings

RETRIED_4XX = frozenset({408, 429})


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    status: int | None = None
    error: str = ""
    retry_after: float | None = None  # the receiver's Retry-After, in seconds


def classify(status: int) -> Outcome:
    """2xx delivered; 408, 429 and 5xx retried; any other answer will not improve by retrying
    (a 3xx here is a misconfigured URL), so it goes to the dead letters, from where it can be
    replayed."""
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in RETRIED_4XX or status >= 500:
        return Outcome.RETRY
    return Outcome.DEAD


async def post(
    http: aiohttp.ClientSession,
    settings: WebhookSettings,
    event_type: str,
    event_id: str,
    body: bytes,
    attempt: int,
) -> Attempt:
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "X-Webhook-Event": event_type,
        "X-Webhook-Event-Id": event_id,
        "X-Webhook-Timestamp": str(timestamp),
        "X-Webhook-Attempt": str(attempt),
    }
    if settings.secret:
        secrets = [settings.secret, *filter(None, [settings.previous_secret])]
        headers["X-Webhook-Signature"] = sign_all(secrets, timestamp, body)
    try:
        async with http.post(
            settings.url_for(event_type),
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=settings.timeout),
        ) as response:
            await response.read()
            outcome = classify(response.status)
            return Attempt(
                outcome,
                response.status,
                "" if outcome is Outcome.DELIVERED else f"HTTP {response.status}",
                _retry_after(response.headers.get("Retry-After")),
            )
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Attempt(Outcome.RETRY, error=f"{type(exc).__name__}: {exc}"[:300])


def _retry_after(value: str | None) -> float | None:
    """Retry-After in delta-seconds form; the HTTP-date form is ignored (backoff applies)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())
