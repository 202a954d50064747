"""Request parsing: every failure is a 400 in the original API's error shape (answers.py).

Every failure names the field and what is wrong with it, and is a 400 (never a 500).
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from .answers import ApiError, bad_request

MAX_BODY_BYTES = 1024 * 1024  # a 65,536-character message fits in any encoding
MAX_MESSAGE_CHARS = 65_536
_PHONE_PUNCTUATION = re.compile(r"[\s\-().]")


def body_too_large() -> ApiError:
    return bad_request(f"The request body is too large (limit {MAX_BODY_BYTES // 1024} KB)")


async def json_object(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise body_too_large()
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise body_too_large() from None
    if not raw.strip():
        raise bad_request("The request body must be a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object")
    return body


def parse_location_identifier(source: Any) -> str:
    """The seed's `location_identifier` (a string or an integer), as a string."""
    value = source.get("location_identifier")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise bad_request("The location identifier is required")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise bad_request("The location identifier must be a string or an integer")
    return str(value).strip()


def location_identifier(source: Any, served: str) -> str:
    """The seed's `location_identifier`, which must be the location this pod serves."""
    location = parse_location_identifier(source)
    if location != served:
        raise bad_request(f"This session serves location {served}, not {location}")
    return location


def text_field(body: dict[str, Any], name: str, max_chars: int = MAX_MESSAGE_CHARS) -> str:
    value = body.get(name)
    if value is None:
        raise bad_request(f"The field {name} is required")
    if not isinstance(value, str):
        raise bad_request(f"The field {name} must be a string")
    if not value.strip():
        raise bad_request(f"The field {name} must not be empty")
    if len(value) > max_chars:
        raise bad_request(f"The field {name} is longer than {max_chars} characters")
    return value


def receiver_chat_id(body: dict[str, Any], name: str = "receiver_phone") -> str:
    """'+54 9 11 3452-5535' (or an integer) -> '5491134525535@c.us'."""
    value = body.get(name)
    if value is None or value == "":
        raise bad_request(f"The field {name} is required")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise bad_request(f"The field {name} must be a string of digits")
    raw = str(value).strip()
    digits = _PHONE_PUNCTUATION.sub("", raw.removesuffix("@c.us").removeprefix("+"))
    if not digits.isascii() or not digits.isdigit():
        raise bad_request(f"The field {name} must be a phone number (digits only), got {raw!r}")
    if not 7 <= len(digits) <= 15:
        raise bad_request(f"The field {name} must have 7 to 15 digits, got {len(digits)}")
    return f"{digits}@c.us"


def idempotency_key(body: dict[str, Any], headers: Any) -> str | None:
    """From the body's `idempotency_key` or the Idempotency-Key header."""
    value = body.get("idempotency_key", headers.get("Idempotency-Key"))
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= 200:
        raise bad_request("The idempotency key must be a string of 1 to 200 characters")
    return value.strip()


def int_param(query: Any, name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"The parameter {name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise bad_request(f"The parameter {name} must be between {low} and {high}, got {value}")
    return value


def choice_param(query: Any, name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = query.get(name) or default
    if value not in allowed:
        raise bad_request(f"The parameter {name} must be one of {', '.join(allowed)}")
    return value
