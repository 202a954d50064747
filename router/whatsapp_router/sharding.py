"""The router's part in sharding (whatsapp_common.sharding): every WhatsAppSession it sees
without a valid shard label (made by kubectl apply, or labelled for a shard that no longer
runs) gets one, so that exactly one operator shard handles it. Several router replicas may
label the same resource: they write the same value."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter
from urllib3.exceptions import HTTPError

from whatsapp_common.backoff import backoff_delay
from whatsapp_common.crd import GROUP, PLURAL, VERSION
from whatsapp_common.kube_clients import Kube
from whatsapp_common.logs import get_logger
from whatsapp_common.sharding import SHARD_LABEL, needs_label, shard_of

log = get_logger(__name__)
ATTEMPTS = 5


class ShardLabeller:
    """Called from the sessions watch thread with each object it lists or sees change; the
    label is written on its own thread, so a slow API server never holds the watch."""

    def __init__(self, kube: Kube, namespace: str, shards: int, outcomes: Counter) -> None:
        self._kube, self._namespace, self._shards = kube, namespace, shards
        self._outcomes = outcomes
        self._executor = ThreadPoolExecutor(1, "shard-labeller")
        self._pending: set[str] = set()  # uids being labelled
        self._lock = threading.Lock()

    def observe(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") or not needs_label(meta.get("labels"), self._shards):
            return
        with self._lock:
            if meta["uid"] in self._pending:
                return
            self._pending.add(meta["uid"])
        location = str((obj.get("spec") or {}).get("locationId", ""))
        self._executor.submit(self._label, meta["name"], meta["uid"], location)

    def stop(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _label(self, name: str, uid: str, location: str) -> None:
        shard = shard_of(location, self._shards)
        # The uid makes it a precondition: a resource deleted and made again is not relabelled
        # by this stale event (its own event labels it).
        patch = {"metadata": {"uid": uid, "labels": {SHARD_LABEL: shard}}}
        try:
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    self._kube.custom.patch_namespaced_custom_object(
                        GROUP, VERSION, self._namespace, PLURAL, name, patch, _request_timeout=10
                    )
                except ApiException as exc:
                    if exc.status in (404, 409):  # gone, or replaced by another object
                        self._outcomes.labels("gone").inc()
                        return
                    error: Exception = exc
                except (HTTPError, OSError) as exc:
                    error = exc
                else:
                    self._outcomes.labels("labelled").inc()
                    log.info("shard label set", location=location, resource=name, shard=shard)
                    return
                if attempt < ATTEMPTS:
                    time.sleep(backoff_delay(attempt, 0.5, 5.0))
            self._outcomes.labels("failed").inc()
            log.error(
                "could not set the shard label; no operator shard handles this resource until"
                " it changes or the router restarts",
                location=location,
                resource=name,
                shard=shard,
                error=str(error),
            )
        finally:
            with self._lock:
                self._pending.discard(uid)
