"""Creating a location's WhatsAppSession: the only API call the router makes for a request
(POST /login of an unknown location); the operator does the rest."""

from __future__ import annotations

import asyncio
import json

from kubernetes.client.exceptions import ApiException

from whatsapp_common.answers import ApiError
from whatsapp_common.crd import GROUP, PLURAL, VERSION
from whatsapp_common.kube_clients import Kube
from whatsapp_common.naming import session_name
from whatsapp_common.sharding import SHARD_LABEL, shard_of


def _create(kube: Kube, namespace: str, location: str, shards: int) -> None:
    labels = {"app.kubernetes.io/created-by": "whatsapp-router"}
    if shards > 1:  # handled by its shard from the start
        labels[SHARD_LABEL] = shard_of(location, shards)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "WhatsAppSession",
        "metadata": {"name": session_name(location), "labels": labels},
        "spec": {"locationId": location},
    }
    try:
        kube.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, _request_timeout=10
        )
    except ApiException as exc:
        if exc.status == 409:  # another replica (or a retried request) created it first
            return
        if exc.status == 422:  # the CRD's schema refused the location id
            raise ApiError(
                400, f"The location identifier {location!r} is not valid: {_reason(exc)}"
            ) from None
        raise


def _reason(exc: ApiException) -> str:
    try:
        return json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(exc.reason)


async def create_session(kube: Kube, namespace: str, location: str, shards: int) -> None:
    """Raises ApiError 400 for a location id Kubernetes refuses; ApiException otherwise."""
    await asyncio.to_thread(_create, kube, namespace, location, shards)
