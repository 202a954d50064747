"""Claiming a location's StatefulSet and Service for one WhatsAppSession, and nothing else.

The StatefulSet `session_name(location)` is the claim on a location: it is created with a
plain create, which only one resource can win (the API server refuses a second object of
the same name with 409). An object that exists is only ever applied to when its controller
owner reference is this resource, and the apply carries the object's uid, so an object
replaced in between is refused (uid is immutable) instead of being taken over. An object
owned by another resource, or by nobody, is reported and left as it is.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kubernetes.client.exceptions import ApiException

from .kube import APPLY, Api
from .resource import DIGEST, Resource, Seen


def digest(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def _calls(api: Api, kind: str) -> tuple[Any, Any, Any]:
    """(create, read, patch) of `kind` in the synchronous client."""
    if kind == "StatefulSet":
        apps = api.kube.apps
        return (
            apps.create_namespaced_stateful_set,
            apps.read_namespaced_stateful_set,
            apps.patch_namespaced_stateful_set,
        )
    core = api.kube.core
    if kind == "Secret":
        return (
            core.create_namespaced_secret,
            core.read_namespaced_secret,
            core.patch_namespaced_secret,
        )
    return (
        core.create_namespaced_service,
        core.read_namespaced_service,
        core.patch_namespaced_service,
    )


def _seen(api: Api, obj: Any) -> Seen:
    return Seen.of(api.kube.core.api_client.sanitize_for_serialization(obj))


async def claim(
    api: Api, resource: Resource, manifest: dict[str, Any], seen: Seen | None, force: bool
) -> tuple[str | None, Seen, bool]:
    """Makes the object match `manifest` if `resource` owns it (or creates it). Returns
    (who owns it instead, or None when `resource` does; what is now known of the object;
    whether it was written).

    `seen` is the watch's picture of the object (None: not there, as far as it knows); an
    owned object already carrying this manifest's digest is left alone unless `force`
    (it was edited by hand)."""
    kind, meta = manifest["kind"], manifest["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    create, read, patch = _calls(api, kind)
    manifest = {**manifest, "metadata": {**meta, "ownerReferences": [owner_reference(resource)]}}
    applied = digest(manifest)
    manifest["metadata"]["annotations"] = {**meta.get("annotations", {}), DIGEST: applied}
    if seen is None:
        try:
            created = await api.call(f"create {kind}", create, namespace, manifest)
            return None, _seen(api, created), True
        except ApiException as exc:
            if exc.status != 409:  # 409: it exists after all (made meanwhile, or not watched yet)
                raise
        seen = _seen(api, await api.call(f"read {kind}", read, name, namespace))
    if seen.owner_uid != resource.uid:
        return seen.owner or "nobody", seen, False
    if seen.digest == applied and not force:
        return None, seen, False
    manifest["metadata"]["uid"] = seen.uid  # refused (422) if the object was replaced
    applied_object = await api.call(f"apply {kind}", patch, name, namespace, manifest, **APPLY)
    return None, _seen(api, applied_object), True


def owner_reference(resource: Resource) -> dict[str, Any]:
    """The controller reference: the garbage collector deletes the object with its owner."""
    body = resource.body()
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "name": resource.name,
        "uid": resource.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
