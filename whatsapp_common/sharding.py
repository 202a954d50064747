"""Which operator shard handles a location, as Flux shards its controllers: a label on the
WhatsAppSession and on every object of its location, its value a stable hash of the
location id. Each shard's operator watches only objects carrying its own value (a
server-side label selector), so a shard's watches, cache and memory hold its locations only.

The router sets the label on the resources it creates and on any resource it sees without a
valid one (made by kubectl apply, or left by a shard count that shrank). A label, once valid,
is kept when the shard count grows: a location never moves between live shards by itself."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from .crd import GROUP

SHARD_LABEL = f"sharding.{GROUP}/key"


def shard_name(index: int) -> str:
    return f"shard-{index}"


def shard_names(shards: int) -> tuple[str, ...]:
    return tuple(shard_name(i) for i in range(shards))


def shard_of(location_id: str, shards: int) -> str:
    """The shard a location belongs to when nothing has labelled it yet."""
    digest = hashlib.sha256(location_id.encode()).digest()
    return shard_name(int.from_bytes(digest[:8], "big") % shards)


def needs_label(labels: Mapping[str, str] | None, shards: int) -> bool:
    """Whether a WhatsAppSession must be (re)labelled: sharded, and its label names no shard
    that runs."""
    return shards > 1 and (labels or {}).get(SHARD_LABEL) not in shard_names(shards)
