"""Where and how webhooks go to Rails, read from the seed's environment variables.

URL scheme (kept from the seed): RAILS_APP_URL + RAILS_APP_PORT + RAILS_APP_ENDPOINT_SCOPE,
then "/" + event type, e.g. http://localhost:3000/whatsapp_js/message_ack.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from whatsapp_common.envvars import ConfigError, env_number
from whatsapp_common.event_types import EventType


@dataclass(frozen=True)
class WebhookSettings:
    base_url: str | None
    secret: str | None = None
    # During a rotation of WEBHOOK_SECRET: the old one, also signed with until Rails has moved.
    previous_secret: str | None = None
    events: frozenset[str] | None = None  # None: every event type
    retry_base: float = 1.0
    retry_max: float = 300.0
    timeout: float = 10.0

    @property
    def enabled(self) -> bool:
        return self.base_url is not None

    def url_for(self, event_type: str) -> str:
        if self.base_url is None:
            raise ConfigError("webhooks are disabled: RAILS_APP_URL is not set")
        return f"{self.base_url}/{event_type}"

    def wants(self, event_type: str) -> bool:
        return self.enabled and (self.events is None or event_type in self.events)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> WebhookSettings:
        env = dict(os.environ if env is None else env)
        events = {e.strip() for e in env.get("WEBHOOK_EVENTS", "").split(",") if e.strip()}
        unknown = sorted(events - set(EventType))
        if unknown:
            raise ConfigError(f"WEBHOOK_EVENTS names unknown events: {', '.join(unknown)}")
        return cls(
            base_url=rails_base_url(
                env.get("RAILS_APP_URL", ""),
                env.get("RAILS_APP_PORT", ""),
                env.get("RAILS_APP_ENDPOINT_SCOPE", ""),
            ),
            secret=env.get("WEBHOOK_SECRET") or None,
            previous_secret=env.get("WEBHOOK_SECRET_PREVIOUS") or None,
            events=frozenset(events) or None,
            retry_base=env_number(env, "WEBHOOK_RETRY_BASE_SECONDS", cls.retry_base, minimum=0.001),
            retry_max=env_number(env, "WEBHOOK_RETRY_MAX_SECONDS", cls.retry_max, minimum=0.001),
            timeout=env_number(env, "WEBHOOK_TIMEOUT_SECONDS", cls.timeout, minimum=0.1),
        )


def rails_base_url(url: str, port: str, scope: str) -> str | None:
    """The seed concatenates "http://localhost:" + "3000" + "/whatsapp_js". Also accepted: a URL
    without the trailing colon ("http://rails" + "3000"), or one that already has the port."""
    url, port, scope = url.strip(), port.strip(), scope.strip().strip("/")
    if not url:
        return None
    parts = urlsplit(url.rstrip(":"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"RAILS_APP_URL must be an http(s) URL, got {url!r}")
    netloc = parts.netloc
    if port:
        if not port.isdigit():
            raise ConfigError(f"RAILS_APP_PORT must be a number, got {port!r}")
        if parts.port is None:
            netloc = f"{netloc}:{port}"
        elif parts.port != int(port):
            raise ConfigError(f"RAILS_APP_URL {url!r} has a port other than RAILS_APP_PORT {port}")
    path = parts.path.rstrip("/") + (f"/{scope}" if scope else "")
    return urlunsplit((parts.scheme, netloc, path, "", ""))
