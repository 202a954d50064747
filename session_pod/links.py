"""The link page URL in the `qr` webhook, so Rails can text or e-mail it to the location.

The pod holds only its own location's link keys (LINK_KEYS_FILE, written by the operator,
derived from the router's link masters), so it can make links for its own location and no
other; the router checks them. Off unless both the keys and LINK_BASE_URL (the router's
public URL) are given (the chart gives both only with `router.publicUrl`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from whatsapp_common.envvars import ConfigError, env_first, env_int
from whatsapp_common.keys import KeyRing
from whatsapp_common.link_tokens import LinkGrant, sign
from whatsapp_common.pod_auth import ring_source


@dataclass(frozen=True)
class LinkSettings:
    keys: Callable[[], KeyRing] | None = field(default=None, repr=False)
    base_url: str | None = None
    ttl: int = 900

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LinkSettings:
        """LINK_KEYS or LINK_KEYS_FILE, LINK_BASE_URL, LINK_TTL_SECONDS. Raises ConfigError."""
        keys = ring_source(env, "LINK_KEYS")
        base_url = env_first(env, "LINK_BASE_URL")
        if base_url is not None and not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"LINK_BASE_URL must be an http(s) URL, got {base_url!r}")
        return cls(
            keys=keys,
            base_url=base_url and base_url.rstrip("/"),
            ttl=env_int(env, "LINK_TTL_SECONDS", cls.ttl, 60),
        )


class QrLinks:
    """The link of the current QR period, made again once half of its life is over."""

    def __init__(self, location: str, settings: LinkSettings) -> None:
        self._location = location
        self._settings = settings
        self._link: dict[str, Any] = {}

    def current(self) -> dict[str, Any]:
        """`{link_url, link_expires_at}` for the `qr` event, or {} when links are off."""
        keys, base_url = self._settings.keys, self._settings.base_url
        if keys is None or base_url is None:
            return {}
        now, ttl, location = int(time.time()), self._settings.ttl, self._location
        if self._link.get("link_expires_at", 0) - now < ttl / 2:
            grant = LinkGrant(location, f"Location {location}", now + ttl)
            url = f"{base_url}/link/{sign(keys(), grant)}"
            self._link = {"link_url": url, "link_expires_at": grant.expires_at}
        return self._link
