"""kopf handlers: `kopf run -m whatsapp_operator.handlers`. Each is small and calls one
module; configuration and clients are made at startup and shared through `memo`.

The cache (cache.py, kept current by kopf's watches) stands in for every read: of the
location's StatefulSet and Service, of the resources per location."""

from __future__ import annotations

import json
import os
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from whatsapp_common.crd import APP, GROUP, LOCATION_LABEL, PLURAL, ROLLOUT_PLURAL, VERSION
from whatsapp_common.naming import session_name
from whatsapp_common.pod_auth import PodCredentials

from .cache import Cache
from .config import OperatorConfig
from .followers import Followers, PodSeen
from .hibernation import Hibernation
from .kube import Api, Kube, Unreachable, handler_error
from .manifests import keys_secret_name
from .metrics import serve
from .notices import Notices
from .reconcile import reconcile
from .removal import apply_deletion_policy
from .resource import Resource, Seen
from .rollout import Rollouts
from .rollout_plan import RolloutSettings
from .scope import restrict_watches, user_agent

OURS = {"app.kubernetes.io/name": APP}


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """The project's annotation prefix and finalizer, timeouts, what is watched (this
    shard's objects only); the clients, once."""
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
    restrict_watches(settings, config.shard)
    api = Api(Kube(user_agent(config.shard)), config.api_workers, config.api_timeout_seconds)
    notices = Notices(config.events_per_minute)
    credentials = PodCredentials(config.pod_auth_masters)  # what the operator shows a pod
    followers = Followers(api, config, notices, credentials)
    await followers.start()
    memo.config, memo.api, memo.notices, memo.followers = config, api, notices, followers
    memo.credentials = credentials
    memo.cache = Cache(api, config.shard)
    memo.hibernation = Hibernation(
        config.session_defaults,
        lambda resource, fields: write_status(memo, resource, fields),
        lambda resource: reapply(memo, resource),
        notices,
        followers.idle_since,
    )
    followers.on_idle = memo.hibernation.poke
    memo.versions = {}  # (kind, name) -> the version this operator last applied or saw

    async def apply(resource: Resource) -> None:
        await redo(memo, resource, seen_objects(memo.cache, resource.location))

    rollout_settings = RolloutSettings.from_env(os.environ)
    peering = settings.peering
    memo.rollouts = Rollouts(
        api,
        config,
        rollout_settings,
        memo.cache,
        followers,
        notices,
        apply,
        None if peering.standalone else (peering.name, peering.priority),
    )
    followers.on_report = memo.rollouts.wake
    if config.metrics_port:
        serve(config.metrics_port)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await memo.rollouts.close()
    await memo.followers.close()
    memo.api.close()


def object_keys(location: str) -> list[tuple[str, str]]:
    """(kind, name) of the location's StatefulSet, Service and keys Secret."""
    name = session_name(location)
    return [("StatefulSet", name), ("Service", name), ("Secret", keys_secret_name(location))]


def seen_objects(cache: Cache, location: str) -> dict[str, Seen | None]:
    """The watches' picture of the location's objects, by kind."""
    return {kind: cache.seen(kind, name) for kind, name in object_keys(location)}


async def run_reconcile(
    memo: kopf.Memo, resource: Resource, seen: dict[str, Seen | None], force: bool = False
) -> dict[str, Any]:
    """Reconciles one resource, tells the followers who owns the location, and returns the
    status fields to set. The StatefulSet is rendered with the fleet revision the rollout
    gives the location, and the replicas of the freshest hibernation record.

    While it runs, the drift check leaves the location's objects alone: the watch event of
    its own write may come before the write's answer (and looked like a hand edit)."""
    resource = memo.hibernation.freshest(resource)
    keys = object_keys(resource.location)
    held = {key: memo.versions.pop(key) for key in keys if key in memo.versions}
    try:
        await memo.rollouts.ready(resource.namespace)
        fleet = memo.rollouts.fleet_for(resource, seen.get("StatefulSet"))
        outcome = await reconcile(memo.api, memo.config, memo.notices, resource, seen, fleet, force)
    except (ApiException, Unreachable) as exc:
        memo.versions.update(held)
        raise handler_error(exc, f"reconciling {resource.name}") from exc
    except BaseException:  # e.g. kopf's TemporaryError of a missing rollout CRD, a cancel
        memo.versions.update(held)
        raise
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
async def apply_spec(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    resource = Resource.of(body)
    await memo.cache.ready(resource.namespace)
    seen = seen_objects(memo.cache, resource.location)
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


@kopf.on.event(GROUP, VERSION, PLURAL)
async def session_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    resource = memo.cache.session_event(type, body)
    memo.rollouts.wake(resource.namespace)
    if type == "DELETED":
        memo.hibernation.forget(resource.uid)
    else:
        await memo.hibernation.seen(resource)


async def write_status(memo: kopf.Memo, resource: Resource, fields: dict[str, Any]) -> Resource:
    """Hibernation's decisions, written before they are acted on; the followers' picture of
    the status is told."""
    written = await memo.api.patch_status(resource.namespace, resource.name, fields)
    updated = Resource.of(written)
    memo.followers.wrote(updated, fields)
    return updated


async def reapply(memo: kopf.Memo, resource: Resource) -> None:
    """The location's objects as `resource` now wants them (asleep: zero replicas)."""
    await memo.cache.ready(resource.namespace)
    await redo(memo, resource, seen_objects(memo.cache, resource.location), False)


@kopf.on.event(GROUP, VERSION, ROLLOUT_PLURAL)
async def rollout_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The rollout record, written by this operator or annotated by a person (an action)."""
    memo.rollouts.observe(type, body)


@kopf.on.event("apps", "v1", "statefulsets")
@kopf.on.event("v1", "services")
@kopf.on.event("v1", "secrets")
async def owned_object_changed(
    type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """Drift: a location's object deleted, or edited by hand, is put back at once."""
    seen = memo.cache.object_event(type, body)
    if seen.kind == "StatefulSet":
        memo.rollouts.wake(body.metadata.namespace)  # its pod rolled, or the rollout applied it
    label = (body.metadata.labels or {}).get(LOCATION_LABEL)
    if label is None or (body.metadata.labels or {}).get("app.kubernetes.io/name") != APP:
        return
    resources = [r for r in memo.cache.location(label) if not r.deleting]
    owner = [r for r in resources if r.uid == seen.owner_uid]
    if not resources:
        return
    objects = seen_objects(memo.cache, resources[0].location)
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
    memo: kopf.Memo, resource: Resource, seen: dict[str, Seen | None], force: bool = False
) -> None:
    """A reconcile outside kopf's resource handlers: it writes the status itself (what
    differs from the watch's picture of it)."""
    status = await run_reconcile(memo, resource, seen, force)
    changed = {k: v for k, v in status.items() if resource.status.get(k) != v}
    if not changed:
        return
    await memo.api.patch_status(resource.namespace, resource.name, changed)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    resource = Resource.of(body)
    await memo.cache.ready(resource.namespace)
    try:  # read, not cached: what is removed must depend on who owns the location now
        statefulset = await read_statefulset(memo.api, resource)
    except (ApiException, Unreachable) as exc:
        raise handler_error(exc, f"reading the StatefulSet of {resource.name}") from exc
    others = [r for r in memo.cache.location(resource.label) if r.uid != resource.uid]
    address = memo.followers.address(resource.label)
    memo.followers.release(resource)
    memo.notices.forget(resource)
    await apply_deletion_policy(
        resource,
        statefulset.owner_uid if statefulset else None,
        len(others),
        address,
        memo.credentials.for_location(resource.location),
        logger,
    )


async def read_statefulset(api: Api, resource: Resource) -> Seen | None:
    name = session_name(resource.location)
    try:
        obj = await api.call(
            "read StatefulSet",
            api.kube.apps.read_namespaced_stateful_set,
            name,
            resource.namespace,
            _preload_content=False,
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return Seen.of({**json.loads(obj.data), "kind": "StatefulSet"})
