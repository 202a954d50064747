"""Webhook signatures: HMAC-SHA256 over "<unix timestamp>.<raw body>" with a shared secret.

Headers on every webhook request:
    X-Webhook-Timestamp: 1718000000            (unix seconds, when this attempt was sent)
    X-Webhook-Signature: sha256=<hex digest>   (HMAC-SHA256(secret, f"{timestamp}.{body}"))
    X-Webhook-Event-Id: <uuid>                 (stable across retries: de-duplicate on it)

A receiver recomputes the digest over the raw request body, compares in constant time and
rejects timestamps older than a few minutes, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time

PREFIX = "sha256="


def sign(secret: str, timestamp: int, body: bytes | str) -> str:
    """The X-Webhook-Signature value for `body` sent at `timestamp`."""
    raw = body.encode() if isinstance(body, str) else body
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256)
    return PREFIX + digest.hexdigest()


def verify(
    secret: str,
    timestamp: int | str,
    body: bytes | str,
    signature: str,
    tolerance_seconds: float = 300,
    now: float | None = None,
) -> bool:
    """True when `signature` matches and `timestamp` is within `tolerance_seconds` of now."""
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, sent_at, body).encode(), signature.encode())
