"""Backup settings from the environment: which store (whatsapp_common.objectstore), how
many versions to keep and how often to take one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from whatsapp_common.envvars import env_int, env_number
from whatsapp_common.objectstore.settings import StoreSettings, store_fields


@dataclass(frozen=True)
class StorageSettings(StoreSettings):
    keep: int = 5
    interval_seconds: float = 900.0
    settle_seconds: float = 2.5

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StorageSettings:
        return cls(
            **store_fields(env),
            keep=env_int(env, "BACKUP_KEEP", cls.keep, minimum=1),
            interval_seconds=env_number(
                env, "BACKUP_INTERVAL_SECONDS", cls.interval_seconds, minimum=1
            ),
            settle_seconds=env_number(env, "BACKUP_SETTLE_SECONDS", cls.settle_seconds, minimum=0),
        )
