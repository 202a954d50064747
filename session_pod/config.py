"""Settings of one session pod, read from the environment (documented in README)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WAJS_BUNDLE = (
    Path(__file__).resolve().parent.parent / "node_modules/@wppconnect/wa-js/dist/wppconnect-wa.js"
)


class ConfigError(ValueError):
    """An environment variable is missing or malformed."""


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _number(env: dict[str, str], name: str, default: float, minimum: float = 0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    location_id: str
    host: str = "0.0.0.0"
    port: int = 8093
    data_dir: Path = Path("/data")
    whatsapp_web_url: str = "https://web.whatsapp.com/"
    inject_wajs: bool = True
    wajs_bundle: Path = DEFAULT_WAJS_BUNDLE
    chromium_path: str = "/usr/bin/chromium"
    device_name: str = "WhatsApp Sessions"
    archive_after_send: bool = True
    call_timeout: float = 30.0
    health_timeout: float = 5.0
    load_timeout: float = 60.0
    qr_ttl: float = 20.0
    relaunch_backoff_max: float = 30.0
    relaunch_max_attempts: int = 5
    health_check_interval: float = 5.0

    @property
    def profile_dir(self) -> Path:
        """Chromium's user data directory: the WhatsApp login lives here."""
        return self.data_dir / "profile"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        location = env.get("LOCATION_ID", "").strip()
        if not location:
            raise ConfigError("LOCATION_ID is required: the location this pod serves")
        return cls(
            location_id=location,
            host=env.get("HOST", cls.host),
            port=int(_number(env, "PORT", cls.port, minimum=1)),
            data_dir=Path(env.get("DATA_DIR", str(cls.data_dir))),
            whatsapp_web_url=env.get("WHATSAPP_WEB_URL", cls.whatsapp_web_url),
            inject_wajs=_bool(env, "WAJS_INJECT", cls.inject_wajs),
            wajs_bundle=Path(env.get("WAJS_BUNDLE", str(cls.wajs_bundle))),
            chromium_path=env.get("CHROMIUM_PATH", cls.chromium_path),
            device_name=env.get("DEVICE_NAME", cls.device_name),
            archive_after_send=_bool(env, "ARCHIVE_AFTER_SEND", cls.archive_after_send),
            call_timeout=_number(env, "CALL_TIMEOUT_SECONDS", cls.call_timeout, minimum=0.1),
            health_timeout=_number(env, "HEALTH_TIMEOUT_SECONDS", cls.health_timeout, minimum=0.1),
            load_timeout=_number(env, "LOAD_TIMEOUT_SECONDS", cls.load_timeout, minimum=1),
            qr_ttl=_number(env, "QR_TTL_SECONDS", cls.qr_ttl, minimum=1),
            relaunch_backoff_max=_number(
                env, "RELAUNCH_BACKOFF_MAX_SECONDS", cls.relaunch_backoff_max, minimum=0.1
            ),
            relaunch_max_attempts=int(
                _number(env, "RELAUNCH_MAX_ATTEMPTS", cls.relaunch_max_attempts, minimum=1)
            ),
            health_check_interval=_number(
                env, "HEALTH_CHECK_INTERVAL_SECONDS", cls.health_check_interval, minimum=0.1
            ),
        )
