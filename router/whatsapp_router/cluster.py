"""The router's backend in a cluster: watches feed the directory, /login creates a
WhatsAppSession. Local mode (local.py) never imports this module, nor the Kubernetes client."""

from __future__ import annotations

import asyncio

from whatsapp_common.kube_clients import Kube

from .config import RouterSettings
from .directory import Directory
from .metrics import RouterMetrics
from .provisioning import create_session
from .sharding import ShardLabeller
from .watch import Watcher, sources


class KubeBackend:
    """The cluster: watches feed the directory, /login creates a WhatsAppSession, and with
    several operator shards every resource gets its shard label."""

    def __init__(self, kube: Kube, settings: RouterSettings) -> None:
        self._kube = kube
        self._namespace = settings.namespace
        self._session_port = settings.session_port
        self._shards = settings.operator_shards
        self._watcher: Watcher | None = None
        self._labeller: ShardLabeller | None = None

    async def start(self, directory: Directory, metrics: RouterMetrics) -> None:
        self._labeller = ShardLabeller(
            self._kube, self._namespace, self._shards, metrics.shard_labels
        )
        watched = sources(self._kube, self._namespace, self._session_port, self._labeller.observe)
        self._watcher = Watcher(directory, watched)
        self._watcher.start(asyncio.get_running_loop())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        if self._labeller is not None:
            self._labeller.stop()

    async def create_session(self, location: str) -> None:
        await create_session(self._kube, self._namespace, location, self._shards)
