"""Delete: the finalizer applies spec.deletionPolicy to the location's S3 backups, and only
when this resource is the location's: a resource in Conflict, or one whose StatefulSet
belongs to another resource, removes nothing but itself.

Retain (the default) keeps the backups. Delete logs the session out through its pod (which
unlinks the device and deletes the backups); when no pod answers (none runs, refused,
timed out, an error answer), the operator deletes the backups itself with the session pod's
object store code (whatsapp_common.objectstore) and its own S3 settings.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import aiohttp

from whatsapp_common.objectstore import StoreSettings, build_store, delete_location
from whatsapp_common.pod_auth import first_accepted

from .resource import Resource

LOGOUT_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=5)


async def apply_deletion_policy(
    resource: Resource,
    owner_uid: str | None,
    others: int,
    address: tuple[str, int] | None,
    authorizations: Sequence[str],
    logger: Any,
) -> str:
    """`owner_uid`: the controller of the location's StatefulSet (None: there is none);
    `others`: how many other resources name this location; `address`: the running pod's
    (IP, port); `authorizations`: its pod tokens, newest first."""
    location = resource.location
    if owner_uid != resource.uid and (owner_uid is not None or others):
        logger.info("not the location's resource: nothing removed", extra={"location": location})
        return "not owner"
    if resource.spec.get("deletionPolicy", "Retain") != "Delete":
        logger.info("deletion policy Retain: backups kept", extra={"location": location})
        return "retained"
    if address is not None:
        url = f"http://{address[0]}:{address[1]}/logout"
        body = {"location_identifier": location}
        try:
            async with aiohttp.ClientSession(timeout=LOGOUT_TIMEOUT) as http:

                async def logout(authorization: str) -> int:
                    headers = {"Authorization": authorization}
                    async with http.post(url, json=body, headers=headers) as response:
                        return response.status

                status = await first_accepted(authorizations, logout, int)
            if status == 200:
                logger.info("logged out and backups deleted", extra={"location": location})
                return "logged out"
            logger.warning(f"logout answered {status}", extra={"location": location})
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning(f"logout failed ({exc!r}): deleting the backups directly")
    settings = StoreSettings.from_env(os.environ)
    deleted = await delete_location(build_store(settings), settings.prefix, location)
    logger.info(f"deleted {deleted} backup objects", extra={"location": location})
    return "backups deleted"
