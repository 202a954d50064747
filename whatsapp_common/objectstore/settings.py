"""Which object store, from the environment; the seed's AWS_S3_* names keep working."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whatsapp_common.envvars import ConfigError, env_first

from .stores import BackupStore, LocalStore, S3Store


@dataclass(frozen=True)
class StoreSettings:
    bucket: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    prefix: str = "whatsapp-sessions"
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    local_dir: Path = Path("/data/backups")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StoreSettings:
        return cls(**store_fields(env))


def store_fields(env: Mapping[str, str]) -> dict[str, Any]:
    """StoreSettings' fields from `env` (for settings that extend it)."""
    data_dir = Path(env_first(env, "DATA_DIR") or "/data")
    access_key_id = env_first(env, "AWS_ACCESS_KEY_ID", "AWS_S3_ACCESS_KEY_ID")
    secret_access_key = env_first(
        env,
        "AWS_SECRET_ACCESS_KEY",
        "AWS_S3_SECRET_ACCESS_KEY_ID",
        "AWS_S3_SECRET_ACCES_KEY_ID",  # the seed's spelling
    )
    if (access_key_id is None) != (secret_access_key is None):
        raise ConfigError("set both the S3 access key id and the secret access key, or neither")
    return {
        "bucket": env_first(env, "S3_BUCKET", "AWS_S3_BUCKET_NAME"),
        "endpoint_url": env_first(env, "S3_ENDPOINT_URL"),
        "region": env_first(env, "S3_REGION", "AWS_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
        "prefix": (env_first(env, "S3_PREFIX", "AWS_S3_FOLDER_NAME") or StoreSettings.prefix).strip(
            "/"
        ),
        "access_key_id": access_key_id,
        "secret_access_key": secret_access_key,
        "local_dir": Path(env_first(env, "LOCAL_BACKUP_DIR") or data_dir / "backups"),
    }


def build_store(settings: StoreSettings) -> BackupStore:
    """S3 when a bucket is configured, else the local directory."""
    if settings.bucket is None:
        return LocalStore(settings.local_dir)
    return S3Store(
        settings.bucket,
        endpoint_url=settings.endpoint_url,
        region=settings.region,
        access_key_id=settings.access_key_id,
        secret_access_key=settings.secret_access_key,
    )
