"""`python3 -m session_pod.reencrypt`: after a master key rotation, seal this location's older
backups (and those written before encryption) with the current key.

Run inside the location's pod (`kubectl exec wa-13-0 -- python3 -m session_pod.reencrypt`)
or with the pod's environment; prints the outcome as JSON; exits 1 when a backup could not be
opened (it is left as it was)."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict

from whatsapp_common.logs import configure

from .config import ConfigError, Settings
from .storage import BackupManager, build_store


def main() -> None:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        sys.exit(f"configuration error: {exc}")
    configure({"service": "session-pod-reencrypt", "location": settings.location_id}, "INFO")
    storage = settings.storage
    manager = BackupManager(
        build_store(storage),
        storage.prefix,
        settings.location_id,
        storage.keep,
        keys=storage.key_source(),
    )
    result = asyncio.run(manager.reencrypt(settings.data_dir))
    print(json.dumps(asdict(result)))
    sys.exit(1 if result.skipped else 0)


if __name__ == "__main__":
    main()
