"""Signed link tokens: the credential in a link page's URL (the router's `/link/{token}`).

A token names one location (and the name the page shows) and when it expires, signed with
HMAC-SHA256 under that location's `link-token` key, derived from a link master key
(`keys.derive`), so a token of one location opens no other, and a session pod that holds its
location's key can make tokens for its own location only (the `qr` webhook's link). A token
carries the name of the master it was signed with: during a rotation every master of the ring
is accepted and the newest signs. Whether the location is linked already is the router's to
check: a token stops working once it is (README, The link page).

Text form: `<base64url(JSON payload)>.<base64url(HMAC)>`, the MAC over the first part.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

from .keys import KeyRing, derive

PURPOSE = "link-token"
MAX_TOKEN_CHARS = 1024
MAX_NAME_CHARS = 100
_MAC_CONTEXT = b"whatsapp-sessions/link-token/v1."


@dataclass(frozen=True)
class LinkGrant:
    """What a valid token allows: seeing `location`'s link state until `expires_at`."""

    location: str
    name: str  # what the page calls the location
    expires_at: int  # unix seconds


class InvalidLinkToken(ValueError):
    """`reason`: `malformed`, `forged` (bad MAC, unknown key), or `expired`."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"link token {reason}")
        self.reason = reason


def issue(masters: KeyRing, grant: LinkGrant) -> str:
    """A token for `grant`, signed with the newest master's key for the location."""
    return sign(masters.derive(PURPOSE, grant.location), grant)


def sign(location_keys: KeyRing, grant: LinkGrant) -> str:
    """A token for `grant` from the location's own link keys (what a session pod holds:
    `masters.derive(PURPOSE, location)`), signed with the newest."""
    key = location_keys.current
    payload = {"v": 1, "l": grant.location, "n": grant.name, "e": grant.expires_at, "k": key.name}
    head = _b64(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
    return f"{head}.{_b64(_mac(key.secret, head))}"


def verify(masters: KeyRing, token: str, now: float) -> LinkGrant:
    """The grant `token` carries, or InvalidLinkToken."""
    head, dot, mac = token.partition(".")
    if not dot or len(token) > MAX_TOKEN_CHARS:
        raise InvalidLinkToken("malformed")
    try:
        payload = json.loads(_unb64(head))
        location, name, expires_at, key = (payload[k] for k in ("l", "n", "e", "k"))
        given = _unb64(mac)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidLinkToken("malformed") from None
    if payload.get("v") != 1 or not all(isinstance(v, str) for v in (location, name, key)):
        raise InvalidLinkToken("malformed")
    if not isinstance(expires_at, int) or not location:
        raise InvalidLinkToken("malformed")
    master = masters.get(key)
    if master is None:
        raise InvalidLinkToken("forged")
    location_key = derive(master.secret, PURPOSE, location)
    if not hmac.compare_digest(given, _mac(location_key, head)):
        raise InvalidLinkToken("forged")
    if now >= expires_at:
        raise InvalidLinkToken("expired")
    return LinkGrant(location, name, expires_at)


def _mac(location_key: bytes, head: str) -> bytes:
    return hmac.new(location_key, _MAC_CONTEXT + head.encode(), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Strict: a character outside the alphabet is an error, not skipped, and so is any
    encoding but the one `_b64` makes (its last character has spare bits: one token, one
    text)."""
    raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    if _b64(raw) != text:
        raise ValueError("not the canonical base64url")
    return raw
