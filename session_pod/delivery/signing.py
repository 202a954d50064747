"""Webhook signatures: HMAC-SHA256 over "<unix timestamp>.<raw body>" with a shared secret.

Headers on every webhook request:
    X-Webhook-Timestamp: 1718000000            (unix seconds, when this attempt was sent)
    X-Webhook-Signature: sha256=<hex digest>   (HMAC-SHA256(secret, f"{timestamp}.{body}"))
                         during a rotation, one per secret: sha256=<new>,sha256=<previous>
    X-Webhook-Event-Id: <uuid>                 (stable across retries: de-duplicate on it)

A receiver recomputes the digest over the raw request body, compares it in constant time with
each signature of the header (any may match: the sender may be between two secrets) and
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


def sign_all(secrets: list[str], timestamp: int, body: bytes | str) -> str:
    """The header value with one signature per secret (newest first)."""
    return ",".join(sign(secret, timestamp, body) for secret in secrets)


def verify(
    secret: str,
    timestamp: int | str,
    body: bytes | str,
    signature: str,
    tolerance_seconds: float = 300,
    now: float | None = None,
) -> bool:
    """True when one of the header's signatures matches and `timestamp` is within
    `tolerance_seconds` of now."""
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_seconds:
        return False
    expected = sign(secret, sent_at, body).encode()
    matches = [
        hmac.compare_digest(expected, given.strip().encode()) for given in signature.split(",")
    ]
    return any(matches)
