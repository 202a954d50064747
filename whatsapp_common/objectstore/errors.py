"""Errors of the object store. A store error is never read as "there is no backup"."""

from __future__ import annotations


class StoreError(Exception):
    """The backup store failed; see the subclasses for what the caller should do."""


class StoreUnavailable(StoreError):
    """Network error, timeout, throttling or 5xx: retry later."""


class StoreAccessDenied(StoreError):
    """The store refuses us (credentials, permissions, bucket): retrying will not help."""


class ObjectNotFound(StoreError):
    """The requested key does not exist (a listed object vanished, or a backup is incomplete)."""
