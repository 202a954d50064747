"""Backup settings from the environment: which store (whatsapp_common.objectstore), the
location's backup keys, how many versions to keep and how often to take one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from session_pod.storage.backups import KeySource
from session_pod.storage.errors import KeysUnavailable
from whatsapp_common.envvars import ConfigError, env_first, env_int, env_number
from whatsapp_common.keys import KeyRing, parse_ring
from whatsapp_common.objectstore.settings import StoreSettings, store_fields


@dataclass(frozen=True)
class StorageSettings(StoreSettings):
    keep: int = 5
    interval_seconds: float = 900.0
    settle_seconds: float = 2.5
    # The location's backup keys (see whatsapp_common.keys): a file, read at every backup and
    # restore (a mounted Secret, updated in place at a rotation), or the ring itself.
    keys_file: Path | None = None
    keys: KeyRing | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StorageSettings:
        keys_text = env_first(env, "BACKUP_KEYS")
        try:
            keys = parse_ring(keys_text, "BACKUP_KEYS") if keys_text else None
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        keys_file = env_first(env, "BACKUP_KEYS_FILE")
        return cls(
            **store_fields(env),
            keep=env_int(env, "BACKUP_KEEP", cls.keep, minimum=1),
            interval_seconds=env_number(
                env, "BACKUP_INTERVAL_SECONDS", cls.interval_seconds, minimum=1
            ),
            settle_seconds=env_number(env, "BACKUP_SETTLE_SECONDS", cls.settle_seconds, minimum=0),
            keys_file=Path(keys_file) if keys_file else None,
            keys=keys,
        )

    def key_source(self) -> KeySource | None:
        """Where the backup keys come from; None when neither is set."""
        if self.keys is not None:
            ring = self.keys
            return lambda: ring
        if self.keys_file is not None:
            return partial(read_keys_file, self.keys_file)
        return None


def read_keys_file(path: Path) -> KeyRing:
    """Raises KeysUnavailable (never with the file's content)."""
    try:
        return parse_ring(path.read_text(), f"backup keys file {path}")
    except OSError as exc:
        raise KeysUnavailable(f"backup keys file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise KeysUnavailable(str(exc)) from None
