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
    ObjectNotFound,
    SnapshotError,
    SnapshotUnstable,
    StoreAccessDenied,
    StoreError,
    StoreUnavailable,
)
from session_pod.storage.retry import OnRetry, RetryPolicy
from session_pod.storage.settings import StorageSettings, build_store
from session_pod.storage.stores import BackupStore, LocalStore, S3Store

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
