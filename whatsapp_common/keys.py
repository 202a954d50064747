"""Keys derived from master secrets: one per purpose and location (HKDF-SHA256, RFC 5869).

The operator (or local mode) holds the master secrets; each session pod gets only what
`derive` makes for its own location, so a pod's key opens no other location's backups and
tells nothing about the master. Several masters can be live at once (rotation): a key ring
names each one, the first is the one new things are made with, the others are still accepted.

Text form of a ring (env var or file): `name:base64secret`, separated by commas or newlines,
newest first, e.g. `2026-12:q8f...=,2026-06:Zk1...=`.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .named_entries import named_entries

KEY_BYTES = 32
PURPOSES = frozenset({"backup", "pod-token", "link-token"})
_INFO_HEAD = b"whatsapp-sessions/v1"


def hkdf(key: bytes, info: bytes, *, salt: bytes | None = None, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256 of `key`, bound to `info` (and `salt` when given)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key)


def derive(master: bytes, purpose: str, location: str) -> bytes:
    """The key of `location` for `purpose` (`backup`, `pod-token`, `link-token`), from one master.

    Each part is length-prefixed in the info string, so no two (purpose, location) pairs can
    give the same bytes."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown key purpose {purpose!r}: one of {sorted(PURPOSES)}")
    if not location:
        raise ValueError("a location is required")
    info = _INFO_HEAD + b"".join(_framed(part) for part in (purpose, location))
    return hkdf(master, info)


def _framed(part: str) -> bytes:
    raw = part.encode()
    return len(raw).to_bytes(2, "big") + raw


@dataclass(frozen=True)
class NamedKey:
    name: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class KeyRing:
    """Named keys, newest first: `current` makes new things, every key is accepted."""

    keys: tuple[NamedKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a key ring needs at least one key")
        names = [key.name for key in self.keys]
        if len(set(names)) != len(names):
            raise ValueError(f"key names must be unique, got {names}")

    @property
    def current(self) -> NamedKey:
        return self.keys[0]

    @property
    def names(self) -> list[str]:
        return [key.name for key in self.keys]

    def get(self, name: str) -> NamedKey | None:
        return next((key for key in self.keys if key.name == name), None)

    def derive(self, purpose: str, location: str) -> KeyRing:
        """The ring of `location`'s keys for `purpose`, each named as its master."""
        return KeyRing(tuple(NamedKey(k.name, derive(k.secret, purpose, location)) for k in self))

    def __iter__(self) -> Iterator[NamedKey]:
        return iter(self.keys)

    def to_text(self) -> str:
        return ",".join(f"{k.name}:{base64.b64encode(k.secret).decode()}" for k in self.keys)


def parse_ring(text: str, what: str = "key ring") -> KeyRing:
    """Reads the text form; errors name the entry by position or name, never its secret."""
    keys = []
    for name, encoded in named_entries(text, what, "name:base64secret"):
        try:
            secret = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{what}: the secret of {name!r} is not base64") from None
        if len(secret) < KEY_BYTES:
            raise ValueError(
                f"{what}: the secret of {name!r} has {len(secret)} bytes, at least {KEY_BYTES}"
                " are required"
            )
        keys.append(NamedKey(name, secret))
    return KeyRing(tuple(keys))


def new_secret() -> str:
    """A fresh master secret in the text form's base64 (`openssl rand -base64 32` is the same)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()
