"""What the watches say of the namespace: its StatefulSets, Services and keys Secrets (as far
as ownership and drift go) and its WhatsAppSessions by location; of this shard's locations
only, when the operator is one shard of several (scope.py).

Filled once per namespace by one LIST of each kind on first use, then kept current by
kopf's watch events (`on.event`). Not kopf.index: kopf makes every handler wait until every
indexed object is indexed, and that wait costs O(objects²) wake-ups at startup (70 s with
1,000 locations on the test machine)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from whatsapp_common.crd import GROUP, PLURAL, VERSION

from .kube import Api
from .resource import Resource, Seen
from .scope import objects_selector, sessions_selector


class Cache:
    def __init__(self, api: Api, shard: str | None) -> None:
        self._api = api
        self._shard = shard  # lists what the watches see: this shard's objects only
        self._objects: dict[tuple[str, str], Seen] = {}  # (kind, name)
        self._sessions: dict[str, Resource] = {}  # by uid
        self._loaded: dict[str, asyncio.Task[None]] = {}  # by namespace

    async def ready(self, namespace: str) -> None:
        """Loads the namespace's objects once (concurrent callers share the one load)."""
        task = self._loaded.get(namespace)
        if task is None or (task.done() and task.exception() is not None):
            task = self._loaded[namespace] = asyncio.create_task(self._load(namespace))
        await asyncio.shield(task)

    def seen(self, kind: str, name: str) -> Seen | None:
        return self._objects.get((kind, name))

    def resources(self, namespace: str) -> list[Resource]:
        return [r for r in self._sessions.values() if r.namespace == namespace]

    def location(self, label: str) -> list[Resource]:
        """The resources of a location (by its label value): one, or more in Conflict."""
        return [r for r in self._sessions.values() if r.label == label]

    def object_event(self, type_: str | None, body: Any) -> Seen:
        seen = Seen.of(body)
        if type_ == "DELETED":
            self._objects.pop((seen.kind, seen.name), None)
        else:
            self._objects[(seen.kind, seen.name)] = seen
        return seen

    def session_event(self, type_: str | None, body: Any) -> Resource:
        resource = Resource.of(body)
        if type_ == "DELETED":
            self._sessions.pop(resource.uid, None)
        else:
            self._sessions[resource.uid] = resource
        return resource

    async def _load(self, namespace: str) -> None:
        apps, core, custom = self._api.kube.apps, self._api.kube.core, self._api.kube.custom
        for kind, lister in (
            ("StatefulSet", apps.list_namespaced_stateful_set),
            ("Service", core.list_namespaced_service),
            ("Secret", core.list_namespaced_secret),
        ):
            # Raw JSON: the client's models cost milliseconds per object to build.
            response = await self._api.call(
                f"list {kind}",
                lister,
                namespace,
                label_selector=objects_selector(self._shard),
                _preload_content=False,
            )
            listing = json.loads(response.data)
            for item in listing["items"]:
                self._objects.setdefault(
                    (kind, item["metadata"]["name"]), Seen.of({**item, "kind": kind})
                )
        listing = await self._api.call(
            "list WhatsAppSessions",
            custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            label_selector=sessions_selector(self._shard) or "",
        )
        for item in listing["items"]:
            self._sessions.setdefault(item["metadata"]["uid"], Resource.of(item))
