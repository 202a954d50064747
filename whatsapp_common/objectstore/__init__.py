"""The object store that holds the backups (S3 or a local directory), its settings, and
removing everything of one location. What a backup is (versions, manifests, archives)
belongs to the session pod (session_pod.storage)."""

from .errors import ObjectNotFound, StoreAccessDenied, StoreError, StoreUnavailable
from .location import delete_location, location_root
from .settings import StoreSettings, build_store
from .stores import BackupStore, LocalStore, S3Store

__all__ = [
    "BackupStore",
    "LocalStore",
    "ObjectNotFound",
    "S3Store",
    "StoreAccessDenied",
    "StoreError",
    "StoreSettings",
    "StoreUnavailable",
    "build_store",
    "delete_location",
    "location_root",
]
