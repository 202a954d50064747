"""Errors of taking a snapshot of the profile (the store's errors: whatsapp_common.objectstore)."""

from __future__ import annotations


class SnapshotError(Exception):
    """No consistent snapshot of the profile's login could be taken."""


class SnapshotUnstable(SnapshotError):
    """The profile kept changing while it was copied; try the backup again later."""


class NothingToBackUp(SnapshotError):
    """The profile holds no login data (no Local Storage, no IndexedDB of the origin)."""
