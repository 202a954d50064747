"""Create, update, resume: the location's StatefulSet and headless Service match its spec."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from .config import OperatorConfig, with_defaults
from .kube import Kube
from .manifests import service, statefulset
from .naming import session_name


async def reconcile(
    kube: Kube,
    config: OperatorConfig,
    spec: dict[str, Any],
    namespace: str,
    body: Any,
    generation: int,
) -> dict[str, Any]:
    """Applies both objects (owned by the resource, so deleting it deletes them); returns the
    status fields to set. A spec change changes the pod template, so the pod rolls."""
    effective = with_defaults(config.session_defaults, spec)
    objects = [statefulset(effective, namespace, config), service(effective, namespace, config)]
    kopf.adopt(objects, owner=body)
    for manifest in objects:
        await asyncio.to_thread(kube.apply, manifest)
    paused = bool(spec.get("paused"))
    kopf.info(
        body,
        reason="Paused" if paused else "Reconciled",
        message=f"StatefulSet {objects[0]['metadata']['name']} at {0 if paused else 1} replicas",
    )
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "pod": f"{session_name(spec['locationId'])}-0",
    }
    if paused:
        status.update(phase="Paused", message="paused: no session pod runs")
    return status
