"""What this operator watches and lists: the session pods, StatefulSets, Services and keys
Secrets of the project only (a server-side label selector, so no other workload of the
namespace reaches it), and, when it is a shard, only its own shard's locations
(whatsapp_common.sharding)."""

from __future__ import annotations

import kopf

from whatsapp_common.crd import APP, APP_LABEL, GROUP, PLURAL
from whatsapp_common.sharding import SHARD_LABEL


def objects_selector(shard: str | None) -> str:
    """Of the location's StatefulSet, Service, keys Secret and pod."""
    selector = f"{APP_LABEL}={APP}"
    return f"{selector},{SHARD_LABEL}={shard}" if shard else selector


def sessions_selector(shard: str | None) -> str | None:
    """Of the WhatsAppSessions: None (all of them) when not sharded."""
    return f"{SHARD_LABEL}={shard}" if shard else None


def shard_labels(shard: str | None) -> dict[str, str]:
    """What every object this operator writes carries, so that its shard's watches see it."""
    return {SHARD_LABEL: shard} if shard else {}


def restrict_watches(settings: kopf.OperatorSettings, shard: str | None) -> None:
    objects = objects_selector(shard)
    for resource in (
        ("v1", "pods"),
        ("apps", "v1", "statefulsets"),
        ("v1", "services"),
        ("v1", "secrets"),
    ):
        settings.watching.label_selectors[resource] = objects
    if (sessions := sessions_selector(shard)) is not None:
        settings.watching.label_selectors[GROUP, PLURAL] = sessions


def user_agent(shard: str | None) -> str:
    """How this operator's own API calls name it (the audit log tells shards apart)."""
    return f"whatsapp-operator/{shard or 'unsharded'}"
