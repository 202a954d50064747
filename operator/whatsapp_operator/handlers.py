"""kopf handlers: `kopf run -m whatsapp_operator.handlers`. Each is small and calls one
module; configuration and clients are made at startup and shared through `memo`.

Indexes (kept current by kopf's watches, complete before any handler runs) stand in for
every read: of the location's StatefulSet and Service, of the resources per location."""

from __future__ import annotations

from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from . import GROUP, PLURAL, VERSION
from .config import OperatorConfig
from .followers import Followers, PodSeen
from .kube import Api, Kube, Unreachable, handler_error
from .manifests import APP, LOCATION_LABEL
from .metrics import serve
from .naming import session_name
from .notices import Notices
from .reconcile import reconcile
from .removal import apply_deletion_policy
from .resource import Resource, Seen

OURS = {"app.kubernetes.io/name": APP}
KINDS = ("StatefulSet", "Service")


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """The project's annotation prefix and finalizer, timeouts; the clients, once."""
    config = OperatorConfig.from_env()
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.scanning.disabled = True  # no cluster-wide CRD watch: namespaced permissions only
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 70
    settings.networking.request_timeout = config.api_timeout_seconds
    settings.posting.level = 20  # INFO: Events of transitions (rate-limited in notices.py)
    settings.peering.lifetime = config.peering_lifetime_seconds
    api = Api(Kube(), config.api_workers, config.api_timeout_seconds)
    notices = Notices(config.events_per_minute)
    followers = Followers(api, config, notices)
    await followers.start()
    memo.config, memo.api, memo.notices, memo.followers = config, api, notices, followers
    memo.versions = {}  # (kind, name) -> the version this operator last applied or saw
    if config.metrics_port:
        serve(config.metrics_port)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await memo.followers.close()
    memo.api.close()


@kopf.index("apps", "v1", "statefulsets")
def statefulset_index(body: kopf.Body, name: str, **_: Any) -> dict[str, Seen]:
    return {name: Seen.of(body)}


@kopf.index("v1", "services")
def service_index(body: kopf.Body, name: str, **_: Any) -> dict[str, Seen]:
    return {name: Seen.of(body)}


@kopf.index(GROUP, VERSION, PLURAL)
def location_index(body: kopf.Body, **_: Any) -> dict[str, Resource]:
    """The resources of each location (by its label value): one, or more in Conflict."""
    resource = Resource.of(body)
    return {resource.label: resource}


def first(index: kopf.Index[str, Any], key: str) -> Any:
    store = index.get(key)
    return next(iter(store), None) if store is not None else None


def seen_objects(name: str, statefulsets: kopf.Index, services: kopf.Index) -> dict[str, Any]:
    return {"StatefulSet": first(statefulsets, name), "Service": first(services, name)}


async def run_reconcile(
    memo: kopf.Memo, resource: Resource, seen: dict[str, Seen | None], force: bool = False
) -> dict[str, Any]:
    """Reconciles one resource, tells the followers who owns the location, and returns the
    status fields to set."""
    try:
        outcome = await reconcile(memo.api, memo.config, memo.notices, resource, seen, force)
    except (ApiException, Unreachable) as exc:
        raise handler_error(exc, f"reconciling {resource.name}") from exc
    for now in outcome.seen:
        memo.versions[(now.kind or "", now.name)] = now.version
    if outcome.owned:
        memo.followers.own(resource, outcome.status)
    else:
        memo.followers.release(resource)
    return outcome.status


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def apply_spec(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    statefulset_index: kopf.Index,
    service_index: kopf.Index,
    **_: Any,
) -> None:
    resource = Resource.of(body)
    seen = seen_objects(session_name(resource.location), statefulset_index, service_index)
    status = await run_reconcile(memo, resource, seen)
    # Only what differs: a resume of an unchanged resource sends no status patch.
    patch.status.update({k: v for k, v in status.items() if resource.status.get(k) != v})


@kopf.on.event("v1", "pods", labels=OURS)
async def pod_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Starts or stops the location's follower: the only way the operator learns of pods."""
    label = (body.metadata.labels or {}).get(LOCATION_LABEL)
    if label:
        running = PodSeen.running(body, memo.config.session_port)
        memo.followers.pod(label, None if type == "DELETED" else running)


@kopf.on.event("apps", "v1", "statefulsets", labels=OURS)
@kopf.on.event("v1", "services", labels=OURS)
async def owned_object_changed(
    type: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    location_index: kopf.Index,
    statefulset_index: kopf.Index,
    service_index: kopf.Index,
    **_: Any,
) -> None:
    """Drift: a location's object deleted, or edited by hand, is put back at once."""
    seen = Seen.of(body)
    resources = [
        r
        for r in location_index.get((body.metadata.labels or {}).get(LOCATION_LABEL), ())
        if not r.deleting
    ]
    owner = [r for r in resources if r.uid == seen.owner_uid]
    objects = seen_objects(seen.name, statefulset_index, service_index)
    if type == "DELETED":
        memo.versions.pop((seen.kind, seen.name), None)
        # The owner takes it back; with no owner left, the oldest other resource may claim it.
        for resource in owner or sorted(resources, key=lambda r: (r.created, r.name)):
            await redo(memo, resource, {**objects, seen.kind: None}, force=False)
    elif type == "MODIFIED" and owner:
        known = memo.versions.get((seen.kind, seen.name))
        if known is not None and known != seen.version:  # a change this operator did not make
            await redo(memo, owner[0], {**objects, seen.kind: seen}, force=True)


async def redo(
    memo: kopf.Memo, resource: Resource, seen: dict[str, Seen | None], force: bool
) -> None:
    """A reconcile outside kopf's resource handlers: it writes the status itself."""
    status = await run_reconcile(memo, resource, seen, force)
    await memo.api.call(
        "patch status",
        memo.api.kube.custom.patch_namespaced_custom_object_status,
        GROUP,
        VERSION,
        resource.namespace,
        PLURAL,
        resource.name,
        {"status": status},
    )


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete(
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    statefulset_index: kopf.Index,
    location_index: kopf.Index,
    **_: Any,
) -> None:
    resource = Resource.of(body)
    statefulset = first(statefulset_index, session_name(resource.location))
    others = [r for r in location_index.get(resource.label, ()) if r.uid != resource.uid]
    address = memo.followers.address(resource.label)
    memo.followers.release(resource)
    memo.notices.forget(resource)
    await apply_deletion_policy(
        resource,
        statefulset.owner_uid if statefulset else None,
        len(others),
        address,
        logger,
    )
