"""Settings of one session pod, read from the environment (documented in README)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from whatsapp_common.envvars import ConfigError, env_bool, env_int, env_number

from .auth import PodAuth
from .delivery.watchdog import WatchdogSettings
from .delivery.webhooks import WebhookSettings
from .links import LinkSettings
from .storage.errors import KeysUnavailable
from .storage.settings import StorageSettings

__all__ = ["ConfigError", "Settings"]

DEFAULT_WAJS_BUNDLE = (
    Path(__file__).resolve().parent.parent / "node_modules/@wppconnect/wa-js/dist/wppconnect-wa.js"
)


@dataclass(frozen=True)
class Settings:
    location_id: str
    auth: PodAuth = field(repr=False)
    host: str = "0.0.0.0"
    port: int = 8093
    data_dir: Path = Path("/data")
    whatsapp_web_url: str = "https://web.whatsapp.com/"
    inject_wajs: bool = True
    wajs_bundle: Path = DEFAULT_WAJS_BUNDLE
    chromium_path: str = "/usr/lib/chromium/chromium-headless-shell"
    # Processes traded for memory (benchmarks/session_pod_levers.py): the GPU process
    # (headless, no GPU: it only composites) and the network service run in the browser
    # process, and renderers are started without the two zygotes (the pod runs Chromium
    # without its sandbox, which the zygotes serve): four processes and 24 MB less.
    chromium_memory_args: tuple[str, ...] = (
        "--in-process-gpu",
        "--enable-features=NetworkServiceInProcess2",
        "--no-zygote",
    )
    chromium_extra_args: tuple[str, ...] = ()
    # Young generation semi-spaces of 1 MB instead of V8's 16: 9 MB less for Playwright's
    # node driver (benchmarks/session_pod_levers.py).
    driver_node_options: str = "--max-semi-space-size=1"
    device_name: str = "WhatsApp Sessions"
    archive_after_send: bool = True
    call_timeout: float = 30.0
    health_timeout: float = 5.0
    load_timeout: float = 60.0
    qr_ttl: float = 20.0
    relaunch_backoff_max: float = 30.0
    relaunch_max_attempts: int = 5
    health_check_interval: float = 5.0
    browser_memory_limit_mb: float = 0.0  # 0: never recycled for its memory
    browser_memory_check_interval: float = 60.0
    sync_poll_interval: float = 1.0
    send_rate_per_minute: float = 60.0
    send_wait: float = 10.0
    send_mark_is_read: bool = False
    send_link_preview: bool = False
    send_detect_mentioned: bool = False
    sync_max_wait: float = 120.0
    qr_reload_selector: str = "[data-ref] button"
    # Hibernation (set by the operator from spec.hibernation): idle after this long without a
    # send or a location request (0: never), looked at this often (idleness.py).
    idle_after: float = 0.0
    idle_check_interval: float = 2.0
    storage: StorageSettings = field(default_factory=StorageSettings)
    webhooks: WebhookSettings = field(default_factory=lambda: WebhookSettings(base_url=None))
    watchdog: WatchdogSettings = field(default_factory=WatchdogSettings)
    links: LinkSettings = field(default_factory=LinkSettings)

    @property
    def profile_dir(self) -> Path:
        """Chromium's user data directory: the WhatsApp login lives here."""
        return self.data_dir / "profile"

    @property
    def delivery_db(self) -> Path:
        """The outbox, message ledger and idempotency keys (SQLite, on the pod's volume)."""
        return self.data_dir / "delivery.db"

    def send_options(self) -> dict[str, bool]:
        """wa-js SendMessageOptions for automatic messages: its defaults mark the customer's
        chat as read, fetch a link preview over the network and parse mentions
        (src/chat/defaultSendMessageOptions.ts); a booking reminder wants none of that."""
        return {
            "markIsRead": self.send_mark_is_read,
            "linkPreview": self.send_link_preview,
            "detectMentioned": self.send_detect_mentioned,
        }

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        location = env.get("LOCATION_ID", "").strip()
        if not location:
            raise ConfigError("LOCATION_ID is required: the location this pod serves")
        call_timeout = env_number(env, "CALL_TIMEOUT_SECONDS", cls.call_timeout, minimum=0.1)
        send_wait = env_number(env, "SEND_WAIT_SECONDS", cls.send_wait, minimum=0.1)
        if send_wait >= call_timeout:
            raise ConfigError(
                f"SEND_WAIT_SECONDS ({send_wait:g}) must be below CALL_TIMEOUT_SECONDS"
                f" ({call_timeout:g}): the page answers a send within the first"
            )
        storage = StorageSettings.from_env(env)
        _check_backup_keys(storage)
        return cls(
            location_id=location,
            auth=PodAuth.from_env(env),
            host=env.get("HOST", cls.host),
            port=env_int(env, "PORT", cls.port, minimum=1),
            data_dir=Path(env.get("DATA_DIR", str(cls.data_dir))),
            whatsapp_web_url=env.get("WHATSAPP_WEB_URL", cls.whatsapp_web_url),
            inject_wajs=env_bool(env, "WAJS_INJECT", cls.inject_wajs),
            wajs_bundle=Path(env.get("WAJS_BUNDLE", str(cls.wajs_bundle))),
            chromium_path=env.get("CHROMIUM_PATH", cls.chromium_path),
            chromium_memory_args=tuple(
                env.get("CHROMIUM_MEMORY_ARGS", " ".join(cls.chromium_memory_args)).split()
            ),
            chromium_extra_args=tuple(env.get("CHROMIUM_EXTRA_ARGS", "").split()),
            driver_node_options=env.get("DRIVER_NODE_OPTIONS", cls.driver_node_options),
            device_name=env.get("DEVICE_NAME", cls.device_name),
            archive_after_send=env_bool(env, "ARCHIVE_AFTER_SEND", cls.archive_after_send),
            call_timeout=call_timeout,
            health_timeout=env_number(
                env, "HEALTH_TIMEOUT_SECONDS", cls.health_timeout, minimum=0.1
            ),
            load_timeout=env_number(env, "LOAD_TIMEOUT_SECONDS", cls.load_timeout, minimum=1),
            qr_ttl=env_number(env, "QR_TTL_SECONDS", cls.qr_ttl, minimum=1),
            relaunch_backoff_max=env_number(
                env, "RELAUNCH_BACKOFF_MAX_SECONDS", cls.relaunch_backoff_max, minimum=0.1
            ),
            relaunch_max_attempts=env_int(
                env, "RELAUNCH_MAX_ATTEMPTS", cls.relaunch_max_attempts, minimum=1
            ),
            health_check_interval=env_number(
                env, "HEALTH_CHECK_INTERVAL_SECONDS", cls.health_check_interval, minimum=0.1
            ),
            browser_memory_limit_mb=env_number(
                env, "BROWSER_MEMORY_LIMIT_MB", cls.browser_memory_limit_mb, minimum=0
            ),
            browser_memory_check_interval=env_number(
                env,
                "BROWSER_MEMORY_CHECK_INTERVAL_SECONDS",
                cls.browser_memory_check_interval,
                minimum=0.1,
            ),
            sync_poll_interval=env_number(
                env, "SYNC_POLL_INTERVAL_SECONDS", cls.sync_poll_interval, minimum=0.05
            ),
            send_rate_per_minute=env_number(
                env, "SEND_RATE_PER_MINUTE", cls.send_rate_per_minute, minimum=0
            ),
            send_wait=send_wait,
            send_mark_is_read=env_bool(env, "SEND_MARK_IS_READ", cls.send_mark_is_read),
            send_link_preview=env_bool(env, "SEND_LINK_PREVIEW", cls.send_link_preview),
            send_detect_mentioned=env_bool(env, "SEND_DETECT_MENTIONED", cls.send_detect_mentioned),
            sync_max_wait=env_number(env, "SYNC_MAX_WAIT_SECONDS", cls.sync_max_wait, minimum=0),
            qr_reload_selector=env.get("QR_RELOAD_SELECTOR", cls.qr_reload_selector),
            idle_after=env_number(env, "IDLE_AFTER_SECONDS", cls.idle_after, minimum=0),
            idle_check_interval=env_number(
                env, "IDLE_CHECK_SECONDS", cls.idle_check_interval, minimum=0.1
            ),
            storage=storage,
            webhooks=WebhookSettings.from_env(env),
            watchdog=WatchdogSettings.from_env(env),
            links=LinkSettings.from_env(env),
        )


def _check_backup_keys(storage: StorageSettings) -> None:
    """Every backup is encrypted: a pod without its location's keys does not start."""
    source = storage.key_source()
    if source is None:
        raise ConfigError(
            "BACKUP_KEYS_FILE (or BACKUP_KEYS) is required: the location's backup keys, which"
            " the operator or local mode derives (see README, Security)"
        )
    try:
        source()
    except KeysUnavailable as exc:
        raise ConfigError(str(exc)) from None
