"""Where one location's objects live: everything under `<prefix>/<location>/`."""

from __future__ import annotations

import re

from .stores import BackupStore

_LOCATION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def location_root(prefix: str, location: str) -> str:
    """Raises ValueError for a location id that is not usable in a key."""
    if not _LOCATION.fullmatch(location) or location in (".", ".."):
        raise ValueError(f"location id not usable in a key: {location!r}")
    prefix = prefix.strip("/")
    return f"{prefix}/{location}/" if prefix else f"{location}/"


async def delete_location(store: BackupStore, prefix: str, location: str) -> int:
    """Removes every object of the location, manifests first (so no backup is ever listed
    whose data is gone); returns how many there were."""
    root = location_root(prefix, location)
    keys = await store.list(root)
    manifests = [key for key in keys if key.startswith(f"{root}manifests/")]
    if manifests:
        await store.delete(manifests)
    rest = sorted(set(keys) - set(manifests))
    if rest:
        await store.delete(rest)
    return len(keys)
