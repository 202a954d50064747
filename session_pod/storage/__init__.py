"""Versioned, checksummed, crash-safe backups of a Chromium profile's WhatsApp login."""

from session_pod.storage.backups import (
    BackupManager,
    BackupRecord,
    KeySource,
    ReencryptResult,
    RestoreResult,
    SkippedBackup,
)
from session_pod.storage.errors import (
    KeysUnavailable,
    NothingToBackUp,
    SnapshotError,
    SnapshotUnstable,
)
from session_pod.storage.retry import OnRetry, RetryPolicy
from session_pod.storage.settings import StorageSettings
from whatsapp_common.objectstore import (
    BackupStore,
    LocalStore,
    ObjectNotFound,
    S3Store,
    StoreAccessDenied,
    StoreError,
    StoreUnavailable,
    build_store,
)

__all__ = [
    "BackupManager",
    "BackupRecord",
    "BackupStore",
    "KeySource",
    "KeysUnavailable",
    "LocalStore",
    "NothingToBackUp",
    "ObjectNotFound",
    "OnRetry",
    "ReencryptResult",
    "RestoreResult",
    "RetryPolicy",
    "S3Store",
    "SkippedBackup",
    "SnapshotError",
    "SnapshotUnstable",
    "StorageSettings",
    "StoreAccessDenied",
    "StoreError",
    "StoreUnavailable",
    "build_store",
]
