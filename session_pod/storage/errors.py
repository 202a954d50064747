"""Errors of the backup storage. A store error is never read as "there is no backup"."""

from __future__ import annotations


class StoreError(Exception):
    """The backup store failed; see the subclasses for what the caller should do."""


class StoreUnavailable(StoreError):
    """Network error, timeout, throttling or 5xx: retry later."""


class StoreAccessDenied(StoreError):
    """The store refuses us (credentials, permissions, bucket): retrying will not help."""


class ObjectNotFound(StoreError):
    """The requested key does not exist (a listed object vanished, or a backup is incomplete)."""


class SnapshotError(Exception):
    """No consistent snapshot of the profile's login could be taken."""


class SnapshotUnstable(SnapshotError):
    """The profile kept changing while it was copied; try the backup again later."""


class NothingToBackUp(SnapshotError):
    """The profile holds no login data (no Local Storage, no IndexedDB of the origin)."""


class KeysUnavailable(StoreAccessDenied):
    """The location's backup keys are missing or unreadable: nothing can be sealed or opened."""
