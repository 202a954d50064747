"""Create, update, resume, drift: the location's StatefulSet and headless Service match the
spec of the one resource that owns the location; any other resource for it is a Conflict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from whatsapp_common.logs import get_logger
from whatsapp_common.naming import session_name
from whatsapp_common.states import Phase

from .config import OperatorConfig, with_defaults
from .fleet import Fleet
from .hibernation import asleep
from .kube import Api
from .manifests import keys_secret, replicas, service, statefulset
from .metrics import CONFLICTS
from .notices import Notices
from .ownership import claim
from .resource import Resource, Seen

log = get_logger(__name__)


@dataclass(frozen=True)
class Outcome:
    status: dict[str, Any]  # the status fields to set
    owned: bool
    seen: list[Seen]  # what is now known of the objects


async def reconcile(
    api: Api,
    config: OperatorConfig,
    notices: Notices,
    resource: Resource,
    seen: dict[str, Seen | None],
    fleet: Fleet | None,
    force: bool = False,
) -> Outcome:
    """Claims the StatefulSet first (the location's claim), then the Service and the
    location's keys Secret (its pod waits for that Secret before starting). `seen` maps
    each kind to the watch's picture of its object. A spec change changes the pod template,
    so the pod rolls. `fleet`: the settings of the fleet revision the location is on
    (rollout.py); None leaves its StatefulSet, which it owns, as it is."""
    defaults = fleet.session_defaults if fleet is not None else config.session_defaults
    effective = with_defaults(defaults, resource.spec)
    namespace = resource.namespace
    sleeping = asleep(resource) and not resource.paused
    known: list[Seen] = []
    wrote = False
    manifests = (
        *(
            [statefulset(effective, namespace, fleet, config.shard, replicas(resource))]
            if fleet is not None
            else []
        ),
        service(effective, namespace, config),
        keys_secret(effective, namespace, config),
    )
    for manifest in manifests:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        owner, now, written = await claim(api, resource, manifest, seen.get(kind), force)
        known.append(now)
        wrote = wrote or written
        if owner is not None:
            message = (
                f"location {resource.location} belongs to {owner}: {kind} {name} is not "
                f"this resource's; nothing was changed"
            )
            notices.warn(resource, Phase.CONFLICT, message)
            log.warning("conflict", resource=resource.name, location=resource.location, owner=owner)
            CONFLICTS.inc()
            return Outcome({"phase": Phase.CONFLICT, "message": message, "pod": ""}, False, known)
    name = session_name(resource.location)
    if wrote:  # a resume that finds everything in place says nothing
        notices.info(
            resource,
            Phase.PAUSED if resource.paused else "Reconciled",
            f"StatefulSet {name} at {replicas(resource)} replicas",
        )
    status: dict[str, Any] = {"observedGeneration": resource.generation, "pod": f"{name}-0"}
    if resource.paused:
        status.update(phase=Phase.PAUSED, message="paused: no session pod runs")
    elif sleeping:
        status.update(phase=Phase.HIBERNATING)
    elif resource.status.get("phase") == Phase.CONFLICT:
        status.update(phase=Phase.PENDING, message="")
    return Outcome(status, True, known)
