"""Backup settings from the environment; the seed's AWS_S3_* names keep working."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from session_pod.envvars import ConfigError, env_first, env_int, env_number
from session_pod.storage.backups import KeySource
from session_pod.storage.errors import KeysUnavailable
from session_pod.storage.stores import BackupStore, LocalStore, S3Store
from whatsapp_common.keys import KeyRing, parse_ring


@dataclass(frozen=True)
class StorageSettings:
    bucket: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    prefix: str = "whatsapp-sessions"
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    keep: int = 5
    interval_seconds: float = 900.0
    settle_seconds: float = 2.5
    local_dir: Path = Path("/data/backups")
    # The location's backup keys (see whatsapp_common.keys): a file, read at every backup and
    # restore (a mounted Secret, updated in place at a rotation), or the ring itself.
    keys_file: Path | None = None
    keys: KeyRing | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StorageSettings:
        keep = env_int(env, "BACKUP_KEEP", cls.keep, minimum=1)
        data_dir = Path(env_first(env, "DATA_DIR") or "/data")
        access_key_id = env_first(env, "AWS_ACCESS_KEY_ID", "AWS_S3_ACCESS_KEY_ID")
        secret_access_key = env_first(
            env,
            "AWS_SECRET_ACCESS_KEY",
            "AWS_S3_SECRET_ACCESS_KEY_ID",
            "AWS_S3_SECRET_ACCES_KEY_ID",  # the seed's spelling
        )
        keys_text = env_first(env, "BACKUP_KEYS")
        try:
            keys = parse_ring(keys_text, "BACKUP_KEYS") if keys_text else None
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        keys_file = env_first(env, "BACKUP_KEYS_FILE")
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("set both the S3 access key id and the secret access key, or neither")
        return cls(
            bucket=env_first(env, "S3_BUCKET", "AWS_S3_BUCKET_NAME"),
            endpoint_url=env_first(env, "S3_ENDPOINT_URL"),
            region=env_first(env, "S3_REGION", "AWS_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
            prefix=(env_first(env, "S3_PREFIX", "AWS_S3_FOLDER_NAME") or cls.prefix).strip("/"),
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            keep=keep,
            interval_seconds=env_number(
                env, "BACKUP_INTERVAL_SECONDS", cls.interval_seconds, minimum=1
            ),
            settle_seconds=env_number(env, "BACKUP_SETTLE_SECONDS", cls.settle_seconds, minimum=0),
            local_dir=Path(env_first(env, "LOCAL_BACKUP_DIR") or data_dir / "backups"),
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


def build_store(settings: StorageSettings) -> BackupStore:
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
