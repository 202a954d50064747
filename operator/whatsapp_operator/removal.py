"""Delete: the finalizer applies spec.deletionPolicy to the location's S3 backups.

Retain (the default) keeps them. Delete logs the session out through its pod (which unlinks
the device and deletes the backups); when no pod answers, the operator deletes the backups
itself with the session pod's storage code and its own S3 settings.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp

from session_pod.storage import BackupManager, StorageSettings, build_store

from .kube import Kube


async def apply_deletion_policy(
    kube: Kube, spec: dict[str, Any], namespace: str, pod: str, port: int, logger: Any
) -> str:
    location = spec["locationId"]
    if spec.get("deletionPolicy", "Retain") != "Delete":
        logger.info("deletion policy Retain: backups kept", extra={"location": location})
        return "retained"
    address = await asyncio.to_thread(kube.pod_address, namespace, pod)
    if address is not None:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            url = f"http://{address}:{port}/logout"
            async with http.post(url, json={"location_identifier": location}) as response:
                if response.status == 200:
                    logger.info("logged out and backups deleted", extra={"location": location})
                    return "logged out"
                logger.warning(f"logout answered {response.status}", extra={"location": location})
    settings = StorageSettings.from_env(os.environ)
    manager = BackupManager(build_store(settings), settings.prefix, location, settings.keep)
    deleted = await manager.delete_all()
    logger.info(f"deleted {deleted} backup objects", extra={"location": location})
    return "backups deleted"
