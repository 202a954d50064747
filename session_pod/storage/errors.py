"""Errors of the session pod's backups: the snapshot of the profile, the keys (the store's
own errors are whatsapp_common.objectstore's)."""

from __future__ import annotations

from whatsapp_common.objectstore import StoreAccessDenied


class SnapshotError(Exception):
    """No consistent snapshot of the profile's login could be taken."""


class SnapshotUnstable(SnapshotError):
    """The profile kept changing while it was copied; try the backup again later."""


class NothingToBackUp(SnapshotError):
    """The profile holds no login data (no Local Storage, no IndexedDB of the origin)."""


class KeysUnavailable(StoreAccessDenied):
    """The location's backup keys are missing or unreadable: nothing can be sealed or opened."""
